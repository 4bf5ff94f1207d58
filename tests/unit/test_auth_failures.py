"""AuthFailures on a fake clock: the lockout ends with its one-minute window, repeats are summed once.

The system test (tests/system/test_hostile_serve.py) proves the 429 and the single audit line against a
real `hub serve`; what needs a minute of wall time to see is proven here, on a clock the test moves.
"""

from __future__ import annotations

from hub.auth import WINDOW, AuthFailures


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lockout_after_per_minute_failures_ends_with_the_window() -> None:
    clock = Clock()
    f = AuthFailures(3, clock=clock)
    assert [f.record("a") for _ in range(3)] == [1, 2, 3]  # only the first is audited on its own
    assert f.blocked("a") and not f.blocked("b")
    assert f.retry_after("a") == WINDOW + 1
    clock.now += WINDOW - 1
    assert f.blocked("a") and 1 <= f.retry_after("a") <= 2
    clock.now += 1
    assert not f.blocked("a")
    assert f.record("a") == 1  # a new window: its first failure is audited again


def test_sweep_reports_repeats_and_refusals_once_and_forgets_ended_windows() -> None:
    clock = Clock()
    f = AuthFailures(2, clock=clock)
    f.record("once")
    for _ in range(2):
        f.record("brute")
    assert f.blocked("brute") and f.blocked("brute")
    assert f.sweep() == []  # windows still open
    clock.now += WINDOW
    assert f.sweep() == [("brute", 2, 2)]  # a single failure is not repeated: it was audited already
    assert f.sweep() == []


def test_zero_per_minute_never_locks_out() -> None:
    f = AuthFailures(0, clock=Clock())
    for _ in range(1000):
        f.record("a")
    assert not f.blocked("a")
