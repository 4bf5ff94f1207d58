"""The business hourly series at past times, for the start-up backfill (`hub.backfill`).

For each backfilled time `t` (a grid `t0 + j x step`), `data.business` is
`{"expected": {"hour", "observed", "elapsed", "weeks"}}`, what the bookings chart plots live
(`hour_observed`, and `hour_expected` = hour x elapsed):

- `hour` and `weeks`: the expectation of `t`'s hour from the kept hour buckets (the median of the same
  weekday and hour over the last 4 weeks, `expected_rate`, exactly as a live tick computes it); the
  backfill waits for those buckets (filled in the background from the first tick) within its deadline;
- `observed`: the bookings created in `t`'s hour up to `t` (`[hour start, t]`, as a tick's count), from
  one read-only aggregation over `[first hour start, last t]` grouped by (hour, grid step): counts only,
  at most (steps + hours) rows, never a document;
- `elapsed`: the fraction of `t`'s hour passed at `t`.

Only with the anomaly detectors on (live snapshots have `expected` only then). The counts are those the
collection holds now (a booking inserted since with an older created-at counts).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

import pymongo

from hub.config import BusinessFields
from hub.sources.business.buckets import hour_key, hour_of, hour_start
from hub.sources.business.expected import WEEK_HOURS, WEEKS, Expected, expected_rate
from hub.sources.business.expected import elapsed as hour_elapsed
from hub.sources.business.pipeline import field_ref
from hub.sources.business.recent import first_booking_hour

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


async def hourly_series(source: Any, times: Sequence[float], *, timeout: float) -> dict[float, dict[str, Any]]:
    """`data.business` for each time of the grid `times` (epoch seconds, ascending, evenly spaced), from
    `source` (a BusinessSource) within `timeout` seconds: {} when its detectors are off. Raises
    TimeoutError or PyMongoError."""
    if not source.anomaly or not times:
        return {}
    times_ms = [round(t * 1000) for t in times]
    t0, step = times_ms[0], (times_ms[1] - times_ms[0] if len(times_ms) > 1 else 1000)
    hours = sorted({hour_of(utc_ms(t)) for t in times_ms})
    wanted = {h - k * WEEK_HOURS for h in hours for k in range(1, WEEKS + 1)}
    fields: BusinessFields = source.cfg.fields
    async with asyncio.timeout(timeout):
        with pymongo.timeout(timeout):  # the server stops working on them too
            history_from = await first_booking_hour(source._aggregate, fields)
            rows = await source._aggregate(observed_pipeline(fields, first_ms=t0, last_ms=times_ms[-1],
                                                             t0_ms=t0, step_ms=step))
        if history_from is not None:
            wanted = {h for h in wanted if h >= history_from}
        while wanted and source.store.needed(min(wanted), max(wanted) + 1) & wanted:
            await asyncio.sleep(WAIT_STEP)  # the source's background fill of the kept hours
    counts = {h: b.total for h, b in source.store.buckets.items()}
    rate = expected_rate(counts, history_from=history_from)
    out: dict[float, dict[str, Any]] = {}
    for t, ms, observed in zip(times, times_ms, observed_at(rows, times_ms, t0, step), strict=True):
        hour, weeks = rate(hour_of(utc_ms(ms)))
        out[t] = {"expected": Expected(hour, observed, hour_elapsed(utc_ms(ms)), weeks).to_dict()}
    return out
