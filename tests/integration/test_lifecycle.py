"""Lifecycle, admission and epochs: bugs found by the restructure read, each with its regression test."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import aiohttp
import pytest

from hub.app import create_app
from hub.broadcast import Broadcaster
from hub.client import Client
from hub.context import HUB
from hub.feed import Entry, Feed
from hub.metrics import HubMetrics
from hub.sources.base import Source, SourceResult
from tests.support.aio import recv_json, sample, wait_for
from tests.support.raw import BulkySource, FakeTransport, raw_ws_connect, read_frames_until_close


async def test_a_history_client_that_never_reads_is_counted_bounded_and_evicted(aiohttp_client, make_config):
    # Bug 1: the initial message used to be awaited (drained) before the client joined: a client that
    # never read held its slot forever, invisible to hub_ws_connections and to slow-consumer eviction.
    cfg = make_config({"broadcast": {"interval": 0.1, "history_size": 60,
                                     "max_client_buffer_bytes": 256 * 1024, "heartbeat": 30.0}})
    client = await aiohttp_client(create_app(cfg, extra_sources=[BulkySource(64 * 1024)]))
    hub = client.app[HUB]
    await wait_for(lambda: len(hub.feed.history) >= 30, timeout=20)
    sock = await asyncio.to_thread(raw_ws_connect, client.server.port, rcvbuf=4096, path="/ws?history=60")
    try:
        await wait_for(lambda: sample(hub.metrics, "hub_ws_connections") == 1, what="the client is counted")
        await wait_for(lambda: sample(hub.metrics, "hub_ws_disconnects_total", reason="slow_consumer") == 1,
                       timeout=20, what="the slow-consumer eviction")
        code, backlog = await asyncio.to_thread(read_frames_until_close, sock, timeout=10)
        assert code == 1013
        # The history message obeyed the same byte budget as a broadcast (not 60 x 64 KiB).
        assert backlog <= 256 * 1024 + 3 * 65 * 1024 + 4 * 64 * 1024, backlog
        await wait_for(lambda: hub.admission.open == 0, timeout=10, what="the slot is released")
    finally:
        sock.close()


def test_no_data_frame_after_the_close_started():
    # Bug 2: the raw fan-out write skipped aiohttp's own "closing" guard.
    feed = Feed(history_size=5, history_max_bytes=1 << 20, source_sections={})
    b = Broadcaster(feed=feed, max_client_buffer_bytes=1 << 20, metrics=HubMetrics())
    open_t, closing_t = FakeTransport(), FakeTransport()
    b.add(Client(ws=SimpleNamespace(closed=False), transport=open_t))  # type: ignore[arg-type]
    b.add(Client(ws=SimpleNamespace(closed=True), transport=closing_t))  # type: ignore[arg-type]
    asyncio.run(b.deliver(Entry(seq=1, epoch="e", timestamp="t", sections={}, sources={}), {}))
    assert open_t.written > 0
    assert closing_t.written == 0


class Lifecycle(Source):
    def __init__(self, name: str, log: list[str], *, fail_start: bool = False) -> None:
        self.name, self.sections, self.log, self.fail_start = name, (), log, fail_start

    async def start(self) -> None:
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"start {self.name}")

    async def collect(self, budget: float) -> SourceResult:
        return SourceResult(data={})

    async def close(self) -> None:
        self.log.append(f"close {self.name}")


async def test_sources_started_before_one_that_fails_are_closed(make_config):
    # Bug 5: a later source failing to start left the earlier ones open.
    log: list[str] = []
    app = create_app(make_config(), extra_sources=[Lifecycle("a", log), Lifecycle("b", log, fail_start=True)])
    runner = aiohttp.web.AppRunner(app)
    with pytest.raises(RuntimeError, match="b cannot start"):
        await runner.setup()
    assert log[-2:] == ["start a", "close a"]
    assert "close process" not in log  # (the process source is not a Lifecycle; just the order above)
    await runner.cleanup()


async def test_not_ready_while_ticks_fail_and_ready_after(aiohttp_client, make_config):
    # Bug 5: the hub was marked ready even when the first tick failed.
    app = create_app(make_config({"broadcast": {"interval": 0.1}}))
    hub = app[HUB]
    real = hub.broadcaster.deliver
    fail = {"on": True}

    async def deliver(entry, data):  # type: ignore[no-untyped-def]
        if fail["on"]:
            raise RuntimeError("fan-out exploded")
        return await real(entry, data)

    hub.broadcaster.deliver = deliver  # type: ignore[method-assign]
    client = await aiohttp_client(app)
    await wait_for(lambda: sample(hub.metrics, "hub_tick_failures_total") >= 2)
    resp = await client.get("/ready")
    body = await resp.json()
    assert resp.status == 503 and body["status"] == "failing" and "fan-out exploded" in body["tick_error"]
    fail["on"] = False
    await wait_for(lambda: hub.publisher.ready)
    resp = await client.get("/ready")
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "ready" and "tick_error" not in body
    # No seq was burnt by the failed ticks: the first snapshot clients see is 1.
    assert hub.feed.history[0].seq == 1


async def test_an_evicted_client_counts_until_its_socket_is_gone(aiohttp_client, make_config):
    # Bug 5: an evicted client left the set at once but kept its socket for up to 5 s, uncounted.
    cfg = make_config({"server": {"max_connections": 1},
                       "broadcast": {"interval": 0.1, "max_client_buffer_bytes": 128 * 1024}})
    client = await aiohttp_client(create_app(cfg, extra_sources=[BulkySource(64 * 1024)]))
    hub = client.app[HUB]
    slow = await asyncio.to_thread(raw_ws_connect, client.server.port, rcvbuf=4096)
    try:
        await wait_for(lambda: sample(hub.metrics, "hub_ws_disconnects_total", reason="slow_consumer") == 1,
                       timeout=20)
        assert len(hub.broadcaster.clients) == 0
        # The evicted socket still lingers (it has not read its close frame): the slot is still taken.
        assert hub.admission.open == 1
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect("/ws")
        assert info.value.status == 503
    finally:
        slow.close()
    await wait_for(lambda: hub.admission.open == 0, timeout=10)
    async with client.ws_connect("/ws") as ws:
        assert (await recv_json(ws))["type"] == "metrics_update"


async def test_every_message_carries_an_epoch_that_changes_when_seq_restarts(aiohttp_client, make_config):
    # Bug 4: after a restart seq began again at 1 with nothing that said so.
    epochs, firsts = [], []
    for _ in range(2):
        client = await aiohttp_client(create_app(make_config({"broadcast": {"interval": 0.1}})))
        await wait_for(lambda: client.app[HUB].feed.seq >= 2)
        async with client.ws_connect("/ws?history=5") as ws:
            hist = await recv_json(ws)
            live = await recv_json(ws)
            await ws.send_str('{"type":"ping"}')
            while (pong := await recv_json(ws))["type"] != "pong":
                pass
        assert hist["type"] == "history" and live["type"] == "metrics_update"
        assert hist["epoch"] == live["epoch"] == pong["epoch"] and live["epoch"]
        assert all(item["epoch"] == live["epoch"] for item in hist["items"])
        epochs.append(live["epoch"])
        firsts.append(hist["items"][0]["seq"])
        await client.close()
    assert epochs[0] != epochs[1]
    assert firsts == [1, 1]


async def test_history_stays_within_its_byte_budget_and_says_so_on_metrics(aiohttp_client, make_config):
    budget = 1 << 20
    cfg = make_config({"broadcast": {"interval": 0.1, "history_max_bytes": budget}})
    client = await aiohttp_client(create_app(cfg, extra_sources=[BulkySource(200 * 1024)]))
    hub = client.app[HUB]
    await wait_for(lambda: hub.feed.seq >= 12, timeout=20)
    text = await (await client.get("/metrics")).text()
    held = float(next(line.split()[1] for line in text.splitlines() if line.startswith("hub_history_bytes ")))
    entries = float(next(line.split()[1] for line in text.splitlines() if line.startswith("hub_history_entries ")))
    assert 0 < held <= budget and 1 <= entries <= 5
    assert len(hub.feed.points) == hub.feed.seq  # the charts' span is not cut by the byte budget


@pytest.mark.parametrize("trusted", [True, False])
async def test_per_ip_limit_uses_x_forwarded_for_only_from_a_trusted_proxy(aiohttp_client, make_config, trusted):
    # Bug 5: behind an ingress, request.remote is the proxy, so max_connections_per_ip limited the proxy.
    over: dict = {"server": {"max_connections_per_ip": 1}}
    if trusted:
        over["server"]["trusted_proxies"] = ["127.0.0.0/8"]
    client = await aiohttp_client(create_app(make_config(over)))
    hub = client.app[HUB]
    a = await client.ws_connect("/ws", headers={"X-Forwarded-For": "203.0.113.7"})
    if trusted:
        b = await client.ws_connect("/ws", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.8"})
        assert dict(hub.admission.per_ip) == {"203.0.113.7": 1, "203.0.113.8": 1}
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:  # the same client twice
            await client.ws_connect("/ws", headers={"X-Forwarded-For": "203.0.113.7"})
        assert info.value.status == 429
        await b.close()
    else:
        # A forged header from an untrusted peer changes nothing: the peer's address counts.
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect("/ws", headers={"X-Forwarded-For": "203.0.113.8"})
        assert info.value.status == 429
        assert dict(hub.admission.per_ip) == {"127.0.0.1": 1}
    await a.close()
