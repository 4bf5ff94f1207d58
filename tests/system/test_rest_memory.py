"""Concurrent slow readers of the REST history, against a real `hub serve` at 3,000 series per query.

The fleet comes from bench/fleetkit/prom.py's stand-in Prometheus, as in `python -m bench.fleet`:
a real Prometheus cannot be made to hold a fleet of a chosen size with fixed values. The client
budget is raised to 64 MiB, so every body may be the whole history (at the default 1 MiB it would
be the newest snapshot alone): what bounds memory then is streaming and the number of streams.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from aiohttp import ClientSession, ClientTimeout

from bench.fleetkit.hub import proc_status_kb, start_hub
from bench.fleetkit.prom import FleetPrometheus
from hub.config import DEFAULT_QUERIES
from hub.bodies import MAX_STREAMS
from tests.support.raw import raw_http_get, read_head

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MiB = 1 << 20
SERIES = 3000
READERS = 16
#: an operator's generous client budget: each history body may then be the whole 64 MiB history
BUDGET = 64 * MiB


def slow_reader(port: int, gzip: bool, stop: threading.Event, out: dict[str, Any]) -> None:
    """GET the whole history through an 8 KiB receive buffer, reading 4 KiB every 20 ms until `stop`."""
    sock = raw_http_get(port, "/api/metrics/history?limit=360", rcvbuf=8192,
                        headers={"Accept-Encoding": "gzip" if gzip else "identity"})
    try:
        status, headers, rest = read_head(sock, timeout=60)
        out.update(status=status, headers=headers, bytes=len(rest))
        while not stop.is_set():
            chunk = sock.recv(4096)
            if not chunk:
                out["complete"] = True   # the whole body came: its turn was free again before the end
                break
            out["bytes"] += len(chunk)
            stop.wait(0.02)  # the pace of a slow reader
    except OSError as exc:
        out["error"] = repr(exc)
    finally:
        sock.close()


async def test_sixteen_slow_history_readers_keep_the_hub_rss_bounded(tmp_path: Path) -> None:
    prom = FleetPrometheus(SERIES, queries=dict(DEFAULT_QUERIES))
    await prom.start()
    try:
        hub = await start_hub(workdir=tmp_path, python=sys.executable, prometheus_url=prom.url, interval=0.5,
                              max_client_buffer_bytes=BUDGET)
        try:
            deadline = time.monotonic() + 180
            while (await hub.metrics()).get("hub_history_bytes", 0) < 0.85 * 64 * MiB:  # history_max_bytes
                assert time.monotonic() < deadline, "the history did not fill within 180 s"
                await asyncio.sleep(1.0)
            proc = psutil.Process(hub.pid)

            async def rss_for(seconds: float) -> list[float]:
                samples = []
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    samples.append(proc.memory_info().rss / MiB)
                    await asyncio.sleep(0.1)
                return samples

            idle = statistics.median(await rss_for(3.0))
            stop = threading.Event()
            results: list[dict[str, Any]] = [{} for _ in range(READERS)]
            threads = [threading.Thread(target=slow_reader, args=(hub.port, i % 2 == 1, stop, results[i]))
                       for i in range(READERS)]
            for t in threads:
                t.start()
            streams: list[float] = []

            async def count_streams() -> None:
                # The hub's own count of bodies being written: a turn goes back when a body is handed
                # to the socket, which for a gzip body of a few MB can be long before a slow reader
                # has read it, so the readers alone cannot tell how many streamed at once.
                while not stop.is_set():
                    streams.append((await hub.metrics()).get("hub_http_body_streams", -1))
                    await asyncio.sleep(0.1)

            counter = asyncio.ensure_future(count_streams())
            try:
                busy = await rss_for(10.0)
            finally:
                stop.set()
                for t in threads:
                    t.join(timeout=30)
                await counter
            peak = max(busy)
            hwm = proc_status_kb(hub.pid, "VmHWM") / 1024
            print(f"\n{SERIES} series, {READERS} slow readers: idle RSS {idle:.0f} MB, peak {peak:.0f} MB "
                  f"(VmHWM since start {hwm:.0f} MB); statuses {sorted(r.get('status', 0) for r in results)}")

            assert peak <= 2 * idle and peak < 512, f"idle {idle:.0f} MB, peak {peak:.0f} MB"
            assert not [r for r in results if "error" in r], results
            streamed = [r for r in results if r["status"] == 200]
            refused = [r for r in results if r["status"] == 503]
            # At most MAX_STREAMS bodies at once, by the hub's count, and every turn taken; more than
            # MAX_STREAMS readers got one only as bodies were handed to their sockets and gave theirs
            # back; every other request was refused busy.
            assert streams and 0 < max(streams) <= MAX_STREAMS, streams
            assert len(streamed) >= MAX_STREAMS, len(streamed)
            assert len(refused) == READERS - len(streamed) and refused
            assert all(r["bytes"] > 0 for r in streamed)
            assert all(r["headers"].get("retry-after") == "1" for r in refused)

            # Once they are gone, a reader at full speed gets the whole history.
            async with ClientSession(timeout=ClientTimeout(total=60)) as http, \
                    http.get(f"http://127.0.0.1:{hub.port}/api/metrics/history?limit=360") as resp:
                assert resp.status == 200
                items = orjson.loads(await resp.read())["items"]
            seqs = [item["seq"] for item in items]
            assert len(seqs) > 10 and seqs == list(range(seqs[0], seqs[-1] + 1))
        finally:
            await hub.stop()
    finally:
        await prom.stop()
