"""Long-running behaviour: the churn soak (bench/soak.py, 60 s) and a 2,000-client reconnect storm.

Both run in the default suite (CI runs them); they are marked `slow` only so they can be
deselected locally with `-m "not slow"`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.support.hubproc import ROOT, HubProcess

pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_soak_60s_churn_shows_no_growth():
    # Fast churn (visits of 0.2-1 s) so the warm-up quarter spans a few full garbage
    # collections: until the first one, RSS climbs to its working level, then stays flat.
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--seconds", "60",
                          "--clients", "100", "--max-stay", "1.0"],
                         capture_output=True, text=True, timeout=200, cwd=ROOT)
    print(res.stdout[-4000:], res.stderr[-2000:])
    assert "verdict: OK" in res.stdout, res.stdout[-3000:]
    assert res.returncode == 0


# ----------------------------------------------------------------------------- reconnect storm

N_CLIENTS = 2000


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Storm:
    """N clients that reconnect with small jitter whenever their connection ends."""

    def __init__(self, url: str, n: int) -> None:
        self.url = url
        self.n = n
        self.connected = [False] * n
        self.updates_since_connect = [0] * n
        self.connects = [0] * n
        self.refused = 0
        self.stop = asyncio.Event()
        self.sockets: dict[int, aiohttp.ClientWebSocketResponse] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def run(self, session: aiohttp.ClientSession) -> None:
        self.tasks = [asyncio.create_task(self._client(session, i)) for i in range(self.n)]

    async def _client(self, session: aiohttp.ClientSession, i: int) -> None:
        rng = random.Random(i)
        await asyncio.sleep(rng.uniform(0, 0.5))
        while not self.stop.is_set():
            try:
                ws = await session.ws_connect(self.url + "/ws", heartbeat=None)
            except (aiohttp.ClientError, OSError):
                self.refused += 1
                await asyncio.sleep(rng.uniform(0.05, 0.5))  # jittered retry
                continue
            self.sockets[i] = ws
            self.connects[i] += 1
            self.updates_since_connect[i] = 0
            self.connected[i] = True
            try:
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT and orjson.loads(msg.data)["type"] == "metrics_update":
                        self.updates_since_connect[i] += 1
            finally:
                self.connected[i] = False
                self.sockets.pop(i, None)
            await asyncio.sleep(rng.uniform(0.0, 0.5))  # jitter before reconnecting

    def live(self, *, connects: int = 1) -> int:
        """Clients on their `connects`-th (or later) connection that got a snapshot on it."""
        return sum(1 for c, u, k in zip(self.connected, self.updates_since_connect, self.connects, strict=True)
                   if c and u and k >= connects)

    def drop_all(self) -> None:
        """Every client loses its connection at once (no close handshake)."""
        for ws in list(self.sockets.values()):
            conn = ws._response.connection
            if conn is not None and conn.transport is not None:
                conn.transport.abort()

    async def close(self) -> None:
        self.stop.set()
        for ws in list(self.sockets.values()):
            with contextlib.suppress(Exception):
                await ws.close()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def hub_connections(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url + "/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith("hub_ws_connections "):
                return int(float(line.split()[1]))
    raise AssertionError("hub_ws_connections missing")


async def all_back(storm: Storm, session: aiohttp.ClientSession, url: str, *, connects: int,
                   timeout: float) -> float:
    """Seconds until every client is on its `connects`-th connection and fed, and the hub counts exactly N."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        if storm.live(connects=connects) == storm.n:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                if await hub_connections(session, url) == storm.n:
                    return time.monotonic() - t0
        assert time.monotonic() < deadline, (
            f"only {storm.live(connects=connects)} of {storm.n} clients back after {timeout} s")
        await asyncio.sleep(0.2)


@pytest.mark.timeout(240)
async def test_reconnect_storm_after_restart_all_back_memory_bounded(tmp_path: Path):
    hub = HubProcess({"broadcast": {"interval": 1.0, "heartbeat": 30.0},
                      "server": {"max_connections": 10000},
                      "audit": {"path": str(tmp_path / "audit.jsonl")},
                      "sources": {"prometheus": {"enabled": False}, "business": {"enabled": False}}},
                     tmp_path)
    await asyncio.to_thread(hub.start)
    storm = Storm(hub.url, N_CLIENTS)
    figures: dict[str, float] = {}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await storm.run(session)
            figures["first_connect_s"] = await all_back(storm, session, hub.url, connects=1, timeout=90)
            assert hub.proc is not None
            rss_first = figures["rss_first_mb"] = rss_mb(hub.proc.pid)

            # Restart: every client is closed (1001), then reconnects with jitter to the new process.
            await asyncio.to_thread(hub.stop)
            await wait_until(lambda: storm.live() == 0, timeout=20)
            await asyncio.to_thread(hub.start)
            figures["restart_storm_s"] = await all_back(storm, session, hub.url, connects=2, timeout=90)
            assert hub.proc is not None
            pid = hub.proc.pid
            figures["rss_after_restart_storm_mb"] = rss_mb(pid)

            # Two more storms against the same process: every client drops at once and comes back.
            for k in (1, 2):
                storm.drop_all()
                figures[f"drop_storm_{k}_s"] = await all_back(storm, session, hub.url, connects=2 + k, timeout=90)
                figures[f"rss_after_drop_storm_{k}_mb"] = rss_mb(pid)
    finally:
        await storm.close()
        await asyncio.to_thread(hub.stop)
    print("reconnect storm figures:", figures, "refused connects:", storm.refused)
    for key in ("rss_after_restart_storm_mb", "rss_after_drop_storm_1_mb", "rss_after_drop_storm_2_mb"):
        assert figures[key] < 2 * rss_first, (key, figures)
    log = hub.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


async def wait_until(pred, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.1)
