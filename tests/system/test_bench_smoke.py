"""The fan-out benchmark's machinery: the load client's counting, and one tiny run of the reference.

No timing is asserted here: numbers come only from `python -m bench.fanout.run`.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from pathlib import Path

import pytest
from aiohttp import WSMsgType, web

from bench.fanout import payload, run
from hub.vocab import utc_iso
from tests.support import free_port, need_program

pytestmark = [pytest.mark.timeout(120), pytest.mark.untimed]


@pytest.fixture
def node_deps() -> None:
    """Node.js plus the pinned `ws` for the load client and the reference server."""
    need_program("node", hint="the fan-out benchmark's load client and reference server run on Node.js")
    if not all((d / "node_modules" / "ws").is_dir() for d in (run.FANOUT_DIR, run.REFERENCE_DIR)):
        need_program("npm", hint="installs the benchmark's pinned ws package")
    run.ensure_node_deps(run.REFERENCE_DIR)
    run.ensure_node_deps(run.FANOUT_DIR)


async def test_load_client_counts_missing_seqs_and_delays(node_deps: None) -> None:
    # A tiny broadcaster that deliberately skips seq 3 for its first client: the load client
    # must report exactly that one gap, and a delay for every message that did arrive.
    conns: list[web.WebSocketResponse] = []
    connected = asyncio.Event()

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conns.append(ws)
        if len(conns) == 3:
            connected.set()
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    clients = run.LoadClients(f"ws://127.0.0.1:{port}/ws", 3, procs=1)
    try:
        ready = await clients.start(timeout=30)
        assert ready == {"connected": 3, "failed": 0, "errors": []}
        await asyncio.wait_for(connected.wait(), 10)
        for seq in range(1, 6):
            text = json.dumps({"type": "metrics_update", "seq": seq, "timestamp": utc_iso(), "data": {}})
            for i, ws in enumerate(conns):
                if not (seq == 3 and i == 0):
                    await ws.send_str(text)
            await asyncio.sleep(0.05)

        async def all_have_5() -> bool:
            st = await clients.status()
            return st is not None and st["min_seq"] == 5

        await run.wait_for(all_have_5, timeout=10, what="seq 5 at every client")
        rep = await clients.report(1, 5)
        assert rep["missing"] == 1
        assert rep["clients_missing"] == 1
        assert {s: len(v) for s, v in rep["delays"].items()} == {1: 3, 2: 3, 3: 2, 4: 3, 5: 3}
        assert all(0 <= d < 10_000 for v in rep["delays"].values() for d in v)
        assert rep["closed"] == 0
    finally:
        await clients.stop()
        await runner.cleanup()


@pytest.mark.parametrize("kind", ["seed", "floor"])
async def test_reference_server_measured_end_to_end(node_deps: None, tmp_path: Path, kind: str) -> None:
    # The seed's Node.js loop and the floor (bench/floor/server.py): same clients, same frame.
    parts = payload.seed_message_parts()
    payload_file = tmp_path / "payload.json"
    payload_file.write_text(json.dumps(parts))
    expected = len(json.dumps({"type": "metrics_update", "seq": 1, "timestamp": "2026-11-27T17:00:00.000Z",
                               **parts}, separators=(",", ":")))

    res = await run.measure(kind, 20, broadcasts=3, interval=0.3, procs=2, workdir=tmp_path,
                            prometheus_url="http://127.0.0.1:1", payload_file=payload_file,
                            python=sys.executable, idle_ticks=2)

    assert (res.connected, res.failed, res.closed) == (20, 0, 0), res.errors
    assert res.broadcasts == 3
    assert res.missing == 0
    assert abs(res.frame_bytes - expected) <= 0.1 * expected
    assert res.p50_ms >= 0 and res.p50_ms <= res.p99_ms <= res.max_ms
    assert res.cpu_ms_per_broadcast >= 0 and res.rss_kb > 0
    table = run.render_table([res])
    assert f"| 20 | {kind} |" in table


def test_table_has_ratios_for_each_n() -> None:
    hub = run.Result(server="hub", clients=1000, broadcasts=20, cpu_ms_per_broadcast=8.0, idle_cpu_ms_per_tick=1.0,
                     fanout_cpu_ms=7.0, p99_ms=30.0, kb_per_connection=9.0)
    seed = run.Result(server="seed", clients=1000, broadcasts=20, cpu_ms_per_broadcast=10.0, idle_cpu_ms_per_tick=0.0,
                      fanout_cpu_ms=10.0, p99_ms=40.0, kb_per_connection=10.0)
    table = run.render_table([hub, seed])
    assert "| 1000 | 0.80x | 0.70x | 0.75x | 0.90x | 0 |" in table
    assert math.isnan(run.percentile([], 50))
    assert run.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert run.percentile([float(i) for i in range(1, 101)], 99) == 99.0


def test_table_has_ratios_to_the_floor_and_the_seed() -> None:
    rows = [run.Result(server=kind, clients=3000, broadcasts=20, cpu_ms_per_broadcast=cpu, idle_cpu_ms_per_tick=idle,
                       fanout_cpu_ms=cpu - idle, kb_per_connection=9.0)
            for kind, cpu, idle in (("hub", 30.0, 3.0), ("seed", 40.0, 0.0), ("floor", 20.0, 0.0))]
    rows[2].sys_ms_per_broadcast = 18.5
    table = run.render_table(rows)
    # kernel ms, fan-out µs per client, CPU/floor, fan-out/floor, CPU/seed
    assert "| 3000 | hub | n/a | 9.00 | 1.50x | 1.35x | 0.75x |" in table
    assert "| 3000 | seed | n/a | 13.33 | 2.00x | 2.00x | 1.00x |" in table
    assert "| 3000 | floor | 18.5 | 6.67 | 1.00x | 1.00x | 0.50x |" in table
