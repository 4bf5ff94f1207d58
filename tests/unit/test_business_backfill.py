"""The bookings of an item's hour up to its time, from the (hour, step) counts of one aggregation."""

from __future__ import annotations

import datetime as dt
import math

from hub.sources.business.backfill import observed_at, utc_ms

H = 3_600_000
T0 = 500 * H - 90_000   # 90 s before an hour starts
STEP = 60_000


def cells(created_ms: list[int]) -> list[dict[str, object]]:
    """What observed_pipeline's $group returns for bookings created at `created_ms`."""
    counts: dict[tuple[int, int], int] = {}
    for c in created_ms:
        key = (c // H * H, math.ceil((c - T0) / STEP))
        counts[key] = counts.get(key, 0) + 1
    return [{"_id": {"h": utc_ms(h), "k": float(k)}, "n": n} for (h, k), n in counts.items()]


def test_each_time_counts_its_own_hour_up_to_and_including_itself() -> None:
    times = [T0 + j * STEP for j in range(4)]   # 90 s and 30 s before the hour, 30 s and 90 s into it
    created = [T0 - 1000, T0, T0 + 1, 500 * H - 1, 500 * H, T0 + 2 * STEP, T0 + 2 * STEP + 1]
    assert observed_at(cells(created), times, T0, STEP) == [
        sum(c <= t and c >= t // H * H for c in created) for t in times] == [2, 3, 2, 3]


def test_rows_that_are_not_counts_are_left_out() -> None:
    rows = [{"_id": {"h": "x", "k": 0}, "n": 5}, {"_id": None, "n": 1},
            {"_id": {"h": dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "k": 0}, "n": "1"}]
    assert observed_at(rows, [T0], T0, STEP) == [0]
