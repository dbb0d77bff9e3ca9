"""Prefect flows: build work-lists, wire the plain tasks to a task runner."""
