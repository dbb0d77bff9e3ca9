"""A millisecond of pure-Python work, in a module that imports nothing (what a raw ``Pool`` runs)."""


def spin(x: int) -> int:
    """About a millisecond of CPU work on this machine."""
    total = 0
    for i in range(20_000):
        total += i
    return total + x
