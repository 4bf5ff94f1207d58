"""The demo's bookings outage: a history the detector expects to be busy now, and a stop of the bookings."""

from __future__ import annotations

import datetime as dt
import random
import time

from hub_demo.simulator import BOOKINGS_STOP_FOR, BUSY_PER_HOUR, _Backend, busy_history


def test_busy_history_fills_this_time_of_day_four_weeks_back_and_the_last_75_minutes() -> None:
    now = dt.datetime(2026, 3, 4, 10, 30, tzinfo=dt.UTC)
    docs = busy_history(random.Random(7), now=now)
    assert all(d["createdAt"] <= now for d in docs)
    for weeks in range(1, 5):
        same = now - dt.timedelta(weeks=weeks)
        n = sum(same - dt.timedelta(hours=1) <= d["createdAt"] <= same + dt.timedelta(hours=2) for d in docs)
        assert abs(n - 3 * BUSY_PER_HOUR) < 5 * (3 * BUSY_PER_HOUR) ** 0.5, (weeks, n)   # Poisson, 5 sigma
    recent = sum(now - dt.timedelta(minutes=75) <= d["createdAt"] for d in docs)
    assert abs(recent - 1.25 * BUSY_PER_HOUR) < 5 * (1.25 * BUSY_PER_HOUR) ** 0.5
    # Nothing else: the rest of the month keeps the ordinary history's quiet nights.
    spans = [(now - dt.timedelta(weeks=w, hours=1), now - dt.timedelta(weeks=w) + dt.timedelta(hours=2))
             for w in range(1, 5)] + [(now - dt.timedelta(minutes=75), now)]
    assert all(any(a <= d["createdAt"] <= b for a, b in spans) for d in docs)


def test_the_bookings_stop_comes_when_due_and_ends_after_its_span() -> None:
    backend = _Backend(random.Random(1))
    assert not backend.bookings_stopped   # the first stop is minutes away
    backend.next_bookings_stop = time.monotonic()
    backend.traffic(0.0, 0.25)
    assert backend.bookings_stopped
    assert backend.bookings_stopped_until - time.monotonic() <= BOOKINGS_STOP_FOR
    assert backend.next_bookings_stop >= backend.bookings_stopped_until + 900
    assert not backend.frontend_down and not backend.backend_down   # every health check stays green
