"""The feed: history bounded in entries and in bytes, pieces assembled per topic set, chart points."""

from __future__ import annotations

import orjson

from hub.feed import Entry, Feed, chart_point, filter_point


def entry(seq: int, pad: int = 0, epoch: str = "e") -> Entry:
    return Entry(seq=seq, epoch=epoch, timestamp=f"t{seq}",
                 sections={"system": orjson.dumps({"pad": "x" * pad}), "application": b'{"activeConnections":1}'},
                 sources={"prometheus": b'{"status":"ok"}', "process": b'{"status":"ok"}'})


def test_history_evicts_the_oldest_once_the_byte_budget_is_passed_and_keeps_the_latest():
    feed = Feed(history_size=100, history_max_bytes=10_000, source_sections={})
    for seq in range(1, 21):
        assert feed.append(entry(seq, pad=2_000), {})
    assert feed.bytes <= 10_000
    assert [e.seq for e in feed.history] == list(range(17, 21))  # 4 x ~2.2 KB fit
    assert feed.bytes == sum(e.size for e in feed.history)
    # A single snapshot bigger than the whole budget is still kept: the latest always is.
    feed.append(entry(21, pad=50_000), {})
    assert [e.seq for e in feed.history] == [21]
    # Chart points keep their full span: they are not bounded by the raw history's bytes.
    assert [p["seq"] for p in feed.points] == list(range(1, 22))


def test_history_is_also_bounded_in_entries():
    feed = Feed(history_size=3, history_max_bytes=1 << 30, source_sections={})
    for seq in range(1, 6):
        feed.append(entry(seq), {})
    assert [e.seq for e in feed.history] == [3, 4, 5]
    assert [p["seq"] for p in feed.points] == [3, 4, 5]


def test_a_snapshot_is_held_once_as_pieces_and_assembled_per_topic_set():
    feed = Feed(history_size=5, history_max_bytes=1 << 20,
                source_sections={"prometheus": ("system", "alerts"), "process": ("application",)})
    e = entry(7)
    data = {"system": {"pad": ""}, "application": {"activeConnections": 1}}
    feed.append(e, data)
    full = orjson.loads(e.encode())
    point = {"seq": 7, "timestamp": "t7", "rate": None, "p95": None, "rss": None, "cpu": None, "conns": 1.0,
             "appts": None, "hour_observed": None, "hour_expected": None}
    assert full == {"type": "metrics_update", "seq": 7, "epoch": "e", "timestamp": "t7", "data": data,
                    "sources": {"prometheus": {"status": "ok"}, "process": {"status": "ok"}}, "point": point}
    app_only = orjson.loads(e.encode(("application",), feed.source_sections))
    assert app_only["data"] == {"application": {"activeConnections": 1}}
    assert app_only["sources"] == {"process": {"status": "ok"}}  # another source's error text never leaks
    # The chart point (the one definition the page plots) is filtered like the sections.
    assert app_only["point"] == {"seq": 7, "timestamp": "t7", "rss": None, "cpu": None, "conns": 1.0}
    assert e.encoded_size() == len(e.encode()) and feed.bytes == e.size


def test_older_or_repeated_seq_is_ignored_and_a_new_epoch_starts_over():
    feed = Feed(history_size=10, history_max_bytes=1 << 20, source_sections={})
    for seq in (1, 2, 3):
        feed.append(entry(seq), {})
    assert not feed.append(entry(3), {}) and not feed.append(entry(2), {})
    assert feed.append(entry(1, epoch="f"), {})  # the sequence restarted
    assert [(x.epoch, x.seq) for x in feed.history] == [("f", 1)] and feed.seq == 1


def test_chart_points_are_what_the_page_plots():
    data = {"system": {"requestRate": [{"metric": {"job": "api"}, "value": [0, "1.5"]},
                                       {"metric": {"job": "api"}, "value": [0, "2.5"]},
                                       {"metric": {"job": "web"}, "value": [0, "NaN"]}],
                       "responseTime": [{"metric": {"job": "api"}, "value": [0, "0.2"]},
                                        {"metric": {"job": "api"}, "value": [0, "0.4"]}]},
            "application": {"memoryUsage": {"rss": 10}, "cpuPercent": 3.5, "activeConnections": 2},
            "business": {"appointments": {"total": 9}}}
    assert chart_point(4, "t", data) == {"seq": 4, "timestamp": "t", "rate": {"api": 4.0}, "p95": {"api": 0.4},
                                         "rss": 10.0, "cpu": 3.5, "conns": 2.0, "appts": 9.0,
                                         "hour_observed": None, "hour_expected": None}


def test_chart_point_carries_the_expected_band_pro_rated_by_the_hour_passed():
    data = {"business": {"appointments": {"total": 9},
                         "expected": {"hour": 40, "observed": 3, "elapsed": 0.25, "weeks": 4}}}
    point = chart_point(5, "t", data)
    assert (point["hour_observed"], point["hour_expected"]) == (3.0, 10.0)
    # No week of history: no expectation, no band (the observed count still plots).
    data["business"]["expected"] = {"hour": None, "observed": 3, "elapsed": 0.25, "weeks": 0}
    assert (chart_point(5, "t", data)["hour_observed"], chart_point(5, "t", data)["hour_expected"]) == (3.0, None)
    # A token without topic business sees neither.
    assert set(filter_point(point, ("system",))) == {"seq", "timestamp", "rate", "p95"}


def test_compressed_pieces_count_in_the_history_byte_budget():
    feed = Feed(history_size=100, history_max_bytes=12_000, source_sections={})
    for seq in range(1, 4):
        feed.append(entry(seq, pad=2_000), {})
    assert feed.bytes == sum(e.size for e in feed.history)
    before = feed.bytes
    latest = feed.latest
    assert latest is not None
    feed.attach(latest, 15, latest.compress(15))
    feed.attach(latest, 15, latest.compress(15))  # once per window
    added = sum(map(len, latest.deflated[15].values()))
    assert feed.bytes == before + added == sum(e.size for e in feed.history)
    for seq in range(4, 8):  # compressed pieces push older entries out like any other bytes
        e = entry(seq, pad=2_000)
        feed.attach(e, 15, e.compress(15))
        feed.attach(e, 9, e.compress(9))
        feed.append(e, {})
    assert feed.bytes <= 12_000 and feed.bytes == sum(e.size for e in feed.history)
