"""Recent bookings for the detectors: this hour's and the last 60 minutes' counts (one range aggregation),
and the times of the first and last bookings (one indexed look-up each: a sort on the created-at field,
limit 1, only that field projected). Never a scan of a whole window; only counts and times come back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from hub.config import BusinessFields
from hub.sources.business.buckets import hour_of, hour_start
from hub.sources.business.changes import _get_path
from hub.sources.business.tracker import ChangeTracker

Aggregate = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]


def recent_pipeline(fields: BusinessFields, now: dt.datetime) -> list[dict[str, Any]]:
    """The bookings created in the last 60 minutes up to `now` and those of them in the current hour."""
    created = "$" + fields.created_at
    return [
        {"$match": {fields.created_at: {"$gte": now - dt.timedelta(hours=1), "$lte": now}}},
        {"$group": {"_id": None, "n": {"$sum": 1},
                    "h": {"$sum": {"$cond": [{"$gte": [created, hour_start(hour_of(now))]}, 1, 0]}},
                    "last": {"$max": created}}},
    ]


async def recent_counts(aggregate: Aggregate, fields: BusinessFields,
                        now: dt.datetime) -> tuple[int, int, dt.datetime | None]:
    """(bookings in the last 60 minutes, bookings so far this hour, the latest of them or None) at `now`."""
    rows = await aggregate(recent_pipeline(fields, now))
    if not rows:
        return 0, 0, None
    last = rows[0].get("last")
    if isinstance(last, dt.datetime) and last.tzinfo is None:
        last = last.replace(tzinfo=dt.UTC)
    return (int(rows[0].get("n") or 0), int(rows[0].get("h") or 0),
            last if isinstance(last, dt.datetime) else None)


def one_created_pipeline(fields: BusinessFields, match: dict[str, Any], order: int) -> list[dict[str, Any]]:
    """The created-at of the first document in `order` (1 oldest, -1 newest) matching `match` on it."""
    f = fields.created_at
    return [{"$match": {f: match}}, {"$sort": {f: order}}, {"$limit": 1}, {"$project": {"_id": 0, f: 1}}]


async def _one_created(aggregate: Aggregate, fields: BusinessFields, match: dict[str, Any],
                       order: int) -> dt.datetime | None:
    rows = await aggregate(one_created_pipeline(fields, match, order))
    value = _get_path(rows[0], fields.created_at) if rows else None
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


async def first_booking_hour(aggregate: Aggregate, fields: BusinessFields) -> int | None:
    """The hour of the first booking on record (history before it is no history), None with none."""
    first = await _one_created(aggregate, fields, {"$type": "date"}, 1)
    return None if first is None else hour_of(first)


async def last_booking(aggregate: Aggregate, fields: BusinessFields, tracker: ChangeTracker,
                       now: dt.datetime) -> dt.datetime | None:
    """The time of the last booking at `now`: from the change stream's inserts once one look-up after
    the stream opened seeded it; without a stream (reconcile mode), that look-up every time."""
    if tracker.mode == "change_stream" and tracker.latest_known and \
            (tracker.latest is None or tracker.latest <= now):
        return tracker.latest
    found = await _one_created(aggregate, fields, {"$lte": now}, -1)
    if tracker.mode == "change_stream":
        # Inserts the stream already carried count as much as the look-up: keep the later one.
        if tracker.latest is not None and tracker.latest <= now and (found is None or tracker.latest > found):
            found = tracker.latest
        tracker.latest, tracker.latest_known = found, True
    return found
