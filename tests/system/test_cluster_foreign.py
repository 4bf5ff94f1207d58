"""Foreign entries in the snapshot stream, against a real redis-server: replicas skip and count them.

Anyone who shares the Redis and the key prefix can `XADD` to `{hub}:snapshots`. One entry with the
current epoch and seq + 100000 used to freeze every replica (each then dropped the collector's entries
as "not newer") while `/ready` said 200. Replicas now accept only entries the publish script wrote
under the lease with a seq not above `{hub}:seq`, and a replica whose feed goes silent while Redis
answers says `stalled` (503).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from hub.app import create_app
from hub.cluster import STALL_INTERVALS
from hub.context import HUB
from hub.metrics import STREAM_REJECT_REASONS
from hub.redis_scripts import RECORD_SLACK
from tests.support.aio import sample, wait_for
from tests.support.cluster import Collector, snapshot
from tests.support.redis import RedisServer, redis_server  # noqa: F401

STREAM = "{hub}:snapshots"
INTERVAL = 0.2  # tests/support/aio.py TEST_BASE


def cluster_config(make_config: Callable[..., Any], url: str, **over: Any) -> Any:
    return make_config({"cluster": {"redis_url": url, **over.pop("cluster", {})}, **over})


class Watcher:
    """A WebSocket client recording every metrics_update it receives (and when)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.updates: list[dict[str, Any]] = []
        self.arrivals: list[float] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            m = orjson.loads(msg.data)
            if m.get("type") == "metrics_update":
                self.updates.append(m)
                self.arrivals.append(time.monotonic())

    @property
    def seqs(self) -> list[int]:
        return [m["seq"] for m in self.updates]

    async def close(self) -> None:
        await self.ws.close()
        await self.task


def assert_contiguous(seqs: list[int]) -> None:
    assert seqs, "no snapshots"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gap or reorder in {seqs}"


def rejected(app: Any) -> dict[str, float]:
    return {reason: sample(app[HUB].metrics, "hub_cluster_rejected_entries_total", reason=reason)
            for reason in STREAM_REJECT_REASONS}


async def newest(r: Redis) -> tuple[int, str, dict[str, Any]]:
    """(seq, epoch, parsed data) of the newest entry in the stream."""
    [(_id, fields)] = await r.xrevrange(STREAM, count=1)
    return int(fields[b"seq"]), fields[b"epoch"].decode(), orjson.loads(fields[b"data"])


