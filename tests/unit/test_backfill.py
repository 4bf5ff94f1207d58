"""Backfilled snapshots in the feed: before the live ones, without seq, within history_size and
history_max_bytes, evicted first; and how Prometheus range answers become snapshots."""

from __future__ import annotations

from typing import Any

import orjson

from hub.backfill import build_items
from hub.feed import Entry, Feed
from hub.sources.prometheus.history import job_selector, self_queries
from hub.vocab import utc_iso

T0 = 1_800_000_000.0
SECTIONS = {"prometheus": ("system",), "process": ("application",), "business": ("business",)}


def live(seq: int, ts: float, epoch: str = "e") -> tuple[Entry, dict[str, Any]]:
    data = {"system": {"q": [{"metric": {"job": "api"}, "value": [ts, "5"]}]}, "application": None,
            "business": None}
    return Entry(seq=seq, epoch=epoch, timestamp=utc_iso(ts),
                 sections={k: orjson.dumps(v) for k, v in data.items()},
                 sources={"prometheus": b'{"status":"ok"}'}), data


def filled(times: list[float], pad: int = 0) -> list[tuple[str, dict[str, Any], dict[str, bytes]]]:
    rows = {"requestRate": [{"metric": {"job": "api", "pad": "x" * pad}, "values": [[t, "2"] for t in times]}]}
    return build_items(rows, {}, ["system", "application", "business"])


def feed(size: int = 10, max_bytes: int = 1 << 30) -> Feed:
    f = Feed(history_size=size, history_max_bytes=max_bytes, source_sections=SECTIONS)
    f.default_epoch = "e"
    return f


def test_backfilled_items_come_before_the_live_ones_without_seq_and_never_move_seq_or_epoch():
    f = feed()
    e, data = live(1, T0 + 10)
    f.append(e, data)
    # Times at and after the first live snapshot are not taken: the backfill ends before it.
    assert f.add_backfill(filled([T0 + 7, T0 + 8, T0 + 9, T0 + 10, T0 + 11])) == 3
    assert (f.seq, f.epoch, f.latest) == (1, "e", e)
    items = [orjson.loads(x.encode()) for x in f.items(100)]
    assert [i.get("seq") for i in items] == [None, None, None, 1]
    assert [i["timestamp"] for i in items] == [utc_iso(T0 + t) for t in (7, 8, 9, 10)]
    first = items[0]
    assert set(first) == {"type", "backfill", "epoch", "timestamp", "data", "sources", "point"}
    assert first["backfill"] is True and first["epoch"] == "e" and first["sources"] == {}
    assert first["data"] == {"system": {"requestRate": [{"metric": {"job": "api", "pad": ""}, "value": [T0 + 7, "2"]}]},
                             "application": None, "business": None}
    assert first["point"] == {"backfill": True, "timestamp": utc_iso(T0 + 7), "rate": {"api": 2.0},
                              "p95": None, "rss": None, "cpu": None, "conns": None, "appts": None,
                              "hour_observed": None, "hour_expected": None}
    assert "backfill" not in items[-1] and "backfill" not in items[-1]["point"]
    points = orjson.loads(f.encode_points(100, None))
    assert points["seq"] == 1 and points["epoch"] == "e"
    assert [p.get("seq") for p in points["items"]] == [None, None, None, 1]
    assert all(p["backfill"] for p in points["items"][:3])
    # A topic-limited view keeps the marker and drops the other topics' fields.
    limited = orjson.loads(f.items(100)[0].encode(("application",), SECTIONS))
    assert limited["data"] == {"application": None} and limited["point"]["backfill"] is True
    # Catching up after a seq (cluster read-back) never includes them.
    assert [x.seq for x in f.items(100, after=0)][-1] == 1 and f.items(100, after=0)[0].backfill
    assert [x.seq for x in f.items(100, after=0) if not x.backfill] == [1]


