"""An answer made before it is asked for.

The warm interpreter makes, before it forks a copy for each command, what every command asks
first (Prefect's settings as read from its sources, those settings pointed at the kept
server): each copy then starts with the answer made. It is given once, to the first call
with the key it was made for; a later call, or one with another key (a command whose
settings differ), makes its own.
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class MadeAhead(Generic[K, V]):
    """Holds one answer, made for one key, until it is taken."""

    def __init__(self) -> None:
        self._kept: tuple[K, V] | None = None

    def keep(self, key: K, answer: V) -> None:
        self._kept = (key, answer)

    def take(self, key: K) -> V | None:
        """The answer kept for ``key``, once; None if none is kept, or it was made for another key."""
        kept, self._kept = self._kept, None
        return kept[1] if kept is not None and kept[0] == key else None
