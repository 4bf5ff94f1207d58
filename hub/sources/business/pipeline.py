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
#: a specialty label longer than this is cut to LABEL_CHARS - 1 characters followed by LABEL_MARK
LABEL_CHARS = 256
LABEL_MARK = "\u2026"  # …
#: sources.business.max_specialties' default: the rows of bySpecialty besides "other"
DEFAULT_MAX_SPECIALTIES = 50
#: JSON bytes of one bySpecialty row at most: {"_id":"<label>","count":<count>} and its comma, where each
#: of the label's characters takes at most 6 bytes (a control character is written as \u00XX), the mark
#: 3, and the count at most 20 (an int64)
ROW_MAX_BYTES = len('{"_id":"","count":},') + 6 * (LABEL_CHARS - 1) + len(LABEL_MARK.encode()) + 20
#: JSON bytes of the business section without its bySpecialty rows at most: the keys, a timestamp, the
#: longest timeRange, a total of 20 digits and three floats of at most 24 characters each (320), plus
#: `expected` and `anomaly` (their keys, numbers, a timestamp and a reason made of numbers: 434 at most, 448)
SECTION_FIXED_BYTES = 768


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
                {"$group": {"_id": specialty_expr(fields), "count": {"$sum": 1}}},
                # _id breaks ties so the order is deterministic from tick to tick.
                {"$sort": {"count": -1, "_id": 1}},
            ],
        }},
    ]


def specialty_expr(fields: BusinessFields) -> dict[str, Any]:
    """The specialty as grouped: "unknown" when missing or null, a string cut on the server to
    LABEL_CHARS + 1 characters (one more than is shown, so the hub can tell it was cut), so a 1 MiB
    value never leaves the server, whatever the documents hold."""
    return {"$let": {
        "vars": {"s": {"$ifNull": [field_ref(fields.specialty), UNKNOWN_SPECIALTY]}},
        "in": {"$cond": [{"$eq": [{"$type": "$$s"}, "string"]}, {"$substrCP": ["$$s", 0, LABEL_CHARS + 1]}, "$$s"]},
    }}


def max_section_bytes(max_specialties: int = DEFAULT_MAX_SPECIALTIES) -> int:
    """The largest the business section (`data.business`, or one /api/metrics/business answer) can be
    in JSON: max_specialties rows, "other", and the fixed fields."""
    return SECTION_FIXED_BYTES + (max_specialties + 1) * ROW_MAX_BYTES


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
    """A specialty key that JSON can carry (odd BSON types become strings), as shown: text longer than
    LABEL_CHARS characters is cut to LABEL_CHARS - 1 and marked with a trailing LABEL_MARK."""
    if value is None or isinstance(value, (int, float, bool)):
        return value
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + LABEL_MARK


def _id_sort_key(value: Any) -> tuple[int, str]:
    return (0, value) if isinstance(value, str) else (1, repr(value))


def row_key(row: Mapping[str, Any]) -> tuple[int, tuple[int, str]]:
    return (-row["count"], _id_sort_key(row["_id"]))


def merge_labels(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose labels are equal once cut (json_id) as one row with their counts summed, sorted count
    desc, then _id: bySpecialty never shows a label twice."""
    merged: dict[Any, dict[str, Any]] = {}
    for row in rows:
        label = row["_id"]
        # 1 and True are equal in Python, not in JSON: strings are keys themselves, the rest with their type.
        k = label if isinstance(label, str) else (type(label).__name__, repr(label))
        slot = merged.get(k)
        if slot is None:
            merged[k] = {"_id": label, "count": row["count"]}
        else:
            slot["count"] += row["count"]
    return sorted(merged.values(), key=row_key)


def fold_small_cells(rows: Sequence[Mapping[str, Any]], min_cell_size: int,
                     max_specialties: int = DEFAULT_MAX_SPECIALTIES) -> list[dict[str, Any]]:
    """Merge specialties with a count below `min_cell_size` into one "other" row, then every specialty
    but the `max_specialties` largest; sorted count desc, then _id.

    If "other" itself stays below `min_cell_size`, the smallest remaining rows join it until it
    does not (otherwise `total` minus the shown rows would give the small count away). Folding for
    `max_specialties` comes second and only adds to "other", so it keeps that guarantee; at most
    `max_specialties` + 1 rows remain.
    """
    named = sum(1 for r in rows if r["_id"] != OTHER_SPECIALTY)
    if min_cell_size <= 0 and named <= max_specialties:
        return sorted((dict(r) for r in rows), key=row_key)
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
    for row in kept[max_specialties:]:  # the largest are shown, the long tail is "other"
        other += row["count"]
    del kept[max_specialties:]
    if other:
        kept.append({"_id": OTHER_SPECIALTY, "count": other})
    kept.sort(key=row_key)
    return kept


def shape_result(doc: Mapping[str, Any] | None, *, time_range: str, timestamp: dt.datetime,
                 min_cell_size: int = 0, max_specialties: int = DEFAULT_MAX_SPECIALTIES) -> dict[str, Any]:
    """The seed's response object from the pipeline's single output document."""
    total = int(_first(doc, "totals", "n") or 0)
    cancelled = int(_first(doc, "cancelled", "n") or 0)
    booking_ms = number(_first(doc, "booking", "avgMs"))
    rating = number(_first(doc, "totals", "rating"))
    rows = [{"_id": json_id(r.get("_id")), "count": int(r.get("count") or 0)}
            for r in (doc or {}).get("bySpecialty") or []]
    return seed_answer(time_range=time_range, timestamp=timestamp, total=total, cancelled=cancelled, rows=rows,
                       min_cell_size=min_cell_size, max_specialties=max_specialties,
                       booking_s=booking_ms / 1000 if booking_ms is not None else 0, rating=rating)


def seed_answer(*, time_range: str, timestamp: dt.datetime, total: int, cancelled: int,
                rows: list[dict[str, Any]], min_cell_size: int, booking_s: float,
                rating: float | None, max_specialties: int = DEFAULT_MAX_SPECIALTIES) -> dict[str, Any]:
    """The seed's response object (its field names and rounding), from the window's aggregates; its
    bySpecialty labels cut and merged, small cells and the long tail folded (at most max_section_bytes)."""
    return {
        "timestamp": iso_of(timestamp),
        "timeRange": time_range,
        "appointments": {
            "total": total,
            "bySpecialty": fold_small_cells(merge_labels(rows), min_cell_size, max_specialties),
            "cancellationRate": (cancelled / total) * 100 if total > 0 else 0,
            "averageBookingTime": booking_s,
            "patientSatisfaction": round2(rating) if rating is not None else None,
        },
    }
