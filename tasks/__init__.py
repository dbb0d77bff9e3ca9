"""Plain, testable units of work: parsing, xlsx I/O, statistics and report assembly.

Nothing here imports Prefect, so worker processes that run these functions start fast.
"""
