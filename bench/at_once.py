"""Things at once, measured at fleet scale: what many topic sets and window sizes cost a tick, and
what a reconnect storm of history joins does to everyone else's delivery.

    python -m bench.at_once [--series 3000] [--interval 2.0] [--ticks 8] [--storm 20]
                            [--reference DIR] [--out FILE]

`--reference DIR` is another checkout of the hub (for example `git worktree add DIR <commit>`),
measured the same way in the same run, so each figure has its ratio to the reference's.

1. **variants**: CPU per tick of the hub process (utime + stime, all threads) with one deflate client,
   then with 256 more: every topic set (32) x every window choice (none, 9..15). And ticks skipped:
   gaps between a passive client's updates longer than 1.5 intervals.
2. **storm**: a passive plain client's delivery lag (arrival minus the snapshot's `timestamp`), first
   alone, then while 150 deflate clients reconnect with `?history=360` in a loop.

The fleet is bench/fleetkit/prom.py's stand-in Prometheus. The load clients are raw sockets that
read and discard (no inflate, no JSON), so they cost the runner little.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import statistics
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.fleetkit.hub import REPO, HubProc, start_hub
from bench.fleetkit.prom import FleetPrometheus
from hub.config import DEFAULT_QUERIES

TOPICS = ("system", "application", "business", "alerts", "health")
WINDOWS = (0, 9, 10, 11, 12, 13, 14, 15)


def _request(port: int, path: str, window: int) -> bytes:
    ext = "" if not window else (
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
        + ("" if window == 15 else f"; server_max_window_bits={window}") + "\r\n")
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n").encode()


def _text(payload: bytes) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    head = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, n)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def _connect(port: int, path: str, window: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    writer.write(_request(port, path, window))
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"upgrade refused: {head[:60]!r}")
    return reader, writer


async def _discard(reader: asyncio.StreamReader, counter: list[int]) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while chunk := await reader.read(1 << 20):
            counter[0] += len(chunk)


async def _first_frame(reader: asyncio.StreamReader) -> int:
    """Read one whole server frame; its payload length."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    await reader.readexactly(n)
    return n


@dataclass
class Passive:
    """A plain client that parses every update: seqs, arrival times, lags."""

    seqs: list[int] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)

    async def run(self, url: str, compress: int = 0) -> None:
        async with aiohttp.ClientSession() as http, \
                http.ws_connect(url, compress=compress, max_msg_size=0, heartbeat=None) as ws:
            async for msg in ws:
                now = time.time()
                m = orjson.loads(msg.data)
                if m.get("type") == "metrics_update":
                    self.seqs.append(m["seq"])
                    self.arrivals.append(time.monotonic())
                    sent = datetime.fromisoformat(m["timestamp"].replace("Z", "+00:00")).timestamp()
                    self.lags.append(now - sent)

    async def ticks(self, n: int, *, timeout: float) -> None:
        start = len(self.seqs)
        deadline = time.monotonic() + timeout
        while len(self.seqs) < start + n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} ticks did not come within {timeout:.0f} s")
            await asyncio.sleep(0.05)


async def _cpu_per_tick(hub: HubProc, passive: Passive, ticks: int, interval: float) -> tuple[float, int]:
    """(hub CPU ms per tick over `ticks` ticks, gaps longer than 1.5 intervals among them)."""
    await passive.ticks(1, timeout=10 * interval)
    cpu0, n0 = hub.cpu_ms(), len(passive.seqs)
    await passive.ticks(ticks, timeout=4 * ticks * interval)
    cpu = hub.cpu_ms() - cpu0
    arrivals = passive.arrivals[n0 - 1:]
    skipped = sum(1 for a, b in itertools.pairwise(arrivals) if b - a > 1.5 * interval)
    return cpu / ticks, skipped