async def test_foreign_entries_are_skipped_and_every_replica_keeps_every_tick(
        redis_server: RedisServer, aiohttp_client, make_config, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hub.stream_check")
    conf = cluster_config(make_config, redis_server.url)
    leader = await aiohttp_client(create_app(conf))
    edge = await aiohttp_client(create_app(conf, role="edge"))
    apps = [leader.app, edge.app]
    leader_id = leader.app[HUB].publisher.replica
    watchers = [Watcher(await c.ws_connect("/ws")) for c in (leader, edge)]
    await wait_for(lambda: all(len(w.updates) >= 3 for w in watchers), what="three ticks on both replicas")
    r = Redis.from_url(redis_server.url)
    try:
        seq, epoch, snap = await newest(r)
        forged = {**snap, "data": {"forged": {"by": "intruder"}}}

        def entry(seq: int, epoch: str, replica: str) -> dict[str, Any]:
            data = orjson.dumps({**forged, "seq": seq, "epoch": epoch})
            return {"seq": seq, "replica": replica, "epoch": epoch, "size": len(data), "data": data}

        # Plain XADDs, as anyone sharing the Redis and the key prefix can make them, twice each kind:
        for n in range(2):
            # the reproduction: the current epoch, the collector's own replica id, seq + 100000
            await r.xadd(STREAM, entry(seq + 100_000 + n, epoch, leader_id))
            # a replica that never held the lease, a seq the counter covers, another epoch (which
            # would make every replica drop its history and restart the numbering)
            await r.xadd(STREAM, entry(1 + n, "forged-epoch", "intruder"))
            # garbage: no fields of an entry; a seq that is no number, an escape sequence as replica
            await r.xadd(STREAM, {"data": b"\xff\xfe not json"})
            await r.xadd(STREAM, {"seq": "12x", "replica": "\x1b[31mred", "epoch": epoch, "data": "{"})
        after = max(max(w.seqs) for w in watchers)
        await wait_for(lambda: all(len([s for s in w.seqs if s > after]) >= 6 for w in watchers), timeout=10,
                       what="six more ticks on both replicas")
        for w in watchers:
            assert_contiguous(w.seqs)
            assert {m["epoch"] for m in w.updates} == {epoch}
            assert not any("forged" in m["data"] for m in w.updates)
        for app in apps:
            assert rejected(app) == {"malformed": 4, "seq_ahead": 2, "unrecorded": 2}, rejected(app)
            assert app[HUB].publisher.ready and not app[HUB].publisher.stalled()
        for c in (leader, edge):
            resp = await c.get("/ready")
            assert resp.status == 200 and (await resp.json())["status"] == "ready"
            text = await (await c.get("/metrics")).text()
            assert 'hub_cluster_rejected_entries_total{reason="seq_ahead"} 2.0' in text
        # Logged once per reason and replica, not once per entry; the foreign text escaped.
        lines = [rec.getMessage() for rec in caplog.records if "skipped stream entry" in rec.getMessage()]
        assert sorted(line.split(" (", 1)[1].split(":", 1)[0] for line in lines) == \
            sorted(list(STREAM_REJECT_REASONS) * 2), lines
        assert "\x1b" not in caplog.text
    finally:
        await r.aclose()
        for w in watchers:
            await w.close()


async def test_an_entry_with_the_last_possible_id_does_not_end_the_stream(redis_server: RedisServer,
                                                                        aiohttp_client, make_config) -> None:
    # After an entry with the largest id a stream can hold, every later XADD fails ("exhausted"): the
    # publish script then refused every snapshot. Now it starts the stream afresh, and the replicas,
    # whose cursor is now above the stream's newest entry, notice it and read the new stream back.
    conf = cluster_config(make_config, redis_server.url)
    leader = await aiohttp_client(create_app(conf))
    edge = await aiohttp_client(create_app(conf, role="edge"))
    watchers = [Watcher(await c.ws_connect("/ws")) for c in (leader, edge)]
    await wait_for(lambda: all(len(w.updates) >= 3 for w in watchers), what="three ticks on both replicas")
    r = Redis.from_url(redis_server.url)
    try:
        last = f"{2**64 - 1}-{2**64 - 1}"
        assert await r.xadd(STREAM, {"data": "x"}, id=last) == last.encode()
        after = max(max(w.seqs) for w in watchers)
        await wait_for(lambda: all(len([s for s in w.seqs if s > after]) >= 6 for w in watchers), timeout=15,
                       what="six more ticks on both replicas")
        [(first, _)] = await r.xrange(STREAM, count=1)
        assert first != last.encode()  # the stream was started afresh
    finally:
        await r.aclose()
        for w in watchers:
            await w.close()
    for w in watchers:
        assert_contiguous(w.seqs)
    for c in (leader, edge):
        assert rejected(c.app) == {"malformed": 1, "seq_ahead": 0, "unrecorded": 0}
        await wait_for(lambda c=c: c.app[HUB].publisher.ready and not c.app[HUB].publisher.stalled())


async def test_a_replica_catching_up_skips_foreign_entries(redis_server: RedisServer, aiohttp_client,
                                                           make_config) -> None:
    # The reconnect path (hub.catchup): a replayed entry claiming a seq the replica holds used to end
    # the reading early, so the entries before it in the stream were never delivered (a gap).
    admin = Redis.from_url(redis_server.url)
    await admin.execute_command("ACL", "SETUSER", "edge", "on", ">edge-pass", "~*", "&*", "+@all")
    edge_url = f"redis://edge:edge-pass@127.0.0.1:{redis_server.port}/0"
    c = await Collector(admin).lead()
    watcher = None
    try:
        for _ in range(5):
            await c.publish()
        app = create_app(cluster_config(make_config, edge_url), role="edge")
        client = await aiohttp_client(app)
        st = app[HUB]
        await wait_for(lambda: st.feed.seq == 5, what="the edge's first sync")
        watcher = Watcher(await client.ws_connect("/ws"))
        await wait_for(lambda: watcher.seqs == [5], what="the snapshot on connect")

        await admin.execute_command("ACL", "SETUSER", "edge", "off")
        await admin.execute_command("CLIENT", "KILL", "USER", "edge")
        await wait_for(lambda: st.publisher.redis_state == "down", what="the edge to see Redis down")
        for _ in range(3):
            await c.publish()
        # While the edge is away: a replay of the snapshot it holds, a seq far ahead, garbage.
        await admin.xadd(STREAM, {"seq": 5, "replica": "test-collector", "epoch": c.epoch,
                                  "data": snapshot(5, c.epoch, data={"forged": {}})})
        await admin.xadd(STREAM, {"seq": 100_008, "replica": "test-collector", "epoch": c.epoch,
                                  "data": snapshot(100_008, c.epoch, data={"forged": {}})})
        await admin.xadd(STREAM, {"seq": "-", "data": "[]"})
        await admin.execute_command("ACL", "SETUSER", "edge", "on")
        await wait_for(lambda: st.feed.seq == 8, timeout=10, what="the edge to catch up")
        await c.publish()
        await wait_for(lambda: watcher.seqs[-1:] == [9], what="the next live snapshot")
    finally:
        await admin.aclose()
        if watcher is not None:
            await watcher.close()
    assert watcher.seqs == [5, 6, 7, 8, 9]
    assert not any("forged" in m["data"] for m in watcher.updates)
    assert [e.seq for e in st.feed.history] == list(range(1, 10))
    assert rejected(app) == {"malformed": 1, "seq_ahead": 1, "unrecorded": 1}


async def test_the_publish_script_records_what_it_wrote_and_no_more(redis_server: RedisServer) -> None:
    # The record replicas check: every entry the script wrote while it is in the stream (and a few
    # trimmed ones), never a plain XADD's, bounded by the stream's length.
    r = Redis.from_url(redis_server.url)
    try:
        c = await Collector(r).lead()
        ids = [await c.publish(maxlen=5) for _ in range(3)]
        foreign = await r.xadd(STREAM, {"seq": 1, "replica": "test-collector", "epoch": c.epoch, "data": "{}"})
        ids += [await c.publish(maxlen=5) for _ in range(40)]
        recorded = await r.zrange("{hub}:snapshots:ids", 0, -1)
        in_stream = [entry_id for entry_id, _ in await r.xrange(STREAM)]
        assert len(in_stream) == 5 and foreign not in recorded
        assert set(in_stream) <= set(recorded)
        assert recorded == ids[-(5 + RECORD_SLACK):]  # the newest ones, in publish order
    finally:
        await r.aclose()


async def test_a_replica_whose_feed_stalls_says_so_on_ready(redis_server: RedisServer, aiohttp_client,
                                                             make_config) -> None:
    # One health check (refused at once): every replica exports its state, except while stalled.
    conf = cluster_config(make_config, redis_server.url,
                          sources={"health": {"enabled": True, "checks": {"backend": "http://127.0.0.1:9/"},
                                              "failures_before_down": 1}})
    leader = await aiohttp_client(create_app(conf))
    edge = await aiohttp_client(create_app(conf, role="edge"))
    watchers = [Watcher(await c.ws_connect("/ws")) for c in (leader, edge)]
    await wait_for(lambda: all(len(w.updates) >= 3 for w in watchers), what="three ticks on both replicas")

    async def check_up(c: Any) -> list[str]:
        text = await (await c.get("/metrics")).text()
        return [line for line in text.splitlines() if line.startswith("hub_health_check_up{")]

    for c in (leader, edge):
        assert (await c.get("/ready")).status == 200
        assert await check_up(c) == ['hub_health_check_up{check="backend"} 0.0']
    r = Redis.from_url(redis_server.url)
    try:
        # A collector that holds the lease and publishes nothing (hung): Redis answers, the feed is silent.
        await r.set("{hub}:leader", "hung-collector", px=60_000)
        # From here on the publish script refuses the old leader: the stream's newest entry is the last.
        last = (await newest(r))[0]
        await wait_for(lambda: all(w.seqs[-1] == last for w in watchers), what="the last snapshot on both")
        quiet_from = max(max(w.arrivals) for w in watchers)

        async def stalled() -> bool:
            return all([(await c.get("/ready")).status == 503 for c in (leader, edge)])

        await wait_for(stalled, timeout=10, interval=0.05, what="503 on both replicas")
        waited = time.monotonic() - quiet_from
        for c in (leader, edge):
            resp = await c.get("/ready")
            body = await resp.json()
            assert resp.status == 503 and body["status"] == "stalled", body
            assert body["cluster"]["redis"] == "up" and body["seq"] == last
            assert resp.headers["Retry-After"] == "1"
            assert await check_up(c) == []  # what it last served may be outdated: no state claimed
        # Not before STALL_INTERVALS intervals of silence (less the time a snapshot takes to a client).
        assert waited >= STALL_INTERVALS * INTERVAL - 0.1, f"stalled after {waited:.2f} s of silence"
        assert max(max(w.seqs) for w in watchers) == last

        # The hung collector goes away: a replica takes over, the feed goes on, both are ready again.
        await r.delete("{hub}:leader")
        await wait_for(lambda: all(max(w.seqs) >= last + 2 for w in watchers), timeout=10,
                       what="two more ticks on both replicas")
        for c in (leader, edge):
            resp = await c.get("/ready")
            assert resp.status == 200 and (await resp.json())["status"] == "ready"
            assert await check_up(c) == ['hub_health_check_up{check="backend"} 0.0']
        for w in watchers:
            assert_contiguous(w.seqs)
    finally:
        await r.aclose()
        for w in watchers:
            await w.close()
