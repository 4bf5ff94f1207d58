"""A cluster follower's CPU per tick against a single process's, at N series per query (issue 26).

    python -m bench.fleet_cluster [--series 3000] [--interval 2] [--ticks 8] [--repeat 3] [--reference DIR]

Per checkout (this one, and `--reference DIR`, another checkout of the hub, measured the same way
in the same run): against bench/fleetkit/prom.py's stand-in Prometheus and a real redis-server, three
`python -m hub serve` at once with the same config (business and health sources off): a single
process (no Redis), a cluster collector (role all) and a follower (role edge) on one key prefix. No
client connects. Each window reads every process's utime + stime (all threads) and its
`hub_ticks_total` over `--ticks` intervals; `--repeat` windows, medians printed. Then the bench
itself times, in-process, what a follower does with the newest stream entry: the format-1 path
(parse `data`, encode the pieces) and, when the entry has an index, the format-2 one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from redis.asyncio import Redis

from bench.fleetkit.hub import REPO, HubProc, start_hub
from bench.fleetkit.prom import FleetPrometheus
from hub.config import DEFAULT_QUERIES
from hub.metrics import HubMetrics
from hub.stream_check import EntryCheck
from hub.stream_format import install
from tests.support.redis import RedisServer

ROLES = ("single", "collector", "follower")


async def window(hubs: dict[str, HubProc], *, interval: float, ticks: int) -> dict[str, float]:
    """CPU ms per tick of each hub over `ticks` intervals (per tick it counted itself)."""
    cpu0 = {k: h.cpu_ms() for k, h in hubs.items()}
    t0 = {k: (await h.metrics()).get("hub_ticks_total", 0.0) for k, h in hubs.items()}
    await asyncio.sleep(ticks * interval)
    cpu1 = {k: h.cpu_ms() for k, h in hubs.items()}
    t1 = {k: (await h.metrics()).get("hub_ticks_total", 0.0) for k, h in hubs.items()}
    return {k: (cpu1[k] - cpu0[k]) / max(t1[k] - t0[k], 1.0) for k in hubs}


def time_reads(fields: dict[bytes, bytes], runs: int = 20) -> dict[str, float]:
    """CPU ms per read of one stream entry (median of `runs`): format 1 (parse and encode again), and
    format 2 when indexed. CPU time, not wall time: the other processes share the cores."""
    check = EntryCheck(stream="bench", key_seq="s", key_ids="i", metrics=HubMetrics())
    out: dict[str, float] = {}
    paths: dict[str, Any] = {"format 1 (parse, encode pieces)": lambda: check.snapshot(b"0-1", fields)}
    if b"index" in fields:
        paths["format 2 (slice, compare)"] = lambda: install(fields)
    for name, fn in paths.items():
        assert fn() is not None, name
        took = []
        for _ in range(runs):
            t0 = time.thread_time()
            fn()
            took.append(time.thread_time() - t0)
        out[name] = statistics.median(took) * 1000
    return out


async def measure(root: Path, *, n: int, prom: FleetPrometheus, redis: RedisServer, tmp: Path,
                  args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    """Medians of `--repeat` windows for the three hubs of checkout `root`, and the entry read times."""
    cluster = f'\n[cluster]\nredis_url = "{redis.url}"\nkey_prefix = "{prefix}"\n'
    common: dict[str, Any] = {"workdir": tmp, "python": args.python, "prometheus_url": prom.url,
                              "interval": args.interval, "root": root}
    hubs: dict[str, HubProc] = {}
    try:
        hubs["single"] = await start_hub(**common)
        hubs["collector"] = await start_hub(**common, extra_config=cluster)
        hubs["follower"] = await start_hub(**common, extra_config=cluster, serve_args=("--role", "edge"))
        await asyncio.sleep(2 * args.interval)
        runs = [await window(hubs, interval=args.interval, ticks=args.ticks) for _ in range(args.repeat)]
        r = Redis.from_url(redis.url)
        try:
            page = cast("list[tuple[bytes, dict[bytes, bytes]]]",
                        await r.xrevrange(f"{{{prefix}}}:snapshots", count=1))
            [(_id, fields)] = page
        finally:
            await r.aclose()
        return {"cpu": {k: statistics.median(w[k] for w in runs) for k in ROLES},
                "all": {k: [round(w[k]) for w in runs] for k in ROLES},
                "data": len(fields[b"data"]), "index": len(fields.get(b"index", b"")),
                "format": fields.get(b"format", b"1 (none)").decode(), "reads": time_reads(fields)}
    finally:
        for h in hubs.values():
            await h.stop()


async def run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Measure each checkout; print one table; return the figures by checkout ("this", "reference")."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    started = time.monotonic()
    roots = {"this": REPO} | ({"reference": args.reference.resolve()} if args.reference else {})
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="hub-fleet-cluster-") as tmpdir:
        tmp = Path(tmpdir)
        redis = RedisServer(binary, tmp / "redis").start()
        prom = FleetPrometheus(args.series, queries=dict(DEFAULT_QUERIES))
        await prom.start()
        try:
            for i, (name, root) in enumerate(roots.items()):
                print(f"-- {name}: {args.series} series, {args.repeat} windows of {args.ticks} ticks ...",
                      file=sys.stderr, flush=True)
                results[name] = await measure(root, n=args.series, prom=prom, redis=redis, tmp=tmp, args=args,
                                              prefix=f"bench{i}")
        finally:
            await prom.stop()
            redis.stop()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"\n{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{args.series:,} series per query, interval {args.interval:g} s, {args.repeat} windows of {args.ticks} "
          f"ticks; run took {time.monotonic() - started:.0f} s; load average at the end {load}\n")
    print("| checkout | entry format | data / index bytes | CPU ms per tick: single / collector / follower "
          "(windows) | follower / single | follower's read of one entry (in-process, CPU ms, median) |")
    print("|---|---|---|---|---:|---|")
    for name, res in results.items():
        cpu = res["cpu"]
        per = " / ".join(f"{cpu[k]:.0f}" for k in ROLES)
        windows = "; ".join(",".join(map(str, res["all"][k])) for k in ROLES)
        ratio = f"{cpu['follower'] / cpu['single']:.2f}x" if cpu["single"] > 0 else "n/a (single below the CPU clock)"
        reads = "; ".join(f"{k}: {v:.2f}" for k, v in res["reads"].items())
        print(f"| {name} | {res['format']} | {res['data']:,} / {res['index']:,} | {per} ({windows}) | "
              f"{ratio} | {reads} |")
    return results


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m bench.fleet_cluster", description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=3000, help="series per query")
    ap.add_argument("--interval", type=float, default=2.0, help="broadcast.interval of every hub")
    ap.add_argument("--ticks", type=int, default=8, help="ticks per CPU window")
    ap.add_argument("--repeat", type=int, default=3, help="windows (medians printed)")
    ap.add_argument("--reference", type=Path, default=None, help="another checkout of the hub, measured alike")
    ap.add_argument("--python", default=sys.executable, help="Python that runs `-m hub serve`")
    args = ap.parse_args(argv)
    if args.series < 1 or args.ticks < 1 or args.repeat < 1:
        ap.error("--series, --ticks and --repeat must be >= 1")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
