"""Scale-out through Redis with a real redis-server: election, one collector, failover, Redis outages.

The in-process tests run hub apps in the test's loop; the replica test runs three `hub serve`
processes against one Redis and one real Prometheus, with WebSocket clients on each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from hub.app import create_app
from hub.cluster import RedisPublisher
from hub.context import HUB
from tests.support.aio import recv_json, recv_type, wait_for
from tests.support.hubproc import HubProcess
from tests.support.prom import start_prometheus
from tests.support.mongo import mongo_server_fn  # noqa: F401
from tests.support.redis import RedisServer, redis_server, start_redis  # noqa: F401

INTERVAL = 0.5


def cluster_config(make_config: Callable[..., Any], url: str, **over: Any) -> Any:
    return make_config({"cluster": {"redis_url": url, **over.pop("cluster", {})}, **over})


def metric(text: str, name: str, labels: str = "") -> float | None:
    """The value of one sample in Prometheus exposition `text` (None if absent)."""
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" (\S+)$"
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else None


async def stream_seqs(url: str, prefix: str = "hub") -> list[tuple[int, str]]:
    """(seq, replica) of every entry in the snapshot stream, oldest first."""
    r = Redis.from_url(url)
    try:
        entries = await r.xrange(f"{{{prefix}}}:snapshots")
    finally:
        await r.aclose()
    return [(int(f[b"seq"]), f[b"replica"].decode()) for _id, f in entries]


# ----------------------------------------------------------------------------- in process


async def test_leader_publishes_through_redis_and_reports_status(redis_server, aiohttp_client, make_config):
    app = create_app(cluster_config(make_config, redis_server.url))
    client = await aiohttp_client(app)
    st = app[HUB]
    assert isinstance(st.publisher, RedisPublisher)
    await wait_for(lambda: st.feed.seq >= 3)
    resp = await client.get("/ready")
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "ready"
    assert body["cluster"] == {"redis": "up", "role": "all", "leader": True, "replica": st.publisher.replica,
                               "error": None}
    seqs = await stream_seqs(redis_server.url)
    # The stream holds what the feed delivered: the leader delivers its own snapshots via Redis.
    assert [s for s, _ in seqs] == list(range(1, seqs[-1][0] + 1))
    assert {r for _, r in seqs} == {st.publisher.replica}
    text = await (await client.get("/metrics")).text()
    assert metric(text, "hub_cluster_leader") == 1.0
    assert metric(text, "hub_cluster_redis_up") == 1.0
    ws = await client.ws_connect("/ws")
    first = await recv_type(ws, "metrics_update")
    nxt = await recv_type(ws, "metrics_update")
    assert nxt["seq"] == first["seq"] + 1
    await ws.close()


async def test_new_replica_serves_history_from_redis_at_once(redis_server, aiohttp_client, make_config):
    leader = create_app(cluster_config(make_config, redis_server.url, broadcast={"interval": 0.1}))
    await aiohttp_client(leader)
    await wait_for(lambda: leader[HUB].feed.seq >= 5)
    # An edge replica joining later: its history is the stream's, before any new tick arrives.
    edge = create_app(cluster_config(make_config, redis_server.url), role="edge")
    client = await aiohttp_client(edge)
    est = edge[HUB]
    await wait_for(lambda: est.publisher.ready)
    ws = await client.ws_connect("/ws?history=5")
    hist = await recv_type(ws, "history")
    got = [item["seq"] for item in hist["items"]]
    stream = [s for s, _ in await stream_seqs(redis_server.url)]
    assert len(got) == 5 and got == sorted(got)
    assert set(got) <= set(stream)
    assert est.publisher.status()["leader"] is False and est.publisher.status()["role"] == "edge"
    # The edge collected nothing itself, yet mirrors the source status it serves.
    text = await (await client.get("/metrics")).text()
    assert metric(text, "hub_collect_duration_seconds_count", 'source="process"') is None
    assert metric(text, "hub_source_up", 'source="process"') == 1.0
    await ws.close()


async def test_edge_alone_never_collects(redis_server, aiohttp_client, make_config):
    app = create_app(cluster_config(make_config, redis_server.url), role="edge")
    client = await aiohttp_client(app)
    st = app[HUB]
    await wait_for(lambda: st.publisher.redis_state == "up")
    # Not a sleep: the edge's own reads show the time passing. Its second XREAD starts once the
    # first has blocked for its whole BLOCK_MS (2 s, ten intervals) and found nothing.
    r = Redis.from_url(redis_server.url)
    try:
        async def two_xreads() -> bool:
            stats = await r.info("commandstats")
            return int(stats.get("cmdstat_xread", {}).get("calls", 0)) >= 2

        await wait_for(two_xreads, timeout=10, what="two XREADs by the edge")
    finally:
        await r.aclose()
    assert st.feed.seq == 0 and not st.publisher.ready
    assert await stream_seqs(redis_server.url) == []
    resp = await client.get("/ready")
    assert resp.status == 503
    assert (await resp.json())["cluster"]["role"] == "edge"


async def test_redis_restart_keeps_clients_and_seq_never_goes_back(redis_server, aiohttp_client, make_config):
    app = create_app(cluster_config(make_config, redis_server.url))
    client = await aiohttp_client(app)
    st = app[HUB]
    ws = await client.ws_connect("/ws")
    await recv_type(ws, "metrics_update")
    await wait_for(lambda: st.feed.seq >= 3)

    redis_server.stop()  # SIGKILL; nothing was persisted, so it comes back empty
    # The leader steps down at its next renewal (a quarter of the lease): it cannot prove ownership.
    await wait_for(lambda: st.publisher.redis_state == "down" and not st.publisher.leader)
    last = st.feed.seq
    resp = await client.get("/ready")
    body = await resp.json()
    assert resp.status == 200, body  # still serving its clients and history
    assert body["status"] == "degraded"
    assert body["cluster"]["redis"] == "down" and body["cluster"]["leader"] is False
    assert body["cluster"]["error"].startswith("ConnectionError")
    text = await (await client.get("/metrics")).text()
    assert metric(text, "hub_cluster_redis_up") == 0.0
    assert metric(text, "hub_cluster_leader") == 0.0
    # The client is still connected: a ping is answered.
    await ws.send_str('{"type":"ping"}')
    assert (await recv_type(ws, "pong"))["seq"] == last

    redis_server.start()
    seqs: list[int] = []
    while len(seqs) < 3:
        m = await recv_json(ws, timeout=10)
        if m["type"] == "metrics_update":
            seqs.append(m["seq"])
    # An empty Redis does not reset seq: it continues right after what clients saw.
    assert seqs == [last + 1, last + 2, last + 3]
    assert st.publisher.status()["redis"] == "up" and st.publisher.leader
    assert (await client.get("/ready")).status == 200
    await ws.close()


async def test_leader_that_lost_its_lease_cannot_publish(redis_server, aiohttp_client, make_config):
    # Another replica holding the lease (as after a long pause of this one) fences this leader out.
    app = create_app(cluster_config(make_config, redis_server.url))
    await aiohttp_client(app)
    st = app[HUB]
    await wait_for(lambda: st.publisher.leader and st.feed.seq >= 2)
    r = Redis.from_url(redis_server.url)
    try:
        await r.set("{hub}:leader", "another-replica", px=1500)
        await wait_for(lambda: not st.publisher.leader)
        fenced_at = st.feed.seq
        stolen = await r.pttl("{hub}:leader")
        assert stolen > 0 and await r.get("{hub}:leader") == b"another-replica"
        # While the other replica owns the lease, this one publishes nothing: checked once the lease
        # has almost run out (Redis's clock, not a sleep standing in for it) ...
        async def lease_nearly_over() -> bool:
            return 0 < await r.pttl("{hub}:leader") < 0.2 * stolen

        await wait_for(lease_nearly_over, timeout=5, interval=0.01, what="the stolen lease nearly over")
        assert st.feed.seq == fenced_at
        # ... and when it lapses, this one takes over and continues the same sequence.
        await wait_for(lambda: st.publisher.leader and st.feed.seq >= fenced_at + 2)
    finally:
        await r.aclose()
    seqs = [e.seq for e in st.feed.history]
    assert seqs == list(range(1, seqs[-1] + 1))


async def test_a_failed_publish_leaves_no_gap(redis_server, aiohttp_client, make_config):
    app = create_app(cluster_config(make_config, redis_server.url))
    await aiohttp_client(app)
    st = app[HUB]
    await wait_for(lambda: st.publisher.leader and st.feed.seq >= 2)
    # Fault injection (a mock of one failure; real Redis otherwise): the connection drops before
    # the publish script runs, after the snapshot got its seq.
    from redis.exceptions import ConnectionError as RedisConnectionError

    real, failed = st.publisher._publish, []

    async def flaky(**kwargs: Any) -> Any:
        if not failed:
            failed.append(int(kwargs["args"][2]))
            raise RedisConnectionError("injected: connection lost before the script ran")
        return await real(**kwargs)

    st.publisher._publish = flaky
    await wait_for(lambda: failed and st.feed.seq >= failed[0] + 2)
    seqs = [e.seq for e in st.feed.history]
    assert seqs == list(range(1, seqs[-1] + 1))  # the unpublished seq is reused, not skipped
    assert st.publisher.leader and st.publisher.redis_state == "up"


@pytest.mark.parametrize("where", ["_publish", "xread"])
async def test_a_cancellation_lost_inside_a_redis_command_does_not_hang_the_shutdown(
        where: str, redis_server, aiohttp_client, make_config):
    """Fault injection (a mock of one redis-py failure; real Redis otherwise): the command swallows the
    cancellation that lands in it and returns as if nothing happened, as redis-py can. The collector
    (`_publish`) and the stream reader (`xread`) each end all the same. (The lease loop has the same
    guard; a lost cancellation there is masked by the second one `run` sends it, so no case for it.)"""
    app = create_app(cluster_config(make_config, redis_server.url))
    client = await aiohttp_client(app)
    pub = app[HUB].publisher
    await wait_for(lambda: pub.leader and app[HUB].feed.seq >= 2)
    owner = pub._reader if where == "xread" else pub
    real, inside, armed = getattr(owner, where), asyncio.Event(), [True]
    returns = {"_publish": [1, b"0-1"], "xread": None}[where]

    async def swallowing(*args: Any, **kwargs: Any) -> Any:
        if not armed:
            return await real(*args, **kwargs)
        armed.clear()
        inside.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()  # until the shutdown cancels it ...
        return returns  # ... and the cancellation is lost

    def loops() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name().startswith("hub-cluster") and not t.done()]

    setattr(owner, where, swallowing)
    await wait_for(inside.is_set, what=f"the shutdown to find a task inside {where}")
    # Not asyncio.timeout around the close: the cleanup under test could swallow that cancellation too.
    closing = asyncio.create_task(client.close())
    done, _ = await asyncio.wait({closing}, timeout=10)
    left = [t.get_name() for t in loops()]
    for task in loops():  # if it hung or left a loop behind: end them, for the fixture's teardown
        task.cancel()
    await closing
    assert closing in done, "the shutdown hung"
    assert not left, f"still running after the shutdown: {left}"


async def test_ready_is_503_when_redis_is_down_from_the_start(aiohttp_client, make_config, tmp_path):
    from tests.support import free_port

    app = create_app(cluster_config(make_config, f"redis://127.0.0.1:{free_port()}/0"))
    client = await aiohttp_client(app)
    st = app[HUB]
    await wait_for(lambda: st.publisher.redis_state == "down")
    resp = await client.get("/ready")
    body = await resp.json()
    assert resp.status == 503  # nothing to serve yet
    assert body["cluster"]["redis"] == "down" and "connecting to 127.0.0.1" in body["cluster"]["error"]
    assert st.feed.seq == 0


async def test_redis_password_never_reaches_logs_status_or_metrics(aiohttp_client, make_config, tmp_path, caplog):
    server = start_redis(tmp_path / "redis", password="right-horse-battery")
    try:
        caplog.set_level(logging.DEBUG)
        bad = server.url.replace("right-horse-battery", "wrong-hunter2-pass")
        app = create_app(cluster_config(make_config, bad))
        client = await aiohttp_client(app)
        st = app[HUB]
        await wait_for(lambda: st.publisher.redis_state == "down")
        body = await (await client.get("/ready")).text()
        text = await (await client.get("/metrics")).text()
        assert st.publisher.error  # the reason is reported ...
        for out in (body, text, caplog.text):
            assert "wrong-hunter2-pass" not in out  # ... without the password
        assert ":***@127.0.0.1" in caplog.text  # the URL is logged, redacted

        good = create_app(cluster_config(make_config, server.url))
        gclient = await aiohttp_client(good)
        await wait_for(lambda: good[HUB].publisher.ready)
        assert (await gclient.get("/ready")).status == 200
        assert "right-horse-battery" not in caplog.text
    finally:
        server.stop()


# ----------------------------------------------------------------------------- three processes


class Recorder:
    """A WebSocket client on one replica recording (seq, arrival time) of every metrics_update."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url
        self.seqs: list[int] = []
        self.arrivals: dict[int, float] = {}
        self.closed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Recorder:
        self.ws = await self.session.ws_connect(self.url + "/ws", heartbeat=None)
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                m = orjson.loads(msg.data)
                if m.get("type") == "metrics_update":
                    self.seqs.append(m["seq"])
                    self.arrivals[m["seq"]] = time.monotonic()
        finally:
            self.closed.set()

    async def stop(self) -> None:
        await self.ws.close()
        if self.task is not None:
            await self.task


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.read().decode()


