"""The concurrency issue's end-to-end checks against a real `hub serve` at fleet scale.

The fleet (3,000 series per query) comes from bench/fleetkit/prom.py's stand-in Prometheus, as in
`python -m bench.fleet`: a real Prometheus cannot be made to hold a fleet of a chosen size with
fixed values. Each deterministic race has its own in-process test in
tests/integration/test_at_once.py; these show the same guarantees as a user gets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from bench.fleetkit.prom import FleetPrometheus
from hub.broadcast import EVICT_GRACE
from hub.config import DEFAULT_QUERIES
from tests.support.hubproc import HubProcess
from tests.support.raw import client_frame, raw_ws_connect, upgrade_request
from tests.support.timing import SLACK, WAIT

pytestmark = pytest.mark.timeout(240)

SERIES = 3000


@contextlib.asynccontextmanager
async def fleet_hub(tmp_path: Path, **over: Any) -> AsyncIterator[HubProcess]:
    prom = FleetPrometheus(SERIES, queries=dict(DEFAULT_QUERIES))
    await prom.start()
    config: dict[str, Any] = {
        "broadcast": {"interval": 1.0, "heartbeat": 60.0, **over.pop("broadcast", {})},
        "server": over.pop("server", {}),
        "sources": {"prometheus": {"url": prom.url}, "business": {"enabled": False},
                    "health": {"enabled": False}},
    }
    hub = HubProcess(config, tmp_path)
    try:
        await asyncio.to_thread(hub.start)
        await asyncio.to_thread(hub.wait_healthy, path="/ready", timeout=WAIT)
        yield hub
    finally:
        hub.stop()
        await prom.stop()


async def _updates(ws: aiohttp.ClientWebSocketResponse, seqs: list[int], stamps: list[float]) -> None:
    async for msg in ws:
        if msg.type is not aiohttp.WSMsgType.TEXT:
            return
        m = orjson.loads(msg.data)
        if m["type"] == "metrics_update":
            seqs.append(m["seq"])
            stamps.append(time.monotonic())


async def test_topic_churn_during_fleet_fan_outs_loses_no_seq(tmp_path):
    # 12 deflate clients change topics 10 times a second (under the 20/s limit) while 1.7 MB
    # snapshots fan out; before the fix, a passive observer lost 5 seqs in 12 s.
    async with fleet_hub(tmp_path) as hub, aiohttp.ClientSession() as http:
        url = hub.url + "/ws"
        observer = await http.ws_connect(url, compress=15, max_msg_size=0)
        churners = [await http.ws_connect(url, compress=15, max_msg_size=0) for _ in range(12)]
        seqs: list[list[int]] = [[] for _ in range(13)]
        stamps: list[list[float]] = [[] for _ in range(13)]
        readers = [asyncio.create_task(_updates(ws, seqs[i], stamps[i]))
                   for i, ws in enumerate([observer, *churners])]
        # Every churner walks all 31 topic sets from its own offset: a set a client switches to is
        # often one no client had when the fan-out began.
        subsets = [list(c) for r in range(1, 6) for c in itertools.combinations(
            ("system", "application", "business", "alerts", "health"), r)]

        async def churn(ws: aiohttp.ClientWebSocketResponse, offset: int) -> None:
            for i in itertools.count(offset):
                await ws.send_json({"type": "subscribe", "topics": subsets[(i * 7) % len(subsets)]})
                await asyncio.sleep(0.1)

        churning = [asyncio.create_task(churn(ws, 5 * i)) for i, ws in enumerate(churners)]
        await asyncio.sleep(12.0)  # the duration of the check itself, not a wait for an event
        for t in churning:
            t.cancel()
        await asyncio.gather(*churning, return_exceptions=True)
        for ws in [observer, *churners]:
            await ws.close()
        await asyncio.gather(*readers, return_exceptions=True)
    for got in seqs:
        assert len(got) >= 8, got  # ~12 at one tick a second
        assert got == list(range(got[0], got[0] + len(got))), got


async def test_a_silent_client_that_breaks_the_rate_limit_frees_its_slot_within_the_grace(tmp_path):
    # Before: its Close waited on a drain that never came; the slot stayed taken and every new
    # client got 503. The budget is raised so that no slow-consumer eviction frees it instead.
    async with fleet_hub(tmp_path, server={"max_connections": 2},
                         broadcast={"interval": 0.5, "max_client_buffer_bytes": 256 << 20}) as hub, \
            aiohttp.ClientSession() as http:
        good = await http.ws_connect(hub.url + "/ws", max_msg_size=0)
        seqs: list[int] = []
        reader = asyncio.create_task(_updates(good, seqs, []))
        sock = await asyncio.to_thread(raw_ws_connect, hub.port, rcvbuf=4096)
        try:
            while len(seqs) < 4:  # a few 1.7 MB ticks pile up unread behind the silent client
                await asyncio.sleep(0.05)
            t0 = time.monotonic()
            await asyncio.to_thread(sock.sendall, b"".join(client_frame(0x9, b"p") for _ in range(80)))
            deadline = t0 + EVICT_GRACE + SLACK
            admitted = False
            while time.monotonic() < deadline and not admitted:
                try:
                    newcomer = await http.ws_connect(hub.url + "/ws", max_msg_size=0)
                except aiohttp.WSServerHandshakeError as exc:
                    assert exc.status == 503
                    await asyncio.sleep(0.2)
                    continue
                admitted = True
                assert (await newcomer.receive_json(timeout=WAIT))["type"] == "metrics_update"
                await newcomer.close()
            assert admitted, f"no slot free {time.monotonic() - t0:.1f} s after the flood"
        finally:
            sock.close()
            await good.close()
            reader.cancel()


def _read_until_close(sock: socket.socket, out: dict[str, Any]) -> None:
    """Read server frames until a Close; record its code and when it came."""
    buf = b""
    sock.settimeout(WAIT)
    try:
        while True:
            while b"\r\n\r\n" not in buf and "head" not in out:
                buf += sock.recv(65536)
            if "head" not in out:
                out["head"], _, buf = buf.partition(b"\r\n\r\n")
            while len(buf) < 10:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    return
                buf += chunk
            n, hdr = buf[1] & 0x7F, 2
            if n == 126:
                n, hdr = struct.unpack("!H", buf[2:4])[0], 4
            elif n == 127:
                n, hdr = struct.unpack("!Q", buf[2:10])[0], 10
            while len(buf) < hdr + n:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    return
                buf += chunk
            if buf[0] & 0x0F == 0x8:
                out["code"] = struct.unpack("!H", buf[hdr:hdr + 2])[0]
                out["at"] = time.monotonic()
                return
            buf = buf[hdr + n:]
    except OSError as exc:
        out["error"] = repr(exc)


def _flood(sock: socket.socket, port: int, out: dict[str, Any], stop: threading.Event) -> None:
    """Send the upgrade request and a PONG flood in one write, then keep flooding until `stop`;
    record when the hub last took any of it."""
    pongs = b"".join(client_frame(0xA, b"x") for _ in range(20_000))
    out["start"] = out["last"] = time.monotonic()
    data = memoryview(upgrade_request(port) + pongs)
    sock.settimeout(0.1)
    try:
        while not stop.is_set():
            try:
                n = sock.send(data)
            except TimeoutError:
                continue  # the hub is not reading: the kernel buffers are full
            out["last"] = time.monotonic()
            data = data[n:] if n < len(data) else memoryview(pongs)
    except OSError as exc:
        out["error"] = repr(exc)
    finally:
        sock.close()


async def test_a_pong_flood_sent_with_the_upgrade_request_is_cut_and_ticks_stay_on_time(tmp_path):
    # Before: the guard was installed after aiohttp had parsed the bytes that came with the upgrade;
    # the flood ran for 5 s and ticks came 3x late.
    interval = 0.5
    async with fleet_hub(tmp_path, broadcast={"interval": interval}) as hub, aiohttp.ClientSession() as http:
        observer = await http.ws_connect(hub.url + "/ws", max_msg_size=0)
        seqs: list[int] = []
        stamps: list[float] = []
        reader = asyncio.create_task(_updates(observer, seqs, stamps))
        while len(stamps) < 2:
            await asyncio.sleep(0.05)
        sock = socket.create_connection(("127.0.0.1", hub.port))
        got: dict[str, Any] = {}
        sent: dict[str, Any] = {}
        stop = threading.Event()
        threads = [threading.Thread(target=_read_until_close, args=(sock, got)),
                   # dup(): its own timeout, the same connection
                   threading.Thread(target=_flood, args=(sock.dup(), hub.port, sent, stop))]
        for t in threads:
            t.start()
        try:
            await asyncio.to_thread(threads[0].join, WAIT)
            assert got.get("code") == 1008, got
            flood_start = sent["start"]
            before = len(stamps)
            while len(stamps) < before + 8:  # eight more ticks: the flood had its chance to go on
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.to_thread(threads[1].join, WAIT)
            sock.close()
            await observer.close()
            reader.cancel()
    # The hub stopped taking the flood within a second (plus scheduling slack) of its start.
    assert sent["last"] - flood_start < 1.0 + SLACK, f"the hub read the flood for {sent['last'] - flood_start:.2f} s"
    around = [t for t in stamps if t >= flood_start - interval]
    gaps = [b - a for a, b in itertools.pairwise(around)]
    assert max(gaps) < 2 * interval, gaps
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
