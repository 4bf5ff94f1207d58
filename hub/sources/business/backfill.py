"""The business series at past times, for the start-up backfill (`hub.backfill`).

For each backfilled time `t` (a grid `t0 + j x step`), `data.business` is
`{"appointments": {"total"}, "expected": {"hour", "observed", "elapsed", "weeks"}}`, what the bookings
chart plots live (`appts`; `hour_observed`, and `hour_expected` = hour x elapsed):

- `appointments.total`: the bookings created in `t`'s window (`sources.business.time_range`), from one
  read-only aggregation: a count before the grid, and counts per grid step of the grid and of the grid
  moved back by the window (at most 2 x steps + 1 rows), so total(t_j) = total(t_0) + what came in
  since minus what left the window since. Windows start exclusive (live ones inclusive: a booking made
  exactly at a window's first millisecond differs);

- `hour` and `weeks`: the expectation of `t`'s hour from the kept hour buckets (the median of the same
  weekday and hour over the last 4 weeks, `expected_rate`, exactly as a live tick computes it); the
  backfill waits for those buckets (filled in the background from the first tick) within its deadline;
- `observed`: the bookings created in `t`'s hour up to `t` (`[hour start, t]`, as a tick's count), from
  one read-only aggregation over `[first hour start, last t]` grouped by (hour, grid step): counts only,
  at most (steps + hours) rows, never a document;
- `elapsed`: the fraction of `t`'s hour passed at `t`.

`expected` only with the anomaly detectors on (live snapshots have it only then). The counts are those
the collection holds now (a booking inserted since with an older created-at counts).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pymongo

from hub.config import BusinessFields
from hub.sources.business.buckets import hour_key, hour_of, hour_start
from hub.sources.business.expected import WEEK_HOURS, WEEKS, Expected, expected_rate
from hub.sources.business.expected import elapsed as hour_elapsed
from hub.sources.business.pipeline import field_ref
from hub.sources.business.recent import first_booking_hour
from hub.vocab import WINDOWS

UTC = dt.UTC
#: how often the buckets the expectation needs are looked for while the background fill runs
WAIT_STEP = 0.2


def utc_ms(ms: int) -> dt.datetime:
    """Epoch milliseconds as an aware UTC datetime (BSON's precision)."""
    return dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=ms)


def observed_pipeline(fields: BusinessFields, *, first_ms: int, last_ms: int, t0_ms: int,
                      step_ms: int) -> list[dict[str, Any]]:
    """Bookings created in [hour start of `first_ms`, `last_ms`], counted per (hour, k): k = the first grid
    time `t0 + k x step` at or after the created-at (so a time t_j counts the cells with k <= j)."""
    created = field_ref(fields.created_at)
    since = {"$subtract": [created, utc_ms(t0_ms)]}
    return [
        {"$match": {fields.created_at: {"$gte": hour_start(hour_of(utc_ms(first_ms))), "$lte": utc_ms(last_ms)}}},
        {"$group": {"_id": {"h": hour_key(fields), "k": {"$ceil": {"$divide": [since, step_ms]}}},
                    "n": {"$sum": 1}}},
    ]


def observed_at(rows: Sequence[dict[str, Any]], times_ms: Sequence[int], t0_ms: int, step_ms: int) -> list[int]:
    """Per time: the bookings of its hour created at or before it, from `observed_pipeline`'s rows."""
    cells: dict[int, list[tuple[int, int]]] = {}
    for row in rows:
        key = row.get("_id") or {}
        h, k, n = key.get("h"), key.get("k"), row.get("n")
        if isinstance(h, dt.datetime) and isinstance(k, (int, float)) and isinstance(n, int):
            cells.setdefault(hour_of(h), []).append((int(k), n))
    out = []
    for t in times_ms:
        j = round((t - t0_ms) / step_ms)
        out.append(sum(n for k, n in cells.get(hour_of(utc_ms(t)), ()) if k <= j))
    return out


