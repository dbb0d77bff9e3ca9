"""An answer made ahead is given once, and only to a call with the key it was made for."""

from __future__ import annotations

from poolflow.made_ahead import MadeAhead


def test_an_answer_made_ahead_is_given_once_and_only_for_its_key() -> None:
    ahead: MadeAhead[tuple[str, int], str] = MadeAhead()
    assert ahead.take(("a", 1)) is None
    ahead.keep(("a", 1), "first")
    ahead.keep(("a", 1), "second")  # the newer answer replaces the older
    assert ahead.take(("a", 1)) == "second"
    assert ahead.take(("a", 1)) is None
    ahead.keep(("a", 1), "third")
    assert ahead.take(("b", 1)) is None  # made for another key: dropped, not kept for later
    assert ahead.take(("a", 1)) is None
