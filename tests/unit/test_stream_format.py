"""Stream entry formats (hub.stream_format): format 2 installs a snapshot without parsing it, the
previous version (format 1, tests/support/stream_v1.py) still reads format 2, and this version reads
format 1, a broken index and an unknown format by parsing `data`. Pure, no Redis."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from hub.feed import Entry, Feed, chart_point
from hub.metrics import HubMetrics
from hub.scheduler import DISABLED
from hub.stream_check import EntryCheck
from hub.stream_format import FORMAT, PieceData, StreamReader, install, layout
from tests.support import stream_v1

DATA: dict[str, Any] = {
    "system": {"requestRate": [{"metric": {"job": f"j{i % 8}", "instance": f"p{i}"}, "value": [1.0, str(i / 3)]}
                               for i in range(300)],
               "responseTime": [{"metric": {"job": "api"}, "value": [1.0, "0.25"]}]},
    "application": {"cpuPercent": 12.5, "memoryUsage": {"rss": 1e8}, "activeConnections": 4, "name": "h\u00e9\"b"},
    "business": {"appointments": {"total": 7}, "expected": {"hour": 10, "elapsed": 0.5, "observed": 4},
                 "anomaly": {"state": "normal", "minutes_since_last_booking": 3}},
    "health": {"checks": {"api": {"up": False, "state": "down"}}},
}
STATUSES = {"prometheus": {"status": "ok", "latency_ms": 3}, "mongodb": {"status": "error", "error": "x"}}


def collected(seq: int = 41, epoch: str = "65f0-ab") -> Entry:
    """A collector's entry as LocalPublisher.number builds it (a disabled source shares DISABLED)."""
    return Entry(seq=seq, epoch=epoch, timestamp="2026-12-05T20:00:00.000Z",
                 sections={k: orjson.dumps(v) for k, v in DATA.items()},
                 sources={**{k: orjson.dumps(v) for k, v in STATUSES.items()}, "k8s": DISABLED, "slo": DISABLED})


def fields_v2(entry: Entry) -> dict[bytes, bytes]:
    data, index = layout(entry, DATA)
    return {b"seq": str(entry.seq).encode(), b"replica": b"r1", b"epoch": entry.epoch.encode(),
            b"size": str(len(data)).encode(), b"data": data, b"format": str(FORMAT).encode(), b"index": index}


def reader() -> StreamReader:
    return StreamReader(EntryCheck(stream="s", key_seq="q", key_ids="i", metrics=HubMetrics()))


def served(snapshot: tuple[Entry, Any, dict[str, Any]]) -> tuple[bytes, int, dict[str, Any]]:
    """What clients get once a replica's feed keeps the snapshot: the message, its byte count, statuses."""
    entry, data, statuses = snapshot
    feed = Feed(history_size=10, history_max_bytes=1 << 30, source_sections={})
    assert feed.append(entry, data)
    return entry.encode(), feed.bytes, statuses


def test_format_2_data_is_format_1_data_byte_for_byte_and_the_index_locates_every_piece() -> None:
    entry = collected()
    data, index = layout(entry, DATA)
    assert data == entry.encode()
    idx = orjson.loads(index)
    assert {name: data[a:b] for name, a, b in idx["d"]} == entry.sections
    assert {name: data[a:b] for name, a, b in idx["s"]} == entry.sources
    assert idx["point"] == chart_point(41, entry.timestamp, DATA)
    assert idx["t"] == entry.timestamp
    assert len(index) < 1000 < len(data)


def test_this_version_installs_format_2_as_the_previous_one_serves_it() -> None:
    fields = fields_v2(collected())
    assert set(fields) - stream_v1.FIELDS == {b"format", b"index"}  # unknown to the previous version
    old = stream_v1.read(fields)
    new = install(fields)
    assert old is not None and new is not None
    assert served(new) == served(old)
    assert new[0].point == old[0].point == chart_point(41, "2026-12-05T20:00:00.000Z", DATA)
    assert new[2] == {"prometheus": "ok", "mongodb": "error", "k8s": "disabled", "slo": "disabled"}
    # What the metrics read from `data` (health, business) is there, parsed from its piece alone.
    assert new[1]["health"] == DATA["health"] and new[1].get("business") == DATA["business"]
    assert new[1].get("missing") is None and set(new[1]) == set(DATA)