def window_pipeline(fields: BusinessFields, *, t0_ms: int, last_ms: int, step_ms: int,
                    window_ms: int) -> list[dict[str, Any]]:
    """Counts for `window_totals`: bookings in (t0 - window, t0] ("before"), and per grid step k >= 1
    those in (t_{k-1}, t_k] ("in") and in (t_{k-1} - window, t_k - window] ("out")."""
    created = field_ref(fields.created_at)

    def per_step(origin_ms: int, lo_ms: int, hi_ms: int) -> list[dict[str, Any]]:
        return [{"$match": {fields.created_at: {"$gt": utc_ms(lo_ms), "$lte": utc_ms(hi_ms)}}},
                {"$group": {"_id": {"$ceil": {"$divide": [{"$subtract": [created, utc_ms(origin_ms)]}, step_ms]}},
                            "n": {"$sum": 1}}}]

    return [
        {"$match": {fields.created_at: {"$gt": utc_ms(t0_ms - window_ms), "$lte": utc_ms(last_ms)}}},
        {"$facet": {
            "before": [{"$match": {fields.created_at: {"$lte": utc_ms(t0_ms)}}}, {"$count": "n"}],
            "in": per_step(t0_ms, t0_ms, last_ms),
            "out": per_step(t0_ms - window_ms, t0_ms - window_ms, last_ms - window_ms),
        }},
    ]


def window_totals(rows: Sequence[dict[str, Any]], steps: int) -> list[int]:
    """The window's total at each of `steps` grid times, from `window_pipeline`'s one row."""
    facets = rows[0] if rows else {}

    def per_step(name: str) -> dict[int, int]:
        out: dict[int, int] = {}
        for row in facets.get(name) or ():
            k, n = row.get("_id"), row.get("n")
            if isinstance(k, (int, float)) and isinstance(n, int):
                out[int(k)] = out.get(int(k), 0) + n
        return out

    before = facets.get("before") or [{}]
    total = before[0].get("n", 0) if isinstance(before[0], dict) else 0
    came, left = per_step("in"), per_step("out")
    totals = [total]
    for k in range(1, steps):
        total += came.get(k, 0) - left.get(k, 0)
        totals.append(total)
    return totals


async def _no_wait() -> None:
    return None


async def hourly_series(source: Any, times: Sequence[float], *, timeout: float,
                        between: Callable[[], Awaitable[None]] = _no_wait) -> dict[float, dict[str, Any]]:
    """`data.business` for each time of the grid `times` (epoch seconds, ascending, evenly spaced), from
    `source` (a BusinessSource) within `timeout` seconds, each query after `between()` (the backfill
    waits there for the hub's next tick: the live ticks' queries go first). Raises TimeoutError or
    PyMongoError."""
    if not times:
        return {}
    times_ms = [round(t * 1000) for t in times]
    t0, step = times_ms[0], (times_ms[1] - times_ms[0] if len(times_ms) > 1 else 1000)
    fields: BusinessFields = source.cfg.fields
    window_ms = round(WINDOWS[source.cfg.time_range].total_seconds() * 1000)
    out: dict[float, dict[str, Any]] = {}
    async with asyncio.timeout(timeout):
        with pymongo.timeout(timeout):  # one deadline for every query; the server stops working on them too
            await between()
            rows = await source._aggregate(window_pipeline(fields, t0_ms=t0, last_ms=times_ms[-1], step_ms=step,
                                                           window_ms=window_ms))
            for t, n in zip(times, window_totals(rows, len(times)), strict=True):
                out[t] = {"appointments": {"total": n}}
            if not source.anomaly:
                return out
            hours = sorted({hour_of(utc_ms(t)) for t in times_ms})
            wanted = {h - k * WEEK_HOURS for h in hours for k in range(1, WEEKS + 1)}
            await between()
            history_from = await first_booking_hour(source._aggregate, fields)
            await between()
            rows = await source._aggregate(observed_pipeline(fields, first_ms=t0, last_ms=times_ms[-1],
                                                             t0_ms=t0, step_ms=step))
            if history_from is not None:
                wanted = {h for h in wanted if h >= history_from}
            while wanted and source.store.needed(min(wanted), max(wanted) + 1) & wanted:
                await asyncio.sleep(WAIT_STEP)  # the source's background fill of the kept hours
    counts = {h: b.total for h, b in source.store.buckets.items()}
    rate = expected_rate(counts, history_from=history_from)
    for t, ms, observed in zip(times, times_ms, observed_at(rows, times_ms, t0, step), strict=True):
        hour, weeks = rate(hour_of(utc_ms(ms)))
        out[t]["expected"] = Expected(hour, observed, hour_elapsed(utc_ms(ms)), weeks).to_dict()
    return out
