"""Benchmarks: poolflow against serial Python, raw multiprocessing.Pool and Prefect's runners."""