def query_requests(prom_url: str) -> float:
    """Requests Prometheus has answered on /api/v1/query, read from its own /metrics."""
    text = get_text(prom_url + "/metrics")
    return sum(float(v) for v in re.findall(
        r'^prometheus_http_requests_total\{[^}]*handler="/api/v1/query"[^}]*\} (\S+)$', text, re.M))


def assert_contiguous(seqs: list[int]) -> None:
    assert seqs, "no snapshots"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gap or reorder in {seqs}"


async def test_three_replicas_one_collector_failover_and_redis_restart(tmp_path: Path, redis_server: RedisServer):
    # A real Prometheus counts the hubs' queries itself (prometheus_http_requests_total): with one
    # query per tick and alerts off, queries made == snapshots collected, whoever collects them.
    prom = start_prometheus(tmp_path / "prometheus")
    hubs: list[HubProcess] = []
    try:
        config = {
            "broadcast": {"interval": INTERVAL, "heartbeat": 5.0},
            "sources": {"prometheus": {"url": prom.url, "queries": {"up": "up"}, "slo_queries": {}, "alerts": False,
                                       "timeout": 0.3},
                        "business": {"enabled": False}},
            "cluster": {"redis_url": redis_server.url},
        }
        hubs = [HubProcess(config, tmp_path), HubProcess(config, tmp_path),
                HubProcess(config, tmp_path, args=("--role", "edge"))]
        for h in hubs:
            h.start(wait=False)
        for h in hubs:
            await asyncio.to_thread(h.wait_healthy, path="/ready")
        a, b, edge = hubs

        async with aiohttp.ClientSession() as session:
            recs = {h.port: await Recorder(session, h.url).start() for h in hubs}
            await wait_for(lambda: all(len(r.seqs) >= 6 for r in recs.values()), timeout=15)

            # Exactly one collector: one leader, and only its collect counter moves.
            status = {h.port: get_json(h.url + "/ready")[1]["cluster"] for h in hubs}
            leaders = [h for h in hubs if status[h.port]["leader"]]
            assert len(leaders) == 1 and leaders[0] is not edge, status
            leader = leaders[0]
            follower = b if leader is a else a

            def collects(h: HubProcess) -> float:
                return metric(get_text(h.url + "/metrics"), "hub_collect_duration_seconds_count",
                              'source="prometheus"') or 0.0

            before = {h.port: collects(h) for h in hubs}
            q0, s0 = query_requests(prom.url), max(recs[leader.port].seqs)
            await wait_for(lambda: max(recs[leader.port].seqs) >= s0 + 6, timeout=10)
            q1, s1 = query_requests(prom.url), max(recs[leader.port].seqs)
            after = {h.port: collects(h) for h in hubs}
            # One query per snapshot (+1 for a tick in flight at either reading), never one per replica.
            assert abs((q1 - q0) - (s1 - s0)) <= 1, (q0, q1, s0, s1)
            assert after[leader.port] - before[leader.port] >= 5
            assert after[follower.port] == before[follower.port] == 0
            assert after[edge.port] == before[edge.port] == 0

            # Same seq stream, in order, on every replica.
            await wait_for(lambda: all(max(r.seqs) >= s1 for r in recs.values()))
            for r in recs.values():
                assert_contiguous(r.seqs)
                assert s1 in r.seqs

            # Failover: SIGKILL the collector; the other "all" replica takes over.
            old_id = status[leader.port]["replica"]
            last = max(max(recs[h.port].seqs) for h in hubs)
            t_kill = time.monotonic()
            leader.stop(kill=True)
            survivors = [follower, edge]
            entries = await wait_for_new_collector(redis_server.url, old_id, timeout=5)
            new_seq, new_id = entries
            await wait_for(lambda: all(new_seq in recs[h.port].arrivals for h in survivors), timeout=5)
            takeover = min(recs[h.port].arrivals[new_seq] for h in survivors) - t_kill
            assert new_id == status[follower.port]["replica"]
            assert takeover <= 2 * INTERVAL + 0.2, f"takeover took {takeover:.3f} s"
            assert new_seq <= last + 2  # continues: at most the dead leader's in-flight seq is unseen
            await wait_for(lambda: all(max(recs[h.port].seqs) >= new_seq + 3 for h in survivors), timeout=10)
            for h in survivors:
                assert_contiguous(recs[h.port].seqs)
                assert not recs[h.port].closed.is_set()
            assert get_json(follower.url + "/ready")[1]["cluster"]["leader"] is True
            print(f"\nfailover: {takeover * 1000:.0f} ms from SIGKILL to seq {new_seq} "
                  f"(interval {INTERVAL * 1000:.0f} ms)")

            # Redis restart (SIGKILL, comes back empty): clients stay, seq continues where it was.
            redis_server.stop()
            await wait_for(lambda: all(get_json(h.url + "/ready")[1]["cluster"]["redis"] == "down"
                                       for h in survivors), timeout=5)
            for h in survivors:
                code, body = get_json(h.url + "/ready")
                assert code == 200 and body["status"] == "degraded"
                assert metric(get_text(h.url + "/metrics"), "hub_cluster_redis_up") == 0.0
            seen = max(max(recs[h.port].seqs) for h in survivors)
            redis_server.start()
            await wait_for(lambda: all(max(recs[h.port].seqs) >= seen + 3 for h in survivors), timeout=15)
            for h in survivors:
                assert_contiguous(recs[h.port].seqs)
                assert not recs[h.port].closed.is_set()
                assert get_json(h.url + "/ready")[1]["cluster"]["redis"] == "up"
            # Still exactly one collector after the restart, and never the edge.
            assert [h.port for h in survivors if get_json(h.url + "/ready")[1]["cluster"]["leader"]] \
                == [follower.port]
            assert collects(edge) == 0
            for h in survivors:
                await recs[h.port].stop()
    finally:
        for h in hubs:
            h.stop()
        prom.kill()


