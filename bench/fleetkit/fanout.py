"""Fan-out CPU: the hub's CPU time per tick with N Node.js `ws` clients, with or without deflate."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from bench.procs import read_event, stop_load_clients
from bench.fanout.run import FANOUT_DIR, node_program
from bench.fleetkit.hub import HubProc

LOAD_CLIENT = Path(__file__).resolve().parent / "load_client.js"


class Clients:
    """`n` counting WebSocket clients split over `procs` Node.js processes (load_client.js)."""

    def __init__(self, url: str, n: int, *, deflate: bool, procs: int = 2, concurrency: int = 100) -> None:
        self.url, self.n, self.deflate = url, n, deflate
        self.nprocs = max(1, min(procs, n or 1))
        self.concurrency = max(1, concurrency // self.nprocs)
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, *, timeout: float) -> dict[str, Any]:
        """Spawn the processes; wait until every connect settled; totals."""
        sizes = [self.n // self.nprocs + (1 if i < self.n % self.nprocs else 0) for i in range(self.nprocs)]
        for size in sizes:
            self.procs.append(await asyncio.create_subprocess_exec(
                node_program(), str(LOAD_CLIENT), "--url", self.url, "--count", str(size),
                "--concurrency", str(self.concurrency), "--deflate", "1" if self.deflate else "0",
                env={**os.environ, "NODE_PATH": str(FANOUT_DIR / "node_modules")},
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE))
        readies = await asyncio.wait_for(asyncio.gather(*(self._read(p, "ready") for p in self.procs)), timeout)
        return {"connected": sum(r["connected"] for r in readies), "failed": sum(r["failed"] for r in readies),
                "deflate": sum(r["deflate_negotiated"] for r in readies),
                "errors": [e for r in readies for e in r["errors"]][:5]}

    async def _read(self, proc: asyncio.subprocess.Process, event: str) -> dict[str, Any]:
        return await read_event(proc, event)

    async def status(self) -> dict[str, Any]:
        """open clients, the lowest and highest seq any of them holds, payload bytes received, closes."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(b'{"cmd":"status"}\n')
        parts = await asyncio.wait_for(asyncio.gather(*(self._read(p, "status") for p in self.procs)), 60)
        opened = [p for p in parts if p["open"]]
        return {"open": sum(p["open"] for p in parts),
                "min_seq": min((p["min_seq"] for p in opened), default=-1),
                "max_seq": max((p["max_seq"] for p in parts), default=-1),
                "bytes": sum(p["bytes"] for p in parts), "closed": sum(p["closed"] for p in parts)}

    async def until_all_have(self, seq: int, *, timeout: float) -> dict[str, Any]:
        """Wait until every open client holds `seq`."""
        deadline = time.monotonic() + timeout
        while True:
            st = await self.status()
            if st["open"] and st["min_seq"] >= seq:
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"clients did not all receive seq {seq} in {timeout:.0f} s: {st}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await stop_load_clients(self.procs)


async def idle_cpu_per_tick(hub: HubProc, *, interval: float, ticks: int) -> float:
    """Hub CPU ms per tick with no client: collection, encoding and timers alone."""
    cpu0 = hub.cpu_ms()
    await asyncio.sleep(ticks * interval)
    return (hub.cpu_ms() - cpu0) / ticks


async def fanout_cpu_per_tick(hub: HubProc, *, n: int, deflate: bool, interval: float, ticks: int,
                              procs: int) -> dict[str, Any]:
    """Hub CPU ms per tick while `n` clients (deflate or not) receive `ticks` consecutive ticks.

    Both readings are taken as the last client receives a tick, so the window holds exactly
    `ticks` ticks of collection + fan-out.
    """
    clients = Clients(f"ws://127.0.0.1:{hub.port}/ws", n, deflate=deflate, procs=procs)
    try:
        t0 = time.monotonic()
        ready = await clients.start(timeout=120 + n / 20)
        connect_s = time.monotonic() - t0
        if ready["connected"] < n:
            raise RuntimeError(f"{ready['failed']} of {n} clients failed to connect: {ready['errors']}")
        if deflate and ready["deflate"] < n:
            raise RuntimeError(f"only {ready['deflate']} of {n} clients negotiated permessage-deflate")
        st = await clients.status()
        first = await clients.until_all_have(max(st["max_seq"], 0) + 1, timeout=30 + 4 * interval)
        cpu0, bytes0 = hub.cpu_ms(), first["bytes"]
        start_seq = first["min_seq"]
        last = await clients.until_all_have(start_seq + ticks, timeout=60 + 4 * ticks * interval)
        cpu1 = hub.cpu_ms()
        done = last["min_seq"] - start_seq
        return {"cpu_ms_per_tick": (cpu1 - cpu0) / done, "ticks": done, "connect_s": connect_s,
                "payload_bytes_per_client_tick": (last["bytes"] - bytes0) / done / n,
                "closed": last["closed"], "rss_kb": hub.rss_kb()}
    finally:
        await clients.stop()