async def variants(root: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    prom = FleetPrometheus(args.series, queries=dict(DEFAULT_QUERIES))
    await prom.start()
    hub = await start_hub(workdir=work, python=sys.executable, prometheus_url=prom.url, interval=args.interval,
                          heartbeat=3600.0, root=root)
    writers: list[asyncio.StreamWriter] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        passive = Passive()
        tasks.append(asyncio.create_task(passive.run(f"http://127.0.0.1:{hub.port}/ws", compress=15)))
        one, skipped_one = await _cpu_per_tick(hub, passive, args.ticks, args.interval)
        received = [0]
        subsets = [c for r in range(len(TOPICS) + 1) for c in itertools.combinations(TOPICS, r)]
        for topics, window in itertools.product(subsets, WINDOWS):
            reader, writer = await _connect(hub.port, "/ws", window)
            writer.write(_text(json.dumps({"type": "subscribe", "topics": list(topics)}).encode()))
            writers.append(writer)
            tasks.append(asyncio.create_task(_discard(reader, received)))
        many, skipped_many = await _cpu_per_tick(hub, passive, args.ticks, args.interval)
        seqs = passive.seqs
        return {"clients": len(writers) + 1, "cpu_ms_1": one, "cpu_ms_257": many, "ratio": many / one,
                "skipped_1": skipped_one, "skipped_257": skipped_many,
                "seq_gaps": sum(1 for a, b in itertools.pairwise(seqs) if b != a + 1),
                "mb_received_by_load": received[0] / 1e6, "rss_mb": hub.rss_kb() / 1024}
    finally:
        for t in tasks:
            t.cancel()
        for w in writers:
            w.close()
        await hub.stop()
        await prom.stop()


async def storm(root: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    prom = FleetPrometheus(args.series, queries=dict(DEFAULT_QUERIES))
    await prom.start()
    hub = await start_hub(workdir=work, python=sys.executable, prometheus_url=prom.url, interval=args.interval,
                          heartbeat=3600.0, root=root)
    tasks: list[asyncio.Task[Any]] = []
    joins = [0]
    try:
        passive = Passive()
        tasks.append(asyncio.create_task(passive.run(f"http://127.0.0.1:{hub.port}/ws")))
        await passive.ticks(6, timeout=20 * args.interval)
        quiet = passive.lags[1:]
        n0 = len(passive.lags)
        stop = asyncio.Event()

        async def reconnect() -> None:
            while not stop.is_set():
                try:
                    reader, writer = await _connect(hub.port, "/ws?history=360", 15)
                    await _first_frame(reader)
                    joins[0] += 1
                    writer.transport.abort()
                except (OSError, RuntimeError, asyncio.IncompleteReadError):
                    await asyncio.sleep(0.05)

        tasks += [asyncio.create_task(reconnect()) for _ in range(150)]
        await asyncio.sleep(args.storm)  # the storm's duration
        stop.set()
        during = passive.lags[n0:]
        seqs = passive.seqs
        return {"joins": joins[0], "lag_quiet_p50_ms": 1000 * statistics.median(quiet),
                "lag_quiet_max_ms": 1000 * max(quiet), "lag_storm_p50_ms": 1000 * statistics.median(during),
                "lag_storm_max_ms": 1000 * max(during), "ticks_during": len(during),
                "seq_gaps": sum(1 for a, b in itertools.pairwise(seqs) if b != a + 1)}
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await hub.stop()
        await prom.stop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    roots = {"hub": REPO, **({"reference": Path(args.reference).resolve()} if args.reference else {})}
    results: dict[str, Any] = {"series": args.series, "interval": args.interval, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="hub-at-once-") as tmp:
        for name, root in roots.items():
            print(f"[{name}] variants ...", flush=True)
            v = await variants(root, args, Path(tmp))
            print(f"[{name}] storm ...", flush=True)
            s = await storm(root, args, Path(tmp))
            results["runs"][name] = {"variants": v, "storm": s}
    _table(results)
    return results


def _table(results: dict[str, Any]) -> None:
    runs = results["runs"]
    names = list(runs)
    print(f"\n{results['series']} series per query, interval {results['interval']} s\n")
    print("| figure | " + " | ".join(names) + (" | ratio hub/reference |" if len(names) > 1 else " |"))
    print("|---|" + "---|" * len(names) + ("---|" if len(names) > 1 else ""))
    rows = [("CPU ms per tick, 1 client", "variants", "cpu_ms_1"),
            ("CPU ms per tick, 257 clients (32 topic sets x 8 windows + 1)", "variants", "cpu_ms_257"),
            ("ratio 257 / 1 clients", "variants", "ratio"),
            ("ticks skipped (1 / 257 clients)", "variants", ("skipped_1", "skipped_257")),
            ("passive client's lag p50 / max, quiet (ms)", "storm", ("lag_quiet_p50_ms", "lag_quiet_max_ms")),
            ("passive client's lag p50 / max, 150 history reconnects (ms)", "storm",
             ("lag_storm_p50_ms", "lag_storm_max_ms")),
            ("history joins served during the storm", "storm", "joins"),
            ("seq gaps seen by the passive clients", "variants", "seq_gaps")]
    for label, part, key in rows:
        cells = []
        for n in names:
            r = runs[n][part]
            cells.append(" / ".join(f"{r[k]:.0f}" for k in key) if isinstance(key, tuple)
                         else f"{r[key]:.2f}" if isinstance(r[key], float) else str(r[key]))
        ratio = ""
        if len(names) > 1 and not isinstance(key, tuple) and runs[names[1]][part][key]:
            ratio = f" {runs[names[0]][part][key] / runs[names[1]][part][key]:.2f}x |"
        elif len(names) > 1:
            ratio = " |"
        print(f"| {label} | " + " | ".join(cells) + " |" + ratio)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--series", type=int, default=3000)
    p.add_argument("--interval", type=float, default=2.0)
    p.add_argument("--ticks", type=int, default=8)
    p.add_argument("--storm", type=float, default=20.0, help="seconds of reconnect storm")
    p.add_argument("--reference", help="another checkout of the hub, measured the same way")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "at_once.json")
    args = p.parse_args()
    results = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nraw results: {args.out}")


if __name__ == "__main__":
    main()
