"""The `rejected` audit limiter on a fake clock: one line per (address, reason) and minute, repeats summed once.

tests/integration/test_audit.py proves the lines in the audit file of a running app; what needs a
minute of wall time to see is proven here, on a clock the test moves.
"""

from __future__ import annotations

from hub.audit import WINDOW, Repeats


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_of_a_window_passes_the_rest_are_summed_when_it_ends() -> None:
    clock = Clock()
    r = Repeats(clock=clock)
    a, b = ("10.0.0.1", "capacity"), ("10.0.0.1", "origin")
    assert [r.hit(a) for _ in range(4)] == [("first", 0)] + [("repeat", 0)] * 3
    assert r.hit(b) == ("first", 0)  # another reason from the same address is another key
    assert r.sweep() == []  # windows still open
    clock.now += WINDOW
    assert r.sweep() == [(a, 3)]  # b had no repeats: its only event was written already
    assert r.sweep() == []
    assert r.hit(a) == ("first", 0)  # a new window is written again


def test_an_ended_window_not_yet_swept_is_reported_before_the_next_first() -> None:
    clock = Clock()
    r = Repeats(clock=clock)
    key = ("10.0.0.1", "per_ip")
    r.hit(key), r.hit(key), r.hit(key)
    clock.now += WINDOW + 5
    assert r.hit(key) == ("first", 2)  # the 2 repeats are not lost to the new window
    assert r.sweep() == []


def test_the_tracked_keys_are_bounded_and_close_reports_open_windows() -> None:
    clock = Clock()
    r = Repeats(clock=clock, max_tracked=2)
    assert r.hit(("a", "x"))[0] == "first" and r.hit(("b", "x"))[0] == "first"
    assert r.hit(("c", "x")) == ("full", 0)  # dropped (and counted by the caller), not tracked
    assert r.hit(("a", "x")) == ("repeat", 0)  # known keys still count
    clock.now += WINDOW
    r.sweep()
    assert r.hit(("c", "x")) == ("first", 0)  # room again once windows ended
    r.hit(("c", "x"))
    assert r.sweep(everything=True) == [(("c", "x"), 1)]  # on close: open windows too
