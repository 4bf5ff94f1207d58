"""The bookings of an item's hour up to its time, from the (hour, step) counts of one aggregation."""

from __future__ import annotations

import datetime as dt
import math

from hub.sources.business.backfill import observed_at, utc_ms, window_totals

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


def window_rows(created_ms: list[int], times: list[int], window: int) -> list[dict[str, object]]:
    """What window_pipeline's $facet returns for bookings created at `created_ms`."""
    t0, last = times[0], times[-1]

    def per_step(origin: int, lo: int, hi: int) -> list[dict[str, object]]:
        counts: dict[int, int] = {}
        for c in created_ms:
            if lo < c <= hi:
                k = math.ceil((c - origin) / STEP)
                counts[k] = counts.get(k, 0) + 1
        return [{"_id": float(k), "n": n} for k, n in counts.items()]

    before = sum(t0 - window < c <= t0 for c in created_ms)
    return [{"before": [{"n": before}] if before else [],
             "in": per_step(t0, t0, last), "out": per_step(t0 - window, t0 - window, last - window)}]


def test_each_time_counts_its_window_as_bookings_come_in_and_leave_it() -> None:
    window = 5 * STEP
    times = [T0 + j * STEP for j in range(12)]
    # Before the grid, on step edges (in at t, out at t + window exactly), between steps, and after.
    created = [T0 - window, T0 - window + 1, T0 - 2 * STEP, T0, T0 + 1, T0 + STEP, T0 + 3 * STEP + 7,
               T0 + 3 * STEP + 8, T0 + 6 * STEP, T0 + 11 * STEP, T0 + 12 * STEP]
    expect = [sum(t - window < c <= t for c in created) for t in times]
    assert window_totals(window_rows(created, times, window), len(times)) == expect
    assert expect == [3, 4, 4, 3, 5, 4, 3, 3, 3, 1, 1, 1]


def test_no_answer_is_an_empty_window_throughout() -> None:
    assert window_totals([], 3) == [0, 0, 0]
    assert window_totals([{"before": [], "in": [{"_id": "x", "n": 2}], "out": None}], 2) == [0, 0]