async def wait_for_new_collector(url: str, old_id: str, *, timeout: float) -> tuple[int, str]:
    """(seq, replica) of the first stream entry published by a replica other than `old_id`."""
    deadline = time.monotonic() + timeout
    while True:
        for seq, rid in await stream_seqs(url):
            if rid != old_id:
                return seq, rid
        if time.monotonic() > deadline:
            raise AssertionError(f"no new collector within {timeout} s")
        await asyncio.sleep(0.02)


async def test_redis_emptied_starts_a_new_epoch_and_no_seq_is_served_twice_within_one(
        redis_server, aiohttp_client, make_config):
    # Bug 4: after Redis came back empty, a replica that was behind (here: a fresh one) could publish
    # a seq that another replica had already served, with other content. Now an emptied Redis means a
    # new epoch, and (epoch, seq) names one snapshot on every replica.
    conf = cluster_config(make_config, redis_server.url, broadcast={"interval": 0.1})
    a = await aiohttp_client(create_app(conf))
    b = await aiohttp_client(create_app(conf, role="edge"))
    seen: dict[tuple[str, int], str] = {}

    async def watch(ws: aiohttp.ClientWebSocketResponse, n: int) -> None:
        for _ in range(n):
            m = await recv_type(ws, "metrics_update")
            key = (m["epoch"], m["seq"])
            assert seen.setdefault(key, m["timestamp"]) == m["timestamp"], f"{key} served with two contents"

    wb = await b.ws_connect("/ws")
    await watch(wb, 8)
    first_epoch = b.app[HUB].feed.epoch
    await a.close()  # the leader goes away (its lease is released) ...
    r = Redis.from_url(redis_server.url)
    try:
        await r.flushall()  # ... and Redis comes back empty
    finally:
        await r.aclose()
    c = await aiohttp_client(create_app(conf))  # a fresh replica, behind everything B served
    await wait_for(lambda: b.app[HUB].feed.epoch not in ("", first_epoch), timeout=15, what="a new epoch")
    wc = await c.ws_connect("/ws")
    await asyncio.gather(watch(wb, 8), watch(wc, 8))
    assert len({e for e, _ in seen}) == 2
    await wb.close()
    await wc.close()


async def test_an_edge_replica_serves_the_business_endpoint(redis_server, mongo_server_fn, aiohttp_client,
                                                            make_config):
    # Bug 3: an edge replica's business source was never started, so /api/metrics/business was 503.
    over = {"sources": {"business": {"enabled": True, "mongodb_uri": mongo_server_fn.uri,
                                     "timeout": 5.0}}}
    edge = create_app(cluster_config(make_config, redis_server.url, **over), role="edge")
    client = await aiohttp_client(edge)
    resp = await client.get("/api/metrics/business?timeRange=24h")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["timeRange"] == "24h" and body["appointments"]["total"] == 0
