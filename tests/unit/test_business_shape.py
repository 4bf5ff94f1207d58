"""bySpecialty as sent: labels cut and merged, small cells and the long tail folded, and the byte bound of
the business section that follows from those caps (pure functions, no database)."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from typing import Any

import orjson

from hub.config import BusinessSourceConfig
from hub.sources.business.buckets import HourStats, shape, specialty_key
from hub.sources.business.pipeline import (
    DEFAULT_MAX_SPECIALTIES,
    LABEL_CHARS,
    LABEL_MARK,
    fold_small_cells,
    json_id,
    max_section_bytes,
    merge_labels,
    seed_answer,
    shape_result,
)

UTC = dt.UTC
NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def rows_of(counts: dict[str, int]) -> list[dict[str, object]]:
    return [{"_id": k, "count": v} for k, v in counts.items()]


def test_labels_longer_than_256_characters_are_cut_and_marked() -> None:
    assert json_id("x" * LABEL_CHARS) == "x" * LABEL_CHARS  # 256 exactly: shown whole
    cut = json_id("é" * (LABEL_CHARS + 1))
    assert len(cut) == LABEL_CHARS and cut == "é" * (LABEL_CHARS - 1) + LABEL_MARK
    assert json_id("y" * (1 << 20)) == "y" * (LABEL_CHARS - 1) + "…"
    # odd BSON types become text first, and are cut the same way; numbers, booleans and null stay
    assert json_id(["z" * 400]) == str(["z" * 400])[:LABEL_CHARS - 1] + "…"
    assert [json_id(v) for v in (3, 2.5, True, None)] == [3, 2.5, True, None]


def test_labels_equal_once_cut_are_one_row() -> None:
    a, b = "a" * 300, "a" * 299 + "b"  # differ after the cut
    merged = merge_labels([{"_id": json_id(a), "count": 2}, {"_id": "c", "count": 4}, {"_id": json_id(b), "count": 3}])
    assert merged == [{"_id": "a" * 255 + "…", "count": 5}, {"_id": "c", "count": 4}]
    # 1 and True are equal in Python but distinct on the wire: never merged
    merged = merge_labels([{"_id": 1, "count": 1}, {"_id": True, "count": 1}])
    assert [(type(r["_id"]), r["count"]) for r in merged] == [(int, 1), (bool, 1)]


def test_max_specialties_keeps_the_largest_and_folds_the_rest_into_other() -> None:
    rows = rows_of({f"s{i:02d}": 100 - i for i in range(60)})
    out = fold_small_cells(rows, 0, 50)
    assert [r["_id"] for r in out if r["_id"] != "other"] == [f"s{i:02d}" for i in range(50)]
    assert out[0] == {"_id": "other", "count": sum(100 - i for i in range(50, 60))}  # sorted by count too
    assert len(out) == 51 and sum(r["count"] for r in out) == sum(r["count"] for r in rows)
    # at or under the cap nothing is folded, not even a real "other" (it is a specialty like any)
    few = rows_of({"a": 3, "other": 2, "b": 1})
    assert fold_small_cells(few, 0, 2) == few
    # over the cap, a real "other" joins the folded ones: "other" is never shown twice
    assert fold_small_cells(rows_of({"a": 5, "other": 4, "b": 3, "c": 2}), 0, 1) == [
        {"_id": "other", "count": 9}, {"_id": "a", "count": 5}]


def test_min_cell_size_applies_first_and_max_specialties_keeps_its_guarantee() -> None:
    """Whatever the counts, the shown rows are at most max_specialties + "other", no shown count (other
    included) is below min_cell_size unless the whole window is, and the counts add up to the total."""
    rng = random.Random(5)
    for _ in range(400):
        n, k, cap = rng.randint(0, 40), rng.choice([0, 1, 2, 5, 11]), rng.randint(1, 12)
        rows = rows_of({f"s{i}": rng.choice([1, 1, 2, 3, 5, 8, 13, 40]) for i in range(n)})
        if rng.random() < 0.3:
            rows.append({"_id": "other", "count": rng.randint(1, 6)})
        total = sum(r["count"] for r in rows)
        out = fold_small_cells(rows, k, cap)
        assert sum(r["count"] for r in out) == total
        assert len([r for r in out if r["_id"] != "other"]) <= cap
        assert len({r["_id"] for r in out}) == len(out)
        if k and total >= k:
            assert all(r["count"] >= k for r in out), (rows, k, cap, out)
        # the named rows shown are the largest ones: a prefix of the rows sorted by count
        shown = [r for r in out if r["_id"] != "other"]
        named = sorted((r for r in rows if r["_id"] != "other"), key=lambda r: (-r["count"], r["_id"]))
        assert shown == [dict(r) for r in named[:len(shown)]]


def worst_expected_and_anomaly() -> dict[str, Any]:
    """`expected` and `anomaly` with the longest numbers and the longest reason the detectors write."""
    from hub.sources.business.anomaly import Verdict
    from hub.sources.business.expected import Expected

    worst, tiny, most = -1.7976931348623157e308, 2.2250738585072014e-308, 2**63 - 1
    reason = (f"{most} bookings in the last 60 min where {worst:.3g} were expected: "
              f"P(X <= {most}) = {tiny:.2g} < p = {tiny:g}")
    return {"expected": Expected(hour=worst, observed=most, elapsed=0.99999, weeks=4).to_dict(),
            "anomaly": Verdict("silent", most, worst, worst, reason).to_dict("2024-03-05T10:07:00.000Z")}


def test_the_documented_byte_bound_holds_for_the_worst_labels_and_numbers() -> None:
    """Labels of control characters (6 bytes each in JSON), the largest counts and floats."""
    rows = [{"_id": json_id(chr(i % 32) + chr(31 - i % 32) + chr(i) + "\x01" * (LABEL_CHARS * 4)),
             "count": 2**50 - i} for i in range(5000)]
    for cap in (1, 7, DEFAULT_MAX_SPECIALTIES, 200):
        answer = seed_answer(time_range="24h", timestamp=NOW, total=-(2**63), cancelled=1, rows=rows,
                             min_cell_size=0, max_specialties=cap, booking_s=-1.7976931348623157e308,
                             rating=-1.7976931348623157e306)
        answer["appointments"]["cancellationRate"] = -1.7976931348623157e-308  # the longest float text
        answer.update(worst_expected_and_anomaly())
        size = len(orjson.dumps(answer))
        assert len(answer["appointments"]["bySpecialty"]) == cap + 1
        assert size <= max_section_bytes(cap), (cap, size)
        if cap >= DEFAULT_MAX_SPECIALTIES:  # and tight: "other" is the one row short of the worst
            assert size > max_section_bytes(cap) * 0.97, (cap, size)
    assert max_section_bytes() == 80_991  # the figure docs/mongodb.md and docs/security.md state


def test_hour_buckets_and_the_full_pipeline_cut_fold_and_order_alike() -> None:
    """shape (summed hours) and shape_result (the oracle) give one answer for the same groups, numbers
    and strings mixed, long labels included."""
    values = [*(f"s{i}" for i in range(70)), 7, 7.5, "x" * 300, "x" * 299 + "y", True]
    rng = random.Random(9)
    counts = {i: rng.randint(1, 9) for i in range(len(values))}
    stats = HourStats()
    for i, v in enumerate(values):
        stats.specialties[specialty_key(v)] = [v, counts[i]]
    stats.total = sum(counts.values())
    facet = {"totals": [{"n": stats.total}],
             "bySpecialty": [{"_id": v, "count": counts[i]} for i, v in enumerate(values)]}
    for k, cap in itertools.product((0, 3, 11), (1, 50)):
        a = shape(stats, time_range="7d", timestamp=NOW, min_cell_size=k, max_specialties=cap)
        b = shape_result(facet, time_range="7d", timestamp=NOW, min_cell_size=k, max_specialties=cap)
        assert a == b


def test_the_config_default_is_the_code_default() -> None:
    assert BusinessSourceConfig().max_specialties == DEFAULT_MAX_SPECIALTIES == 50
