"""The value the collector stores for a fresh stream's backfill: bounded in bytes, and read back strictly."""

from __future__ import annotations

import orjson
import pytest

from hub.cluster_backfill import backfill_keys, decode_items, encode_items


def item(ts: str, v: int) -> tuple[str, dict[str, object], dict[str, bytes]]:
    data = {"system": {"q": [{"metric": {}, "value": [1, str(v)]}]}, "application": None}
    return ts, data, {k: orjson.dumps(x) for k, x in data.items()}


def test_the_newest_items_within_the_byte_budget_round_trip_with_only_known_sections() -> None:
    items = [item(f"2026-01-01T00:00:0{i}.000Z", i) for i in range(5)]
    one = sum(map(len, items[0][2].values()))
    raw, kept = encode_items(items, "e1", max_bytes=3 * one)
    assert kept == 3
    back = decode_items(raw, "e1", {"system", "application"})
    assert back == items[2:]
    # A section this replica does not have is left out (its topic filter would not know it).
    assert decode_items(raw, "e1", {"system"})[0][1] == {"system": items[2][1]["system"]}
    assert backfill_keys("hub", "e1") == ("{hub}:backfill:e1", "{hub}:backfill:e1:claim")


@pytest.mark.parametrize(("raw", "why"), [
    (b"nope", "not JSON"),
    (orjson.dumps({"epoch": "other", "items": []}), "not a backfill of this epoch"),
    (orjson.dumps({"epoch": "e1", "items": [["t", []]]}), "an item is not [timestamp, data]"),
    (orjson.dumps({"epoch": "e1", "items": [["b", {}], ["a", {}]]}), "items are not oldest first"),
])
def test_a_value_the_collector_does_not_write_is_refused_with_the_reason(raw: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("[", r"\[").replace("]", r"\]")):
        decode_items(raw, "e1", {"system"})
