"""Guarantees that hold when things happen at once: each race is driven deterministically, by
injecting the scheduling point (a patched yield, a compressor that blocks until released), never by
hoping for it."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import zlib
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest

from hub.app import create_app
from hub.broadcast import EVICT_GRACE, SLICE, Broadcaster
from hub.client import Client
from hub.context import HUB
from hub.feed import Entry, Feed
from hub.metrics import HubMetrics
from hub.sources.base import Source, SourceResult
from hub.vocab import TOPICS
from tests.support.aio import recv_json, recv_type, sample, wait_for
from tests.support.raw import (
    BulkySource,
    RecordingTransport,
    client_frame,
    raw_ws_connect,
    read_frames_until_close,
    server_messages,
)


def entry(seq: int, pad: int = 0) -> Entry:
    return Entry(seq=seq, epoch="e", timestamp=f"t{seq}",
                 sections={"system": orjson.dumps({"pad": "s" * pad}), "application": b'{"a":1}'},
                 sources={"process": b'{"status":"ok"}'})


def fake_client(window_bits: int = 0) -> tuple[Client, RecordingTransport]:
    # Mock ws and transport: the property under test is the broadcaster's bookkeeping, not sockets.
    t = RecordingTransport()
    c = Client(ws=SimpleNamespace(closed=False), transport=t, window_bits=window_bits)  # type: ignore[arg-type]
    c.set_topics(None)
    return c, t


class CountingCompressor:
    """Wraps zlib.compressobj to count the bytes compressed; when armed, the first compress() call
    in a worker thread (where big compressions run) blocks until released."""

    def __init__(self) -> None:
        self.real = zlib.compressobj
        self.bytes = 0
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        real = self.real(*args, **kwargs)
        outer = self

        class Wrapped:
            def compress(self, data: bytes) -> bytes:
                with outer._lock:
                    outer.bytes += len(data)
                    block = outer.armed and threading.current_thread() is not threading.main_thread()
                    outer.armed = outer.armed and not block
                if block:
                    outer.entered.set()
                    assert outer.release.wait(10), "never released"
                return real.compress(data)

            def flush(self, *a: Any) -> bytes:
                return real.flush(*a)

        return Wrapped()


@pytest.fixture
def compressor(monkeypatch: pytest.MonkeyPatch) -> CountingCompressor:
    c = CountingCompressor()
    monkeypatch.setattr(zlib, "compressobj", c)
    return c


async def test_a_topic_change_during_a_fan_out_loses_no_seq(monkeypatch):
    # Before: the fan-out fixed every client's frame key before its first await; a subscribe that
    # landed while it yielded between slices raised KeyError, after the snapshot was already in
    # the history, so the remaining clients never got that seq.
    b = Broadcaster(feed=Feed(history_size=5, history_max_bytes=1 << 24, source_sections={}),
                    max_client_buffer_bytes=1 << 24, metrics=HubMetrics())
    clients = [fake_client(window_bits=15 if i % 2 else 0) for i in range(2 * SLICE + 2)]
    for c, _t in clients:
        b.add(c)
    real_sleep = asyncio.sleep
    changed: list[Client] = []

    async def sleep(delay: float, *args: Any) -> Any:
        if delay == 0 and not changed:  # the yield between the first and the second slice
            waiting = [c for c, t in clients if not t.written]  # in a later slice
            for bits in (0, 15):
                late = next(c for c in waiting if c.window_bits == bits)
                late.set_topics(("application",))
                changed.append(late)
        return await real_sleep(delay, *args)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    assert await b.deliver(entry(1, pad=100_000), {})
    monkeypatch.setattr(asyncio, "sleep", real_sleep)
    assert len(changed) == 2, "the topic change did not land mid-fan-out"
    for c, t in clients:
        got = server_messages(bytes(t.data))
        assert [m["seq"] for m in got] == [1]
        if c in changed:  # the change took effect with this snapshot
            assert set(got[0]["data"]) == {"application"}  # type: ignore[arg-type]
        else:
            assert set(got[0]["data"]) == {"system", "application"}  # type: ignore[arg-type]
    assert await b.deliver(entry(2), {})
    assert all([m["seq"] for m in server_messages(bytes(t.data))] == [1, 2] for _c, t in clients)


async def test_a_history_join_never_compresses_under_the_lock_fan_out_needs(compressor):
    # Before: a deflate ?history=N join built and compressed its whole history while holding the
    # broadcaster lock; every delivery waited behind it.
    b = Broadcaster(feed=Feed(history_size=10, history_max_bytes=1 << 26, source_sections={}),
                    max_client_buffer_bytes=1 << 24, metrics=HubMetrics())
    for seq in range(1, 6):
        assert await b.deliver(entry(seq, pad=40_000), {})
    joiner, t = fake_client(window_bits=15)
    compressor.armed = True
    join = asyncio.create_task(b.join(joiner, history=10))
    assert await asyncio.to_thread(compressor.entered.wait, 5), "the join never compressed"
    try:
        # The join is compressing right now; a tick must still be delivered meanwhile.
        async with asyncio.timeout(3):
            assert await b.deliver(entry(6, pad=40_000), {})
    finally:
        compressor.release.set()
    await asyncio.wait_for(join, 10)
    assert await b.deliver(entry(7), {})
    got = server_messages(bytes(t.data))
    assert got[0]["type"] == "history"
    seqs = [m["seq"] for m in got[0]["items"]] + [m["seq"] for m in got[1:]]  # type: ignore[union-attr]
    assert seqs == [1, 2, 3, 4, 5, 6, 7]  # no gap and no duplicate across the race


async def test_joins_of_one_snapshot_share_one_build(compressor):
    # 150 wall screens reconnecting with ?history=N must not compress the history 150 times.
    b = Broadcaster(feed=Feed(history_size=10, history_max_bytes=1 << 26, source_sections={}),
                    max_client_buffer_bytes=1 << 24, metrics=HubMetrics())
    for seq in range(1, 4):
        await b.deliver(entry(seq, pad=30_000), {})
    before = compressor.bytes
    joiners = [fake_client(window_bits=15) for _ in range(50)]
    await asyncio.gather(*(b.join(c, history=3) for c, _t in joiners))
    one_history = sum(len(e.encode()) for e in b.feed.history)
    assert compressor.bytes - before < 2 * one_history
    first = [bytes(t.data) for _c, t in joiners]
    assert len(set(first)) == 1 and [m["seq"] for m in server_messages(first[0])[0]["items"]] == [1, 2, 3]  # type: ignore[index]


class Sections(Source):
    """Fills every topic's section with `size` bytes of distinct JSON."""

    name = "sections"
    sections = TOPICS
    timeout = 1.0

    def __init__(self, size: int) -> None:
        self.size = size
        self.n = 0

    async def collect(self, budget: float) -> SourceResult:
        self.n += 1
        return SourceResult(data={t: {"tick": self.n, "rows": [f"{t}-{i}-{self.n}" for i in range(self.size // 16)]}
                                  for t in TOPICS})


async def test_compression_per_snapshot_is_bounded_whatever_clients_choose(aiohttp_client, make_config, compressor):
    # Before: every (topic set, window size) among the clients was compressed on its own, one after
    # another: 32 topic sets x 8 window choices = 256 passes over the snapshot per tick.
    cfg = make_config({"broadcast": {"interval": 1.0, "heartbeat": 30.0},
                       "sources": {"process": {"enabled": False}}})
    client = await aiohttp_client(create_app(cfg, extra_sources=[Sections(20_000)]))
    hub = client.app[HUB]
    url = f"http://{client.server.host}:{client.server.port}/ws"
    subsets = [list(c) for r in range(len(TOPICS) + 1) for c in itertools.combinations(TOPICS, r)]
    assert len(subsets) == 32
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        wss = []
        for topics, bits in itertools.product(subsets, (0, 9, 10, 11, 12, 13, 14, 15)):
            ws = await session.ws_connect(url, compress=bits, max_msg_size=0)
            await ws.send_json({"type": "subscribe", "topics": topics})
            wss.append(ws)
        for ws in wss:
            await recv_type(ws, "subscribed")
        await wait_for(lambda: len(hub.broadcaster.clients) == 256)
        observer = wss[-1]  # every topic, window 15
        seq = (await recv_type(observer, "metrics_update"))["seq"]
        compressor.bytes = 0
        while (await recv_type(observer, "metrics_update"))["seq"] != seq + 1:
            pass
        snapshot = hub.feed.latest
        assert snapshot is not None and snapshot.seq == seq + 1
        # Two windows (15 and 9) serve all eight choices, and each piece is compressed once per window.
        size = len(snapshot.encode())
        assert compressor.bytes <= 2 * size, (compressor.bytes, size)
        assert sample(hub.metrics, "hub_broadcast_deflate_input_bytes") <= 2 * size
        assert sample(hub.metrics, "hub_broadcast_frame_variants") == 96  # 32 topic sets x (plain, 15, 9)
        for ws in wss[:-1]:  # and every other client got it, decoded by aiohttp's own inflater
            while (m := await recv_type(ws, "metrics_update"))["seq"] < seq + 1:
                pass
            assert m["seq"] == seq + 1
        await asyncio.gather(*(ws.close() for ws in wss))


async def test_a_client_that_never_reads_and_breaks_the_rate_limit_frees_its_slot(aiohttp_client, make_config):
    # Before: the rate-limit close drained the socket first; against a peer that stopped reading the
    # drain never finished, fan-out skipped the client (it was closing), and its slot was held forever.
    cfg = make_config({"broadcast": {"interval": 0.1, "heartbeat": 60.0, "max_client_buffer_bytes": 64 << 20},
                       "server": {"max_connections": 2}})
    client = await aiohttp_client(create_app(cfg, extra_sources=[BulkySource(256 << 10)]))
    hub = client.app[HUB]
    await wait_for(lambda: hub.feed.latest is not None)
    async with client.ws_connect("/ws") as good:
        await recv_json(good)
        flood = b"".join(client_frame(0x9, b"p") for _ in range(80))
        sock = await asyncio.to_thread(raw_ws_connect, client.server.port, rcvbuf=4096)
        try:
            await wait_for(lambda: hub.admission.open == 2, what="both slots taken")
            # It never reads: its backlog grows past the transport's high-water mark (writes would
            # wait for a drain), yet stays under max_client_buffer_bytes (no slow-consumer eviction).
            await wait_for(lambda: any(c.transport.get_write_buffer_size() > 1 << 20 for c in hub.broadcaster.clients),
                           timeout=10, what="a backlog on the silent client")
            t0 = time.monotonic()
            await asyncio.to_thread(sock.sendall, flood)
            await wait_for(lambda: hub.admission.open == 1, timeout=EVICT_GRACE + 1.0, interval=0.05,
                           what="the slot of the flooding client released")
            assert time.monotonic() - t0 <= EVICT_GRACE + 1.0
            async with client.ws_connect("/ws") as newcomer:  # admitted again
                assert (await recv_json(newcomer, timeout=10))["type"] == "metrics_update"
            assert sample(hub.metrics, "hub_ws_disconnects_total", reason="rate_limited") == 1
        finally:
            sock.close()


async def test_frames_that_arrive_with_the_upgrade_request_are_checked(aiohttp_client, make_config):
    # Before: the frame guard was installed after aiohttp had parsed the bytes that came with the
    # upgrade request: an unmasked frame there was accepted, and a flood there escaped the limit.
    client = await aiohttp_client(create_app(make_config({"broadcast": {"interval": 5.0}})))
    port = client.server.port
    unmasked = client_frame(0x1, b'{"type":"ping"}', masked=False)
    sock = await asyncio.to_thread(raw_ws_connect, port, with_request=unmasked)
    try:
        code, _ = await asyncio.to_thread(read_frames_until_close, sock, timeout=5)
        assert code == 1002
    finally:
        sock.close()
    flood = b"".join(client_frame(0xA, b"x") for _ in range(5000))
    sock = await asyncio.to_thread(raw_ws_connect, port, with_request=flood)
    try:
        t0 = time.monotonic()
        code, _ = await asyncio.to_thread(read_frames_until_close, sock, timeout=5)
        assert code == 1008 and time.monotonic() - t0 < 1.0
    finally:
        sock.close()


async def test_a_plain_get_on_the_websocket_endpoint_is_426(aiohttp_client, make_config):
    client = await aiohttp_client(create_app(make_config()))
    for path in ("/ws", "/ws?history=3"):
        resp = await client.get(path)
        assert resp.status == 426
        assert resp.headers["Upgrade"] == "websocket"
        assert "WebSocket" in (await resp.json())["error"]
