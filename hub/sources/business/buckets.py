"""Hour buckets: per-hour aggregates of appointments (counts and sums only, never documents), the one
aggregation that fills them, and the window's answer merged from them."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hub.config import BusinessFields
from hub.sources.business.pipeline import (
    DEFAULT_MAX_SPECIALTIES,
    field_ref,
    json_id,
    number,
    seed_answer,
    specialty_expr,
)

UTC = dt.UTC
HOUR_MS = 3_600_000
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)

#: a span of created-at times to aggregate: [start, end), end None = open-ended (the open hour)
Span = tuple[dt.datetime, dt.datetime | None]


def hour_of(t: dt.datetime) -> int:
    """The hour (milliseconds since the epoch // 3600000) that `t` falls in; naive datetimes are UTC."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return ((t - EPOCH) // dt.timedelta(milliseconds=1)) // HOUR_MS


def hour_start(hour: int) -> dt.datetime:
    """The first instant of `hour`, timezone-aware UTC."""
    return EPOCH + dt.timedelta(milliseconds=hour * HOUR_MS)


# BSON's comparison order of types, for ties in bySpecialty ($sort {_id: 1} in the full pipeline)
_NUMBER, _STRING, _OTHER = 1, 2, 3


def specialty_key(value: Any) -> tuple[int, Any]:
    """A hashable, sortable key that groups specialty values as MongoDB's $group does."""
    if isinstance(value, str):
        return (_STRING, value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (_NUMBER, value)  # 1, 1.0 and Int64(1) group together in MongoDB, and compare equal here
    if hasattr(value, "to_decimal"):  # Decimal128
        return (_NUMBER, value.to_decimal())
    # booleans, objects, arrays, ObjectIds...: deterministic, not BSON's exact order among themselves
    return (_OTHER, f"{type(value).__name__}:{value!r}")


@dataclass(slots=True)
class HourStats:
    """Aggregates of the appointments created in one hour (or part of one): counts and sums only."""

    total: int = 0
    cancelled: int = 0
    rating_sum: float = 0
    rating_n: int = 0
    wait_ms_sum: float = 0
    wait_n: int = 0
    #: specialty key -> [the value as stored (for the answer), count]
    specialties: dict[tuple[int, Any], list[Any]] = field(default_factory=dict)

    def add(self, other: HourStats) -> None:
        """Add `other`'s counts and sums to this one."""
        self.total += other.total
        self.cancelled += other.cancelled
        self.rating_sum += other.rating_sum
        self.rating_n += other.rating_n
        self.wait_ms_sum += other.wait_ms_sum
        self.wait_n += other.wait_n
        for key, (value, count) in other.specialties.items():
            self._count(key, value, count)

    def _count(self, key: tuple[int, Any], value: Any, count: int) -> None:
        slot = self.specialties.get(key)
        if slot is None:
            self.specialties[key] = [value, count]
        else:
            slot[1] += count


def _exact(value: Any) -> float:
    """A $sum result as a Python number: ints stay exact, Decimal128 becomes float, non-numbers 0."""
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    out = number(value)
    return out if out is not None else 0


def _query_equals(path: str, value: Any) -> dict[str, Any]:
    """Expression true where the query {path: value} matches (equal, or an array containing it)."""
    ref = field_ref(path)
    return {"$or": [{"$eq": [ref, value]},
                    {"$and": [{"$isArray": ref}, {"$in": [value, {"$ifNull": [ref, []]}]}]}]}


def hour_key(fields: BusinessFields) -> dict[str, Any]:
    """The hour a document's created-at falls in ($dateTrunc, MongoDB 5.0+)."""
    return {"$dateTrunc": {"date": field_ref(fields.created_at), "unit": "hour"}}


def span_match(fields: BusinessFields, spans: Sequence[Span]) -> dict[str, Any]:
    """A $match on the created-at field covering `spans` (ranges on one field: the index serves them)."""
    def rng(a: dt.datetime, b: dt.datetime | None) -> dict[str, Any]:
        return {fields.created_at: {"$gte": a, "$lt": b} if b is not None else {"$gte": a}}

    if len(spans) == 1:
        return rng(*spans[0])
    return {"$or": [rng(a, b) for a, b in spans]}


def hour_pipeline(fields: BusinessFields, spans: Sequence[Span]) -> list[dict[str, Any]]:
    """One aggregation: the documents in `spans`, grouped by (hour, specialty), every sum the metrics need."""
    created, completed = field_ref(fields.created_at), field_ref(fields.booking_completed_at)
    rating = field_ref(fields.rating)
    has_wait = {"$eq": [{"$type": completed}, "date"]}
    return [
        {"$match": span_match(fields, spans)},
        {"$group": {
            "_id": {"h": hour_key(fields), "s": specialty_expr(fields)},
            "n": {"$sum": 1},
            "c": {"$sum": {"$cond": [_query_equals(fields.status, fields.cancelled_value), 1, 0]}},
            # $sum skips what $avg skips (missing, null, non-numbers); the count must skip the same.
            "rs": {"$sum": rating},
            "rn": {"$sum": {"$cond": [{"$isNumber": rating}, 1, 0]}},
            "ws": {"$sum": {"$cond": [has_wait, {"$subtract": [completed, created]}, 0]}},
            "wn": {"$sum": {"$cond": [has_wait, 1, 0]}},
        }},
    ]


def parse_rows(rows: Iterable[Mapping[str, Any]]) -> dict[int, HourStats]:
    """hour_pipeline's output rows as HourStats per hour."""
    out: dict[int, HourStats] = {}
    for row in rows:
        key = row.get("_id") or {}
        hour = hour_of(key["h"])
        stats = out.get(hour)
        if stats is None:
            stats = out[hour] = HourStats()
        n = int(row.get("n") or 0)
        stats.total += n
        stats.cancelled += int(row.get("c") or 0)
        stats.rating_sum += _exact(row.get("rs"))
        stats.rating_n += int(row.get("rn") or 0)
        stats.wait_ms_sum += _exact(row.get("ws"))
        stats.wait_n += int(row.get("wn") or 0)
        value = key.get("s")
        stats._count(specialty_key(value), value, n)
    return out


def shape(stats: HourStats, *, time_range: str, timestamp: dt.datetime, min_cell_size: int = 0,
          max_specialties: int = DEFAULT_MAX_SPECIALTIES) -> dict[str, Any]:
    """The seed's response object from merged aggregates; equal to shape_result over the same documents."""
    rows = [{"_id": json_id(value), "count": count} for value, count in stats.specialties.values()]
    return seed_answer(time_range=time_range, timestamp=timestamp, total=stats.total, cancelled=stats.cancelled,
                       rows=rows, min_cell_size=min_cell_size, max_specialties=max_specialties,
                       booking_s=stats.wait_ms_sum / stats.wait_n / 1000 if stats.wait_n else 0,
                       rating=stats.rating_sum / stats.rating_n if stats.rating_n else None)


def runs(hours: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted hours as [first, last + 1) runs of consecutive hours (fewer $or branches)."""
    out: list[tuple[int, int]] = []
    for h in sorted(set(hours)):
        if out and out[-1][1] == h:
            out[-1] = (out[-1][0], h + 1)
        else:
            out.append((h, h + 1))
    return out


def joined(spans: list[Span]) -> list[Span]:
    """Sorted spans with touching neighbours joined (fewer aggregations)."""
    out: list[Span] = []
    for a, b in sorted(spans, key=lambda s: s[0]):
        prev_a, prev_b = out[-1] if out else (a, None)
        if out and prev_b is not None and prev_b >= a:
            out[-1] = (prev_a, None if b is None else max(prev_b, b))
        else:
            out.append((a, b))
    return out


class BucketStore:
    """Closed hours' aggregates, which of them are dirty or being recomputed, and when each was computed.

    Calls for different windows may run concurrently: an hour being recomputed counts as needed for
    every other call too, and of two answers for one hour the later-started query's wins.
    """

    def __init__(self) -> None:
        self.buckets: dict[int, HourStats] = {}
        self.computed_at: dict[int, float] = {}  # hour -> monotonic time its query started
        self.dirty: set[int] = set()
        self.inflight: dict[int, int] = {}  # hour -> queries recomputing it right now
        #: bumped by clear(): a query started before a rebuild must not store its (maybe stale) answer
        self.generation = 0

    def __len__(self) -> int:
        return len(self.buckets)

    def mark(self, hours: Iterable[int]) -> int:
        """Mark `hours` dirty (recomputed by the next call whose window covers them); returns how many were new."""
        before = len(self.dirty)
        self.dirty.update(hours)
        return len(self.dirty) - before

    def mark_all(self) -> int:
        """Mark every kept or being-computed hour dirty (a change whose hour is unknown)."""
        return self.mark({*self.buckets, *self.inflight})

    def needed(self, first: int, end: int) -> set[int]:
        """Closed hours in [first, end) that are missing, dirty or being recomputed."""
        return {h for h in range(first, end)
                if h not in self.buckets or h in self.dirty or self.inflight.get(h)}

    def stalest(self, first: int, end: int, k: int) -> list[int]:
        """The `k` hours in [first, end) computed longest ago (the reconcile slice)."""
        have = [h for h in range(first, end) if h in self.buckets]
        return sorted(have, key=lambda h: self.computed_at.get(h, -math.inf))[:max(0, k)]

    def begin(self, hours: Iterable[int]) -> None:
        """`hours` are being recomputed from now: changes seen from here on mark them dirty again."""
        for h in hours:
            self.dirty.discard(h)
            self.inflight[h] = self.inflight.get(h, 0) + 1

    def end(self, hours: Iterable[int], *, ok: bool) -> None:
        """The recomputation of `hours` finished; when it failed they are dirty again."""
        if not ok:
            self.dirty.update(hours)
        for h in hours:
            left = self.inflight.get(h, 0) - 1
            if left > 0:
                self.inflight[h] = left
            else:
                self.inflight.pop(h, None)

    def store(self, hours: Iterable[int], found: Mapping[int, HourStats], *, started: float, generation: int) -> None:
        """Keep the answers for the closed `hours` queried at `started` (an hour with no documents is empty)."""
        if generation != self.generation:
            return
        for h in hours:
            if started >= self.computed_at.get(h, -math.inf):
                self.buckets[h] = found.get(h) or HourStats()
                self.computed_at[h] = started

    def drop_outside(self, first: int, end: int) -> None:
        """Forget hours outside [first, end): older than every window in use, or not closed yet."""
        for h in [h for h in self.buckets if not first <= h < end]:
            del self.buckets[h]
            self.computed_at.pop(h, None)
        self.dirty = {h for h in self.dirty if first <= h < end}

    def clear(self) -> None:
        """Forget everything (the change history is lost: the next call rebuilds)."""
        self.buckets.clear()
        self.computed_at.clear()
        self.dirty.clear()
        self.generation += 1

    def merged(self, first: int, end: int, *, fresh: Mapping[int, HourStats],
               extra: Iterable[HourStats]) -> HourStats:
        """The sum of the closed hours in [first, end) (`fresh` answers first, then kept ones) and `extra`."""
        out = HourStats()
        for h in range(first, end):
            b = fresh.get(h) or self.buckets.get(h)
            if b is not None:
                out.add(b)
        for s in extra:
            out.add(s)
        return out


def now_ms() -> dt.datetime:
    """The current UTC time truncated to milliseconds (what BSON dates and the answer's timestamp carry)."""
    t = dt.datetime.now(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


monotonic = time.monotonic
