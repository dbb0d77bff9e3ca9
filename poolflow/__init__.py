"""The ``poolflow`` command: composes flows, tasks, runners and deployments; nothing imports it."""
