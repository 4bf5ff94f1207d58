"""Failover benchmark: how long clients wait for the next snapshot when the collector dies.

    python -m bench.failover.run [--runs 10] [--interval 0.5] [--replicas 3] [--signal kill|term]

Starts a redis-server and N `hub serve --role all` replicas (process source only) on free ports,
with one WebSocket client per replica. Each run finds the collector (/ready), waits a random
fraction of an interval (so the kill lands anywhere in the lease cycle), sends it SIGKILL (or
SIGTERM: graceful, the lease is released), and measures the time from the signal to the arrival,
on a surviving replica's client, of the first snapshot published by another replica (the stream
entry's `replica` field says who collected it). It checks that every surviving client saw every
seq in order, restarts the dead replica and goes again. Prints per-run figures and a summary,
including the longest pause clients saw between two consecutive snapshots.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from tests.support.hubproc import HubProcess
from tests.support.redis import RedisServer


class Client:
    """One WebSocket client recording the arrival time of every seq."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url
        self.arrivals: dict[int, float] = {}
        self.order: list[int] = []
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Client:
        self.ws = await self.session.ws_connect(self.url + "/ws")
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            m = orjson.loads(msg.data)
            if m.get("type") == "metrics_update":
                self.arrivals[m["seq"]] = time.monotonic()
                self.order.append(m["seq"])

    async def close(self) -> None:
        await self.ws.close()
        if self.task is not None:
            await self.task


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as r:
        return await r.json()


async def until(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


async def bench(args: argparse.Namespace) -> int:
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server is not on PATH", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="hub-failover-"))
    redis = RedisServer(binary, tmp / "redis").start()
    config = {"broadcast": {"interval": args.interval},
              "sources": {"prometheus": {"enabled": False}, "business": {"enabled": False}},
              "cluster": {"redis_url": redis.url}}
    hubs = [HubProcess(config, tmp) for _ in range(args.replicas)]
    r = Redis.from_url(redis.url)
    results: list[float] = []
    pauses: list[float] = []
    try:
        for h in hubs:
            h.start(wait=False)
        for h in hubs:
            await asyncio.to_thread(h.wait_healthy, path="/ready")
        async with aiohttp.ClientSession() as session:
            clients = {h.port: await Client(session, h.url).start() for h in hubs}
            for run in range(1, args.runs + 1):
                async def find_leader() -> Any:
                    for h in hubs:
                        body = await get_json(session, h.url + "/ready")
                        if body.get("cluster", {}).get("leader"):
                            return h, body["cluster"]["replica"]
                    return None

                leader, old_id = await until(find_leader, 10, "no leader")
                survivors = [h for h in hubs if h is not leader]
                await asyncio.sleep(random.uniform(0, args.interval))
                last_id = (await r.xrevrange("{hub}:snapshots", count=1))[0][0]
                t0 = time.monotonic()
                (leader.proc.kill if args.signal == "kill" else leader.proc.terminate)()  # type: ignore[union-attr]

                async def new_entry() -> Any:
                    for _id, f in await r.xrange("{hub}:snapshots", min=last_id):
                        if f[b"replica"].decode() != old_id:
                            return int(f[b"seq"])
                    return None

                seq = await until(new_entry, 10, "no takeover")
                await until(lambda: _arrived(clients, survivors, seq), 5, "not delivered")
                took = min(clients[h.port].arrivals[seq] for h in survivors) - t0
                results.append(took)
                # The pause a client saw: from the previous snapshot to the new collector's first.
                pause = max(clients[h.port].arrivals[seq] - clients[h.port].arrivals[seq - 1]
                            for h in survivors if seq - 1 in clients[h.port].arrivals)
                pauses.append(pause)
                for h in survivors:
                    order = clients[h.port].order
                    assert order == list(range(order[0], order[0] + len(order))), f"gap in {order}"
                print(f"run {run:2d}: {took * 1000:6.0f} ms = {took / args.interval:.2f} intervals after the signal;"
                      f" clients waited {pause * 1000:.0f} ms between seq {seq - 1} and {seq}", flush=True)
                await clients[leader.port].close()
                leader.stop()
                leader.start(wait=False)
                await asyncio.to_thread(leader.wait_healthy, path="/ready")
                clients[leader.port] = await Client(session, leader.url).start()
            for c in clients.values():
                await c.close()
    finally:
        await r.aclose()
        for h in hubs:
            h.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    ms = sorted(x * 1000 for x in results)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    print(f"\n{args.signal}: {len(ms)} runs, interval {args.interval * 1000:.0f} ms, {args.replicas} replicas: "
          f"min {ms[0]:.0f} ms, median {statistics.median(ms):.0f} ms, p95 {p95:.0f} ms, max {ms[-1]:.0f} ms "
          f"(max {ms[-1] / 1000 / args.interval:.2f} intervals); longest pause between two snapshots "
          f"{max(pauses) * 1000:.0f} ms ({max(pauses) / args.interval:.2f} intervals)")
    return 0


async def _arrived(clients: dict[int, Client], survivors: list[HubProcess], seq: int) -> bool:
    return all(seq in clients[h.port].arrivals for h in survivors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--signal", choices=("kill", "term"), default="kill")
    return asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
