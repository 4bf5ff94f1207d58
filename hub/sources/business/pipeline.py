"""The full pipeline: every metric over a window in one `$match` + `$facet` (the oracle the incremental
source must equal, and what tests and the bench compare against), plus shaping the seed's response."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

from hub.config import BusinessFields
from hub.vocab import iso_of

UNKNOWN_SPECIALTY = "unknown"
OTHER_SPECIALTY = "other"
QUERY_COMMENT = "hub: business metrics (read-only aggregate)"


def field_ref(path: str) -> str:
    """Aggregation-expression reference to a (possibly dotted) document field."""
    return "$" + path


def build_pipeline(fields: BusinessFields, start: dt.datetime) -> list[dict[str, Any]]:
    """The one aggregation pipeline: $match on the window, then $facet computing every metric in the DB."""
    created, completed = field_ref(fields.created_at), field_ref(fields.booking_completed_at)

    def count_where(cond: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"$match": cond}, {"$count": "n"}]

    return [
        # The only stage that can use an index: keep it first and a plain range on the created-at field.
        # A $gte on a date matches dates only, so every document below has a date `created`.
        {"$match": {fields.created_at: {"$gte": start}}},
        # Sub-pipelines filter with query $match (the seed's own predicates) rather than per-document
        # $cond expressions: same answers, and cheaper for the server to evaluate.
        {"$facet": {
            # $avg skips missing, null and non-numeric ratings by itself.
            "totals": [{"$group": {"_id": None, "n": {"$sum": 1}, "rating": {"$avg": field_ref(fields.rating)}}}],
            "cancelled": count_where({fields.status: fields.cancelled_value}),
            "booking": [
                # $subtract would fail on a string; only date-to-date differences count.
                {"$match": {fields.booking_completed_at: {"$type": "date"}}},
                {"$group": {"_id": None, "avgMs": {"$avg": {"$subtract": [completed, created]}}}},
            ],
            "bySpecialty": [
                {"$group": {"_id": {"$ifNull": [field_ref(fields.specialty), UNKNOWN_SPECIALTY]},
                            "count": {"$sum": 1}}},
                # _id breaks ties so the order is deterministic from tick to tick.
                {"$sort": {"count": -1, "_id": 1}},
            ],
        }},
    ]


def _first(doc: Mapping[str, Any] | None, facet: str, key: str) -> Any:
    rows = (doc or {}).get(facet) or []
    return rows[0].get(key) if rows else None


def number(value: Any) -> float | None:
    """A BSON numeric (int, float, Int64, Decimal128) as float; None for anything else."""
    if value is None or isinstance(value, bool):
        return None
    if hasattr(value, "to_decimal"):  # Decimal128
        value = value.to_decimal()
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def round2(x: float) -> float:
    """Round to 2 decimals like the seed's Math.round(x * 100) / 100 (half up, not half even)."""
    return math.floor(x * 100 + 0.5) / 100


def json_id(value: Any) -> Any:
    """A specialty key that JSON can carry (odd BSON types become strings)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _id_sort_key(value: Any) -> tuple[int, str]:
    return (0, value) if isinstance(value, str) else (1, repr(value))


def row_key(row: Mapping[str, Any]) -> tuple[int, tuple[int, str]]:
    return (-row["count"], _id_sort_key(row["_id"]))


def fold_small_cells(rows: Sequence[Mapping[str, Any]], min_cell_size: int) -> list[dict[str, Any]]:
    """Merge specialties with a count below `min_cell_size` into one "other" row, sorted count desc.

    If "other" itself stays below `min_cell_size`, the smallest remaining rows join it until it
    does not (otherwise `total` minus the shown rows would give the small count away).
    """
    if min_cell_size <= 0:
        return [dict(r) for r in rows]
    kept: list[dict[str, Any]] = []
    other = 0
    for row in rows:
        if row["count"] < min_cell_size or row["_id"] == OTHER_SPECIALTY:
            other += row["count"]  # a real specialty called "other" joins the folded ones
        else:
            kept.append(dict(row))
    kept.sort(key=row_key)
    while 0 < other < min_cell_size and kept:
        other += kept.pop()["count"]
    if other:
        kept.append({"_id": OTHER_SPECIALTY, "count": other})
    kept.sort(key=row_key)
    return kept


def shape_result(doc: Mapping[str, Any] | None, *, time_range: str, timestamp: dt.datetime,
                 min_cell_size: int = 0) -> dict[str, Any]:
    """The seed's response object from the pipeline's single output document."""
    total = int(_first(doc, "totals", "n") or 0)
    cancelled = int(_first(doc, "cancelled", "n") or 0)
    booking_ms = number(_first(doc, "booking", "avgMs"))
    rating = number(_first(doc, "totals", "rating"))
    rows = [{"_id": json_id(r.get("_id")), "count": int(r.get("count") or 0)}
            for r in (doc or {}).get("bySpecialty") or []]
    return seed_answer(time_range=time_range, timestamp=timestamp, total=total, cancelled=cancelled, rows=rows,
                       min_cell_size=min_cell_size, booking_s=booking_ms / 1000 if booking_ms is not None else 0,
                       rating=rating)


def seed_answer(*, time_range: str, timestamp: dt.datetime, total: int, cancelled: int,
                rows: list[dict[str, Any]], min_cell_size: int, booking_s: float,
                rating: float | None) -> dict[str, Any]:
    """The seed's response object (its field names and rounding), from the window's aggregates."""
    return {
        "timestamp": iso_of(timestamp),
        "timeRange": time_range,
        "appointments": {
            "total": total,
            "bySpecialty": fold_small_cells(rows, min_cell_size),
            "cancellationRate": (cancelled / total) * 100 if total > 0 else 0,
            "averageBookingTime": booking_s,
            "patientSatisfaction": round2(rating) if rating is not None else None,
        },
    }