def test_this_version_reads_format_1_entries_of_the_previous_collector() -> None:
    fields = {k: v for k, v in fields_v2(collected()).items() if k in stream_v1.FIELDS}
    old = stream_v1.read(fields)
    new = reader().read(b"1-0", fields)
    assert old is not None and new is not None
    assert served(new) == served(old)


def test_piece_data_parses_only_the_sections_asked_for() -> None:
    data = PieceData({"system": b"{not json: never parsed", "health": b'{"checks":{}}'})
    assert data["health"] == {"checks": {}}
    assert "system" in data and len(data) == 2
    with pytest.raises(orjson.JSONDecodeError):
        data["system"]


def shifted(index: bytes) -> bytes:
    idx = orjson.loads(index)
    name, a, b = idx["d"][0]
    idx["d"][0] = [name, a + 1, b]
    return orjson.dumps(idx)


def repointed(index: bytes) -> bytes:
    idx = orjson.loads(index)
    idx["point"]["seq"] = 40
    return orjson.dumps(idx)


@pytest.mark.parametrize("change", [
    lambda f: {**f, b"index": shifted(f[b"index"])},
    lambda f: {**f, b"index": repointed(f[b"index"])},
    lambda f: {**f, b"index": b'{"t":"x","d":[["system",0,99999999]],"s":[],"point":{}}'},
    lambda f: {**f, b"index": b"[1,2"},
    lambda f: {k: v for k, v in f.items() if k != b"index"},
    lambda f: {**f, b"data": f[b"data"].replace(b'"cpuPercent":12.5', b'"cpuPercent":12.75')},
], ids=["shifted span", "point of another seq", "span past the end", "not JSON", "no index", "data moved"])
def test_an_index_that_does_not_describe_its_data_is_not_trusted(change: Any, caplog: pytest.LogCaptureFixture) -> None:
    fields = change(fields_v2(collected()))
    assert install(fields) is None
    r = reader()
    with caplog.at_level(logging.WARNING, logger="hub.stream_format"):
        got = r.read(b"7-0", fields)
        assert r.read(b"8-0", fields) is not None
    assert got is not None and served(got) == served(stream_v1.read(fields))  # type: ignore[arg-type]
    assert [m.getMessage() for m in caplog.records] == [
        "cluster: stream entry 7-0 carries an index that does not describe its data; parsing its data instead "
        "(logged once)"]


def test_a_format_this_version_does_not_know_is_read_from_its_data(caplog: pytest.LogCaptureFixture) -> None:
    fields = {**fields_v2(collected()), b"format": b"3", b"index": b"a future layout"}
    r = reader()
    with caplog.at_level(logging.WARNING, logger="hub.stream_format"):
        got = r.read(b"9-0", fields)
        r.read(b"10-0", fields)
    assert got is not None and served(got) == served(stream_v1.read(fields))  # type: ignore[arg-type]
    assert [m.getMessage() for m in caplog.records] == [
        "cluster: stream entry 9-0 has format 3, which this hub version does not know (it reads 1 and 2; a newer "
        "collector runs): reading its data field as format 1 (logged once)"]


def test_an_entry_whose_data_is_not_its_snapshot_is_still_refused() -> None:
    fields = fields_v2(collected())
    fields = {**fields, b"seq": b"42"}  # the data says 41
    metrics = HubMetrics()
    r = StreamReader(EntryCheck(stream="s", key_seq="q", key_ids="i", metrics=metrics))
    assert r.read(b"11-0", fields) is None
    assert metrics.cluster_rejected_entries.labels("malformed")._value.get() == 1