def test_backfill_lands_once_and_only_within_history_size_beside_the_live_ones():
    f = feed(size=5)
    for seq in (1, 2):
        f.append(*live(seq, T0 + 100 + seq))
    times = [T0 + t for t in range(50)]
    assert f.add_backfill(filled(times)) == 3  # 5 - 2 live: the newest three
    assert [x.timestamp for x in f.backfill] == [utc_iso(T0 + t) for t in (47, 48, 49)]
    assert f.add_backfill(filled(times)) == 0  # once
    # Live ticks push the backfilled ones out first, raw entries and points alike.
    f.append(*live(3, T0 + 103))
    assert len(f.backfill) == 2 and len(f.backfill_points) == 2
    for seq in (4, 5, 6):
        f.append(*live(seq, T0 + 100 + seq))
    assert not f.backfill and not f.backfill_points
    assert [x.seq for x in f.history] == [2, 3, 4, 5, 6]


def test_backfill_within_history_max_bytes_keeps_the_newest_and_the_live_latest():
    f = feed(size=100, max_bytes=12_000)
    f.append(*live(1, T0 + 100))
    assert f.add_backfill(filled([T0 + t for t in range(20)], pad=2_000)) == 20
    assert f.bytes <= 12_000
    assert f.bytes == sum(x.size for x in [*f.backfill, *f.history])
    assert 0 < len(f.backfill) < 20 and f.backfill[-1].timestamp == utc_iso(T0 + 19)
    assert [x.seq for x in f.history] == [1]
    # Their points stay (small, bounded by history_size only), like live ones.
    assert len(f.backfill_points) == 20


def test_backfill_before_the_first_tick_is_kept_and_never_becomes_the_latest():
    f = feed(size=10)
    assert f.add_backfill(filled([T0 + 1, T0 + 2])) == 2
    assert f.latest is None and f.seq == 0 and f.epoch == "e"
    f.append(*live(1, T0 + 3))
    assert [x.get("seq") for x in (orjson.loads(e.encode()) for e in f.items(10))] == [None, None, 1]


def test_a_new_epoch_drops_the_backfilled_items_with_the_rest():
    f = feed()
    f.append(*live(1, T0 + 10))
    f.add_backfill(filled([T0 + 1]))
    f.append(*live(1, T0 + 11, epoch="other"))
    assert not f.backfill and not f.backfill_points and [x.seq for x in f.items(10)] == [1]


def test_build_items_joins_queries_and_own_series_by_evaluation_time():
    system = {"a": [{"metric": {"job": "x"}, "values": [[T0, "1"], [T0 + 10, "2"]]}],
              "b": [{"metric": {"job": "y"}, "values": [[T0 + 10, "3"]]}]}
    own = {"rss": [{"metric": {}, "values": [[T0 + 10, "1048576"], [T0 + 20, "2097152"]]}],
           "cpu": [{"metric": {}, "values": [[T0 + 20, "2.5"]]}],
           "conns": [{"metric": {}, "values": [[T0 + 20, "NaN"]]}]}
    items = build_items(system, own, ["system", "application", "alerts"])
    assert [t for t, _, _ in items] == [utc_iso(T0), utc_iso(T0 + 10), utc_iso(T0 + 20)]
    assert [d for _, d, _ in items] == [
        {"system": {"a": [{"metric": {"job": "x"}, "value": [T0, "1"]}], "b": []},
         "application": None, "alerts": None},
        {"system": {"a": [{"metric": {"job": "x"}, "value": [T0 + 10, "2"]}],
                    "b": [{"metric": {"job": "y"}, "value": [T0 + 10, "3"]}]},
         "application": {"memoryUsage": {"rss": 1048576}}, "alerts": None},
        {"system": {"a": [], "b": []},
         "application": {"memoryUsage": {"rss": 2097152}, "cpuPercent": 2.5}, "alerts": None},
    ]
    assert all(orjson.loads(enc["system"]) == d["system"] for _, d, enc in items)


def test_own_series_queries_quote_the_job_as_a_promql_string():
    assert job_selector('hub "blue"\\x') == '{job="hub \\"blue\\"\\\\x"}'
    q = self_queries("hub", 10.0)
    assert q == {"rss": 'max(process_resident_memory_bytes{job="hub"})',
                 "cpu": 'max(rate(process_cpu_seconds_total{job="hub"}[60s])) * 100',
                 "conns": 'max(hub_ws_connections{job="hub"})'}
