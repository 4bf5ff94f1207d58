"""The stream entry format during a rolling update, against a real redis-server (hub.stream_format).

A collector of this version writes format 2 (`format`, `index` beside format 1's fields); a replica of
the previous version, whose reading is frozen in tests/support/stream_v1.py, serves the same bytes
from it. A follower of this version serves a stream that goes from a previous collector's format-1
entries to this version's without a gap, and installs format 2 without parsing it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from hub.app import create_app
from hub.context import HUB
from hub.feed import Feed, chart_point
from hub.metrics import STREAM_REJECT_REASONS
from hub.redis_scripts import CHECK
from hub.stream_check import judge
from hub.stream_format import PieceData
from tests.support import stream_v1
from tests.support.aio import sample, wait_for
from tests.support.cluster import Collector, snapshot
from tests.support.redis import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.untimed  # no timing asserted: left out of CI's hog pass

STREAM = "{hub}:snapshots"


def cluster_config(make_config: Callable[..., Any], url: str) -> Any:
    return make_config({"cluster": {"redis_url": url}})


def rejected(app: Any) -> dict[str, float]:
    return {reason: sample(app[HUB].metrics, "hub_cluster_rejected_entries_total", reason=reason)
            for reason in STREAM_REJECT_REASONS}


async def test_a_replica_of_the_previous_version_serves_what_this_collector_publishes(
        redis_server: RedisServer, aiohttp_client, make_config) -> None:
    client = await aiohttp_client(create_app(cluster_config(make_config, redis_server.url)))
    st = client.app[HUB]
    await wait_for(lambda: st.feed.seq >= 3, timeout=10, what="three snapshots")
    r = Redis.from_url(redis_server.url)
    try:
        entries = await r.xrange(STREAM)
        counter, *recorded = await r.register_script(CHECK)(keys=["{hub}:seq", "{hub}:snapshots:ids"],
                                                            args=[entry_id for entry_id, _ in entries])
    finally:
        await r.aclose()
    old_feed = Feed(history_size=100, history_max_bytes=1 << 30, source_sections={})
    served = {e.seq: e for e in st.feed.history}
    for (_id, fields), ok in zip(entries, recorded, strict=True):
        assert fields[b"format"] == b"2" and set(fields) == stream_v1.FIELDS | {b"format", b"index"}
        # The previous version's check (its fields and the same CHECK script) accepts the entry...
        assert judge({k: v for k, v in fields.items() if k in stream_v1.FIELDS}, int(counter), ok == 1) is None
        old = stream_v1.read(fields)
        assert old is not None
        entry, data, statuses = old
        assert old_feed.append(entry, data)
        # ...and its clients get the very bytes this version's clients get, chart point included.
        if entry.seq in served:
            assert entry.encode() == served[entry.seq].encode()
            assert entry.point == served[entry.seq].point
        assert statuses and all(s in ("ok", "disabled") for s in statuses.values())
    assert set(served) <= {e.seq for e in old_feed.history} and len(served) >= 3
    assert rejected(client.app) == dict.fromkeys(STREAM_REJECT_REASONS, 0.0)


async def test_a_follower_serves_a_rolling_update_from_a_previous_collector_to_this_one(
        redis_server: RedisServer, aiohttp_client, make_config) -> None:
    app = create_app(cluster_config(make_config, redis_server.url), role="edge")
    client = await aiohttp_client(app)
    st = app[HUB]
    r = Redis.from_url(redis_server.url)
    datas = [{"application": {"cpuPercent": float(i), "memoryUsage": {"rss": 1000 * i}},
              "system": {"requestRate": [{"metric": {"job": "api"}, "value": [1, str(i)]}]}} for i in range(1, 7)]
    try:
        c = await Collector(r).lead()
        for data in datas[:3]:  # the previous version's collector: format 1
            await c.publish(data=data)
        await wait_for(lambda: st.feed.seq == 3, timeout=10, what="the format-1 entries")
        async with client.ws_connect("/ws") as ws:
            first = orjson.loads((await ws.receive(timeout=10)).data)
            assert (first["type"], first["seq"], first["data"]) == ("metrics_update", 3, datas[2])
            for data in datas[3:]:  # the collector of this version took over: format 2
                await c.publish(data=data, indexed=True)
            updates = [orjson.loads((await ws.receive(timeout=10)).data) for _ in range(3)]
        fields = [f for _id, f in await r.xrange(STREAM)]
    finally:
        await r.aclose()
    assert [f.get(b"format") for f in fields] == [None] * 3 + [b"2"] * 3
    assert [(m["type"], m["seq"], m["data"]) for m in updates] == [
        ("metrics_update", seq, datas[seq - 1]) for seq in (4, 5, 6)]
    ts = "2026-01-01T00:00:00.000Z"
    assert [m["point"] for m in updates] == [chart_point(seq, ts, datas[seq - 1]) for seq in (4, 5, 6)]
    # Every snapshot sent is the collector's JSON byte for byte (plus the point).
    for entry in st.feed.history:
        assert entry.encode().replace(b',"point":' + orjson.dumps(entry.point), b"") == snapshot(
            entry.seq, c.epoch, data=datas[entry.seq - 1])
    assert [e.seq for e in st.feed.history] == [1, 2, 3, 4, 5, 6]
    assert st.publisher.ready and not st.publisher.stalled()
    assert rejected(app) == dict.fromkeys(STREAM_REJECT_REASONS, 0.0)


async def test_a_follower_installs_format_2_without_parsing_it(redis_server: RedisServer, aiohttp_client,
                                                               make_config) -> None:
    # The broadcaster gets, for a format-2 entry, data whose sections are parsed only when read (the
    # point came with the entry); for a format-1 entry, the parsed snapshot, as before.
    app = create_app(cluster_config(make_config, redis_server.url), role="edge")
    await aiohttp_client(app)
    st = app[HUB]
    r = Redis.from_url(redis_server.url)
    try:
        c = await Collector(r).lead()
        await c.publish(data={"application": {"cpuPercent": 1.0}}, indexed=True)
        await wait_for(lambda: st.feed.seq == 1, timeout=10, what="the first entry")
        received: list[Any] = []
        original = st.publisher.deliver

        async def spy(entry: Any, data: Any, statuses: Any) -> None:
            received.append(data)
            await original(entry, data, statuses)

        st.publisher.deliver = spy  # type: ignore[method-assign]
        await c.publish(data={"application": {"cpuPercent": 2.0}}, indexed=True)
        await c.publish(data={"application": {"cpuPercent": 3.0}})
        await wait_for(lambda: st.feed.seq == 3, timeout=10, what="the next entries")
    finally:
        await r.aclose()
    assert [type(d) for d in received] == [PieceData, dict]
    assert received[0]["application"] == {"cpuPercent": 2.0}
    assert [e.point["cpu"] for e in st.feed.history if e.point] == [1.0, 2.0, 3.0]
