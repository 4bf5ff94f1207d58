"""Fan-out under load: 1,000 clients, slow consumers, dead peers, a responsive loop."""

from __future__ import annotations

import asyncio
import struct

import aiohttp
import pytest

from hub.app import create_app
from hub.broadcast import SLICE, SNDBUF_BYTES
from hub.frames import text_frame
from hub.context import HUB
from tests.support.raw import BulkySource, FakeTransport, raw_ws_connect, read_frames_until_close
from tests.support.aio import sample, recv_json, wait_for


def test_text_frame_matches_rfc6455_lengths():
    assert text_frame(b"hi") == b"\x81\x02hi"
    assert text_frame(b"a" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert text_frame(b"a" * 70000)[:10] == b"\x81\x7f" + struct.pack("!Q", 70000)


async def test_thousand_clients_get_every_seq(aiohttp_client, make_config):
    client = await aiohttp_client(create_app(make_config({"broadcast": {"interval": 0.5}})))
    n = 1000
    connector_limit = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector_limit) as session:
        url = f"http://{client.server.host}:{client.server.port}/ws"
        wss = await asyncio.gather(*(session.ws_connect(url) for _ in range(n)))
        st = client.app[HUB]
        await wait_for(lambda: len(st.broadcaster.clients) == n, timeout=30)
        start = st.feed.seq + 1
        ticks = 4

        async def collect(ws: aiohttp.ClientWebSocketResponse) -> list[int]:
            got: list[int] = []
            while not got or got[-1] < start + ticks - 1:
                m = await recv_json(ws, timeout=15)
                if m["seq"] >= start:
                    got.append(m["seq"])
            return got

        results = await asyncio.gather(*(collect(ws) for ws in wss))
        for got in results:
            assert got == list(range(start, start + ticks)), got[:10]
        assert sample(st.metrics, "hub_ws_connections") == n
        await asyncio.gather(*(ws.close() for ws in wss))


async def test_slow_consumer_closed_1013_others_unaffected(aiohttp_client, make_config):
    cfg = make_config({"broadcast": {"interval": 0.1, "max_client_buffer_bytes": 256 * 1024}})
    client = await aiohttp_client(create_app(cfg, extra_sources=[BulkySource(64 * 1024)]))
    st = client.app[HUB]
    port = client.server.port
    slow = await asyncio.to_thread(raw_ws_connect, port, rcvbuf=4096)
    try:
        async with client.ws_connect("/ws") as good:
            await recv_json(good)
            await wait_for(lambda: sample(st.metrics, "hub_ws_disconnects_total", reason="slow_consumer") == 1, timeout=20)
            # The well-behaved client kept receiving every tick throughout.
            first = (await recv_json(good))["seq"]
            for i in range(1, 4):
                assert (await recv_json(good))["seq"] == first + i
            assert len(st.broadcaster.clients) == 1
            code, backlog = await asyncio.to_thread(read_frames_until_close, slow, timeout=10)
            assert code == 1013
            # Unsent bytes stayed bounded: the limit, one more frame and the capped kernel buffers
            # (SO_SNDBUF 64 KiB, which Linux doubles, plus the 4 KiB receive buffer). Without the
            # cap the kernel would have queued megabytes before the transport buffer saw any.
            assert backlog <= 256 * 1024 + 65 * 1024 + 2 * SNDBUF_BYTES + 64 * 1024, backlog
    finally:
        slow.close()


async def test_dead_peer_dropped_after_heartbeat(aiohttp_client, make_config):
    cfg = make_config({"broadcast": {"interval": 5.0, "heartbeat": 0.3}})
    client = await aiohttp_client(create_app(cfg))
    st = client.app[HUB]
    dead = await asyncio.to_thread(raw_ws_connect, client.server.port)
    try:
        await wait_for(lambda: len(st.broadcaster.clients) == 1)
        # The bare socket never answers pings: the hub must drop it after heartbeat + heartbeat/2.
        await wait_for(lambda: sample(st.metrics, "hub_ws_disconnects_total", reason="dead_peer") == 1, timeout=5)
        assert len(st.broadcaster.clients) == 0
        assert sample(st.metrics, "hub_ws_connections") == 0
    finally:
        dead.close()


async def test_live_peer_survives_heartbeats(aiohttp_client, make_config):
    cfg = make_config({"broadcast": {"interval": 0.2, "heartbeat": 0.2}})
    client = await aiohttp_client(create_app(cfg))
    st = client.app[HUB]
    async with client.ws_connect("/ws") as ws:  # aiohttp's client answers pings inside receive()
        seqs = [(await recv_json(ws))["seq"] for _ in range(8)]  # ~1.6 s: several heartbeat rounds
        assert seqs == list(range(seqs[0], seqs[0] + 8))
        assert len(st.broadcaster.clients) == 1
        assert sample(st.metrics, "hub_ws_disconnects_total", reason="dead_peer") == 0


async def test_broadcast_yields_to_the_loop_between_slices(make_config):
    # Mock transports: the property under test is the loop's scheduling, not the kernel.
    from types import SimpleNamespace

    from hub.broadcast import Broadcaster
    from hub.client import Client
    from hub.feed import Entry, Feed
    from hub.metrics import HubMetrics

    broadcaster = Broadcaster(feed=Feed(history_size=10, history_max_bytes=1 << 20, source_sections={}),
                       max_client_buffer_bytes=1 << 20, metrics=HubMetrics())
    n = SLICE * 4
    transports = [FakeTransport() for _ in range(n)]
    for t in transports:
        broadcaster.add(Client(ws=SimpleNamespace(closed=False), transport=t))  # type: ignore[arg-type]
    ran_during: list[int] = []

    async def other_work() -> None:
        while True:
            ran_during.append(sum(1 for t in transports if t.written))
            await asyncio.sleep(0)

    task = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    await broadcaster.deliver(Entry(seq=1, epoch="e", timestamp="t", sections={}, sources={}), {})
    task.cancel()
    expected = (b'{"type":"metrics_update","seq":1,"epoch":"e","timestamp":"t","data":{},"sources":{},'
                b'"point":{"seq":1,"timestamp":"t","rate":null,"p95":null,"rss":null,"cpu":null,"conns":null,'
                b'"appts":null,"hour_observed":null,"hour_expected":null}}')
    assert all(t.written == len(text_frame(expected)) for t in transports)
    # Other tasks ran while only part of the clients had been written to.
    assert any(0 < k < n for k in ran_during), ran_during[:10]
    assert sample(broadcaster.metrics, "hub_ws_messages_sent_total") == n


async def test_health_answers_during_broadcast_to_1000_clients(aiohttp_client, make_config):
    client = await aiohttp_client(create_app(make_config({"broadcast": {"interval": 0.2}})))
    st = client.app[HUB]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        url = f"http://{client.server.host}:{client.server.port}"
        wss = await asyncio.gather(*(session.ws_connect(url + "/ws") for _ in range(1000)))
        await wait_for(lambda: len(st.broadcaster.clients) == 1000, timeout=30)
        drain = [asyncio.create_task(_drain(ws)) for ws in wss]
        for _ in range(10):
            async with asyncio.timeout(2.0):
                resp = await session.get(url + "/health")
            assert resp.status == 200
        for t in drain:
            t.cancel()
        await asyncio.gather(*(ws.close() for ws in wss), return_exceptions=True)


async def _drain(ws: aiohttp.ClientWebSocketResponse) -> None:
    while True:
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            return


pytestmark = pytest.mark.timeout(120)
