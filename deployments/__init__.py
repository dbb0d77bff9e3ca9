"""Deployment definitions, schedules and serving for poolflow's flows."""
