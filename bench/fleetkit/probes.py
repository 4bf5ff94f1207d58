"""What one client costs the hub on the wire: a connect (aiohttp or Chromium) and a live tick.

Every byte figure comes from the counting proxy (`wire.CountingProxy`): the upgrade answer plus
the frames as sent, compressed or not. Uncompressed figures are the decoded message lengths.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.fleetkit.wire import Conn, CountingProxy

# The page is ready when every chart has data: what tests/test_dashboard.py waits for.
CHARTS_READY_JS = """() => {
  const d = window.hubDebug;
  if (!d || !(d.lastSeq > 0)) return null;
  const lengths = d.seriesLengths();
  const values = Object.values(lengths);
  if (!values.length || values.some((n) => n < 1)) return null;
  return {seq: d.lastSeq, points: d.points, min_len: Math.min(...values), charts: values.length};
}"""


@dataclass
class ConnectResult:
    """One connect: wire bytes (upgrade answer + frames), decoded bytes, messages it took."""

    query: str
    deflate: bool
    wire_bytes: int = 0
    decoded_bytes: int = 0
    messages: list[str] = field(default_factory=list)
    items: int = 0
    seconds: float = 0.0


async def _new_conn(proxy: CountingProxy, before: int, *, timeout: float = 10.0) -> Conn:
    deadline = time.monotonic() + timeout
    while len(proxy.conns) <= before:
        if time.monotonic() > deadline:
            raise TimeoutError("the proxy saw no connection")
        await asyncio.sleep(0.01)
    return proxy.conns[before]


async def _frames(conn: Conn, k: int, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(1 for f in conn.frames if f.opcode in (1, 0)) < k:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the proxy saw {len(conn.frames)} frames, expected {k}")
        await asyncio.sleep(0.01)


async def aiohttp_connect(proxy: CountingProxy, query: str, *, deflate: bool) -> ConnectResult:
    """Connect with `query` (e.g. "?points=360") and read until the page would have its charts.

    `?points=N`: the points message and the latest metrics_update; `?history=N`: the history
    message (plus the latest snapshot if the history left it out).
    """
    res = ConnectResult(query=query, deflate=deflate)
    before = len(proxy.conns)
    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(f"http://127.0.0.1:{proxy.port}/ws{query}", compress=15 if deflate else 0,
                            max_msg_size=0) as ws:
        conn = await _new_conn(proxy, before)
        while True:
            msg = await asyncio.wait_for(ws.receive(), 60)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"unexpected {msg.type} during connect")
            data = msg.data
            kind = data[9:30].split('"')[0] if data.startswith('{"type":"') else "?"
            res.messages.append(kind)
            res.decoded_bytes += len(data.encode())
            if kind in ("points", "history"):
                res.items = data.count('"seq":') - (1 if kind == "points" else 0)
                if kind == "history":
                    break
            elif kind == "metrics_update":
                break
        res.seconds = time.perf_counter() - t0
        await _frames(conn, len(res.messages))
        data_frames = [f for f in conn.frames if f.opcode in (1, 0)][:len(res.messages)]
        res.wire_bytes = conn.head_bytes + sum(f.wire for f in data_frames)
        if deflate and not all(f.compressed for f in data_frames):
            raise RuntimeError("a connect frame to a deflate client was not compressed")
    return res


async def tick_bytes(proxy: CountingProxy, *, deflate: bool, ticks: int) -> dict[str, float]:
    """Mean wire bytes of a live metrics_update frame, and its decoded size, over `ticks` ticks."""
    before = len(proxy.conns)
    decoded: list[int] = []
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(f"http://127.0.0.1:{proxy.port}/ws", compress=15 if deflate else 0,
                            max_msg_size=0) as ws:
        conn = await _new_conn(proxy, before)
        for _ in range(ticks + 1):  # the first is the initial snapshot
            msg = await asyncio.wait_for(ws.receive(), 60)
            decoded.append(len(msg.data.encode()))
        await _frames(conn, ticks + 1)
        frames = [f for f in conn.frames if f.opcode in (1, 0)][1:ticks + 1]
    return {"wire": sum(f.wire for f in frames) / len(frames), "decoded": sum(decoded[1:]) / ticks,
            "compressed": float(all(f.compressed for f in frames))}


async def page_connect(browser: Any, proxy: CountingProxy, *, timeout: float = 60.0) -> dict[str, Any]:
    """Open the dashboard in a fresh Chromium context through the proxy; time and bytes to charts."""
    ctx = await browser.new_context(viewport={"width": 1920, "height": 1080})
    try:
        page = await ctx.new_page()
        responses: list[Any] = []
        page.on("response", lambda r: responses.append(r))
        proxy.reset()
        t0 = time.monotonic()
        await page.goto(f"http://127.0.0.1:{proxy.port}/", wait_until="commit")
        ready = None
        while ready is None:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"the page's charts had no data after {timeout:.0f} s")
            ready = await page.evaluate(CHARTS_READY_JS)
            if ready is None:
                await asyncio.sleep(0.02)
        t1 = time.monotonic()
        conns = list(proxy.conns)
        ws = [c for c in conns if c.is_ws]
        out = {
            "seconds": t1 - t0,
            "bytes": sum(c.bytes_until(t1) for c in conns),
            "ws_bytes": sum(c.bytes_until(t1) for c in ws),
            "ws_request": ws[0].request.split(" ")[1] if ws and " " in ws[0].request else "?",
            "ws_frames": sum(1 for c in ws for f in c.frames if f.at <= t1 and f.opcode in (0, 1)),
            "chart_points": ready["min_len"],
            "page_points": ready["points"],
        }
        # Which HTTP responses the bytes went to (Chromium's own accounting, encoded sizes).
        sizes: dict[str, int] = {}
        for resp in responses:
            with contextlib.suppress(Exception):
                sz = await resp.request.sizes()
                path = "/" + resp.url.split("/", 3)[-1]
                sizes[path] = sizes.get(path, 0) + sz["responseBodySize"] + sz["responseHeadersSize"]
        out["http"] = dict(sorted(sizes.items(), key=lambda kv: -kv[1]))
        with contextlib.suppress(Exception):
            await page.close()
        return out
    finally:
        await ctx.close()
