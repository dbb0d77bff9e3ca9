"""The old script's first example: items that sleep for a random while, to show parallelism."""

from __future__ import annotations

import os
import random
import time


def count(name: str, max_seconds: float = 1.0) -> tuple[str, int, float]:
    """Sleep a random time up to ``max_seconds``; return (name, worker pid, seconds slept)."""
    print(f"Start {name} :")
    seconds = random.uniform(0, max_seconds)
    time.sleep(seconds)
    print(f"End {name} :")
    return name, os.getpid(), round(seconds, 3)
