"""Memory per WebSocket connection of an in-process hub, by RSS and (optionally) by tracemalloc.

    python -m bench.fanout.memory [--clients 3000] [--trace]

Runs the hub's app (uvloop, Prometheus pointed at a closed port, business off, heartbeat 3600 s)
in this process, upgrades N raw-socket clients from a thread (the 101 read, nothing else), and
prints (VmRSS after - VmRSS before) / N after a full collection; with --trace, also the largest
allocation sites per connection (tracemalloc, 12 frames; it slows the connects and its own
bookkeeping inflates RSS, so the RSS line of a traced run is not comparable).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import sys
import tracemalloc
from pathlib import Path

import uvloop
from aiohttp import web

from bench.fanout.run import raise_nofile
from hub.app import create_app
from hub.config import build_config
from hub.context import HUB

UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def rss_kb() -> int:
    """This process' VmRSS in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def connect(port: int, n: int, socks: list[socket.socket]) -> None:
    """Open `n` connections and complete each upgrade (blocking; run in a thread)."""
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(UPGRADE)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        if b" 101 " not in buf.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"upgrade refused: {buf[:200]!r}")
        socks.append(s)


async def measure(n: int, trace: bool) -> None:
    cfg = build_config({"server": {"host": "127.0.0.1", "port": 0, "max_connections": n + 1000},
                        "broadcast": {"interval": 1.0, "heartbeat": 3600.0},
                        "sources": {"prometheus": {"url": "http://127.0.0.1:1"}, "business": {"enabled": False}}})
    app = create_app(cfg)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=2048)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    socks: list[socket.socket] = []
    try:
        await asyncio.to_thread(connect, port, 50, socks)  # warm-up: first-use allocations
        await asyncio.sleep(1)
        gc.collect()
        before = rss_kb()
        if trace:
            tracemalloc.start(12)
        snap0 = tracemalloc.take_snapshot() if trace else None
        await asyncio.to_thread(connect, port, n, socks)
        await asyncio.sleep(3)
        gc.collect()
        after = rss_kb()
        print(f"{n} connections: {(after - before) / n:.2f} KB/connection (RSS)"
              + (" [traced: not comparable]" if trace else ""))
        print(f"connections the hub owns: {len(app[HUB].peers)} (aiohttp's: {len(runner.server.connections)})")
        if snap0 is not None:
            stats = tracemalloc.take_snapshot().compare_to(snap0, "traceback")
            print(f"traced: {sum(s.size_diff for s in stats) / n / 1024:.2f} KB/connection")
            for st in stats[:30]:
                if st.size_diff / n < 100:
                    break
                where = " < ".join(f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(st.traceback[-6:]))
                print(f"{st.size_diff / n:7.0f} B {st.count_diff / n:4.1f} blocks  {where}")
    finally:
        for s in socks:
            s.close()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fanout.memory", description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=3000)
    ap.add_argument("--trace", action="store_true", help="also list allocation sites (tracemalloc)")
    args = ap.parse_args(argv)
    raise_nofile()
    uvloop.install()
    asyncio.run(measure(args.clients, args.trace))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
