"""Large-fleet benchmark (issue 12): memory, page connect, bytes per tick and fan-out CPU at N series per query.

    python -m bench.fleet [--series 300,3000] [--clients 1000] [--ticks 4]

For each N: a fake Prometheus answers the three default queries with N series each
(bench/fleetkit/prom.py); a real `python -m hub serve` (business and health sources off,
defaults otherwise) ticks until its history has filled, then Chromium and aiohttp clients connect
through a byte-counting proxy; a second hub with a longer interval measures fan-out CPU with
`--clients` Node.js `ws` clients without and with permessage-deflate. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.fanout.run import FANOUT_DIR, ensure_node_deps, raise_nofile, wait_for
from bench.fleetkit import fanout, probes
from bench.fleetkit.hub import proc_status_kb, start_hub
from bench.fleetkit.prom import FleetPrometheus
from bench.fleetkit.wire import CountingProxy
from hub.config import DEFAULT_QUERIES

MiB = 1 << 20
#: Debian's Chromium, launched by Playwright through executable_path (never `playwright install`)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: the budgets and goals of issue 12
HISTORY_BUDGET = 64 * MiB
GOALS = {"rss_mb": 256.0, "page_s": 3.0, "page_mb": 3.0, "deflate_ratio": 0.15, "cpu_ratio": 1.2}


@dataclass
class Row:
    """Everything measured at one fleet size."""

    series: int
    fill_interval: float = 0.0
    fill_s: float = 0.0
    ticks: int = 0
    snapshot_bytes: int = 0
    rss_mb: float = 0.0
    hwm_mb: float = 0.0
    history_bytes: float = 0.0
    history_entries: float = 0.0
    sources: dict[str, str] = field(default_factory=dict)
    page: dict[str, Any] = field(default_factory=dict)
    connects: dict[str, dict[str, Any]] = field(default_factory=dict)
    tick_plain: dict[str, float] = field(default_factory=dict)
    tick_deflate: dict[str, float] = field(default_factory=dict)
    fanout_interval: float = 0.0
    idle_cpu_ms: float = 0.0
    fanout: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def chromium_path() -> str | None:
    """`$HUB_CHROMIUM`, /usr/bin/chromium or `chromium` on PATH; None when there is none."""
    for cand in (os.environ.get("HUB_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


async def fill_phase(row: Row, *, prom: FleetPrometheus, workdir: Path, python: str, interval: float,
                     history_size: int | None, browser: Any, page_runs: int, tick_samples: int) -> None:
    """History filled: RSS and gauges; then page, aiohttp connects and per-tick bytes through the proxy."""
    hub = await start_hub(workdir=workdir, python=python, prometheus_url=prom.url, interval=interval,
                          history_size=history_size)
    size = history_size or 360
    t0 = time.monotonic()
    try:
        async def filled() -> dict[str, float] | None:
            m = await hub.metrics()
            # Full: the chart points span history_size ticks, and the raw history is at its count
            # or already evicting by bytes.
            return m if m.get("hub_ticks_total", 0) >= size + 1 else None

        m = await wait_for(filled, timeout=60 + 3 * size * interval, what="the history to fill", step=1.0)
        row.fill_s, row.ticks = time.monotonic() - t0, int(m["hub_ticks_total"])
        row.rss_mb = hub.rss_kb() / 1024
        row.hwm_mb = proc_status_kb(hub.pid, "VmHWM") / 1024
        row.history_bytes, row.history_entries = m["hub_history_bytes"], m["hub_history_entries"]
        row.sources = await hub.source_statuses()
        if m.get("hub_tick_failures_total", 0):
            row.notes.append(f"{int(m['hub_tick_failures_total'])} failed ticks while filling")
        if m.get("hub_collect_errors_total", 0):
            row.notes.append(f"{int(m['hub_collect_errors_total'])} failed collections while filling "
                             "(those snapshots are smaller)")
        proxy = CountingProxy(hub.port)
        await proxy.start()
        try:
            plain = await probes.tick_bytes(proxy, deflate=False, ticks=tick_samples)
            row.snapshot_bytes = int(plain["decoded"])
            row.tick_plain = plain
            row.tick_deflate = await probes.tick_bytes(proxy, deflate=True, ticks=tick_samples)
            for q in ("points", "history"):
                for deflate in (True, False):
                    r = await probes.aiohttp_connect(proxy, f"?{q}={size}", deflate=deflate)
                    row.connects[f"{q} {'deflate' if deflate else 'plain'}"] = asdict(r)
            if browser is not None:
                runs = [await probes.page_connect(browser, proxy) for _ in range(page_runs)]
                row.page = dict(runs[0])
                row.page["seconds"] = statistics.median(r["seconds"] for r in runs)
                row.page["seconds_all"] = [round(r["seconds"], 2) for r in runs]
                row.page["bytes"] = max(r["bytes"] for r in runs)
                row.page["ws_bytes"] = max(r["ws_bytes"] for r in runs)
        finally:
            await proxy.stop()
        row.hwm_mb = proc_status_kb(hub.pid, "VmHWM") / 1024  # peak, connects included
    finally:
        await hub.stop()


async def fanout_phase(row: Row, *, prom: FleetPrometheus, workdir: Path, python: str, interval: float,
                       clients: int, ticks: int, procs: int) -> None:
    """Idle CPU per tick, then fan-out CPU with `clients` plain clients, then with deflate clients."""
    # heartbeat 3600: no ping inside a window; max_client_buffer_bytes 64 MiB: clients that the
    # shared machine slows down are not evicted, so every tick reaches every client.
    hub = await start_hub(workdir=workdir, python=python, prometheus_url=prom.url, interval=interval,
                          history_size=10, max_client_buffer_bytes=64 * MiB, heartbeat=3600)
    row.fanout_interval = interval
    try:
        await asyncio.sleep(interval)
        row.idle_cpu_ms = await fanout.idle_cpu_per_tick(hub, interval=interval, ticks=ticks)
        for deflate in (False, True):
            r = await fanout.fanout_cpu_per_tick(hub, n=clients, deflate=deflate, interval=interval, ticks=ticks,
                                                 procs=procs)
            r["fanout_cpu_ms"] = r["cpu_ms_per_tick"] - row.idle_cpu_ms
            row.fanout["deflate" if deflate else "plain"] = r
            if r["closed"]:
                row.notes.append(f"{r['closed']} {'deflate' if deflate else 'plain'} clients were closed")
            await asyncio.sleep(interval)  # let the closes settle before the next window
    finally:
        await hub.stop()


def _kb(b: float) -> str:
    return f"{b / 1024:,.1f} KB" if b < 10 * MiB else f"{b / MiB:,.1f} MB"


def _mb(b: float) -> str:
    return f"{b / 1e6:,.2f} MB"


def _cpu_ratio(deflate: float, plain: float) -> str:
    # Below the idle baseline means the fan-out cost is inside the noise of one tick's collection.
    if plain <= 0:
        return "n/a"
    return f"{deflate / plain:.2f}x" if deflate > 0 else "~0x: below idle noise"


def render(rows: list[Row], *, clients: int) -> str:
    """One markdown table: a line per measure, a column per fleet size, then the goal at the largest."""
    def col(f: Any) -> list[str]:
        out = []
        for r in rows:
            try:
                out.append(f(r))
            except (KeyError, ZeroDivisionError, TypeError, ValueError):
                out.append("n/a")
        return out

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x"

    lines: list[tuple[str, list[str], str]] = [
        ("snapshot (metrics_update JSON)", col(lambda r: _kb(r.snapshot_bytes)), ""),
        ("hub RSS after the history filled", col(lambda r: f"{r.rss_mb:.0f} MB (peak {r.hwm_mb:.0f} MB)"),
         f"<= {GOALS['rss_mb']:.0f} MB"),
        ("hub_history_bytes / budget", col(lambda r: f"{r.history_bytes / MiB:.1f} / {HISTORY_BUDGET / MiB:.0f} MiB"),
         ""),
        ("hub_history_entries (ticks so far)", col(lambda r: f"{r.history_entries:.0f} ({r.ticks})"), ""),
        ("page: WebSocket request", col(lambda r: f"`{r.page['ws_request']}`"), ""),
        ("page connect: hub -> Chromium, all / WebSocket",
         col(lambda r: f"{_mb(r.page['bytes'])} / {_mb(r.page['ws_bytes'])}"), f"<= {GOALS['page_mb']:g} MB"),
        ("page: navigation -> every chart has data", col(lambda r: f"{r.page['seconds']:.2f} s"),
         f"<= {GOALS['page_s']:g} s"),
        ("page: points per chart at that moment", col(lambda r: str(r.page["chart_points"])), ""),
    ]
    for q in ("points", "history"):
        lines.append((f"aiohttp `?{q}=N` connect: wire deflate / plain (decoded; items)",
                      col(lambda r, q=q: f"{_kb(r.connects[q + ' deflate']['wire_bytes'])} / "
                                         f"{_kb(r.connects[q + ' plain']['wire_bytes'])} "
                                         f"({_kb(r.connects[q + ' plain']['decoded_bytes'])}; "
                                         f"{r.connects[q + ' plain']['items']})"), ""))
    lines += [
        ("bytes per client per tick: plain", col(lambda r: _kb(r.tick_plain["wire"])), ""),
        ("bytes per client per tick: deflate (ratio)",
         col(lambda r: f"{_kb(r.tick_deflate['wire'])} ({ratio(r.tick_deflate['wire'], r.tick_plain['wire'])})"),
         f"<= {GOALS['deflate_ratio']:g}x"),
        ("idle hub CPU per tick (no client)", col(lambda r: f"{r.idle_cpu_ms:.0f} ms"), ""),
        (f"hub CPU per tick, {clients} clients: plain / deflate",
         col(lambda r: f"{r.fanout['plain']['cpu_ms_per_tick']:.0f} / {r.fanout['deflate']['cpu_ms_per_tick']:.0f} ms"),
         ""),
        (f"fan-out CPU per tick (minus idle), {clients} clients: plain / deflate (ratio)",
         col(lambda r: f"{r.fanout['plain']['fanout_cpu_ms']:.0f} / {r.fanout['deflate']['fanout_cpu_ms']:.0f} ms "
                       f"({_cpu_ratio(r.fanout['deflate']['fanout_cpu_ms'], r.fanout['plain']['fanout_cpu_ms'])})"),
         f"<= {GOALS['cpu_ratio']:g}x"),
    ]
    head = "| measure | " + " | ".join(f"{r.series:,} series/query" for r in rows) + " | goal (largest fleet) |"
    sep = "|---|" + "---:|" * len(rows) + "---|"
    return "\n".join([head, sep] + [f"| {name} | " + " | ".join(vals) + f" | {goal} |" for name, vals, goal in lines])


def environment(rows: list[Row], args: argparse.Namespace, started: float) -> str:
    """What the numbers depend on, in one paragraph."""
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    intervals = ", ".join(f"{r.series:,}: fill {r.fill_interval:g} s ({r.ticks} ticks in {r.fill_s:.0f} s), "
                          f"fan-out {r.fanout_interval:g} s" for r in rows)
    return (f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
            f"history_size {args.history_size or 360}, history_max_bytes 64 MiB (defaults); intervals {intervals}; "
            f"{args.ticks} ticks per CPU window, {args.clients} Node.js ws clients in {args.procs} processes; "
            f"run took {time.monotonic() - started:.0f} s; load average at the end {load}")


def auto_fill_interval(n: int) -> float:
    """Short enough to fill 360 ticks in minutes, long enough for a 2-core machine to collect N series."""
    return 0.25 if n <= 1000 else 0.5


def auto_fanout_interval(n: int) -> float:
    """Long enough for `--clients` clients to take a tick (a 3,000-series frame is ~1.7 MB each)."""
    return max(1.0, round(n / 600, 1))


async def run(args: argparse.Namespace) -> list[Row]:
    """Measure every fleet size; print the table."""
    started = time.monotonic()
    raise_nofile()
    if args.clients:
        ensure_node_deps(FANOUT_DIR)
    rows: list[Row] = []
    browser = pw = None
    exe = chromium_path() if not args.no_browser else None
    if exe:
        from playwright.async_api import async_playwright

        pw = await async_playwright().start()
        browser = await pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
    elif not args.no_browser:
        print("no Chromium found (HUB_CHROMIUM, /usr/bin/chromium): page columns left empty", file=sys.stderr)
    try:
        with tempfile.TemporaryDirectory(prefix="hub-fleet-") as tmp:
            for n in args.series:
                row = Row(series=n)
                prom = FleetPrometheus(n, queries=dict(DEFAULT_QUERIES))
                await prom.start()
                try:
                    row.fill_interval = args.fill_interval or auto_fill_interval(n)
                    print(f"-- {n} series: filling the history at {row.fill_interval} s per tick ...",
                          file=sys.stderr, flush=True)
                    await fill_phase(row, prom=prom, workdir=Path(tmp), python=args.python,
                                     interval=row.fill_interval, history_size=args.history_size, browser=browser,
                                     page_runs=args.page_runs, tick_samples=args.tick_samples)
                    print(f"   filled in {row.fill_s:.0f} s; RSS {row.rss_mb:.0f} MB; page {row.page.get('seconds', 0):.2f} s",
                          file=sys.stderr, flush=True)
                    if args.clients:
                        print(f"-- {n} series: fan-out with {args.clients} clients ...", file=sys.stderr, flush=True)
                        await fanout_phase(row, prom=prom, workdir=Path(tmp), python=args.python,
                                           interval=args.fanout_interval or auto_fanout_interval(n),
                                           clients=args.clients, ticks=args.ticks, procs=args.procs)
                    if prom.unknown:
                        row.notes.append(f"the fake Prometheus got unknown queries: {sorted(prom.unknown)}")
                finally:
                    await prom.stop()
                rows.append(row)
    finally:
        if browser is not None:
            await browser.close()
        if pw is not None:
            await pw.stop()
    print()
    print(environment(rows, args, started))
    print()
    print(render(rows, clients=args.clients))
    for r in rows:
        for note in r.notes:
            print(f"\nnote ({r.series} series): {note}")
        if r.page.get("http"):
            top = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in list(r.page["http"].items())[:3])
            print(f"\nnote ({r.series} series): the page's largest HTTP responses (Chromium's sizes): {top}")
        if any(s not in ("ok", "disabled") for s in r.sources.values()):
            print(f"\nnote ({r.series} series): sources in the last snapshot: {r.sources}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return rows


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=lambda s: [int(x) for x in s.split(",") if x], default=[300, 3000],
                    help="series per query, comma-separated")
    ap.add_argument("--history-size", type=int, default=None, help="broadcast.history_size (default: the hub's, 360)")
    ap.add_argument("--fill-interval", type=float, default=None, help="tick while filling (default 0.25 s / 0.5 s)")
    ap.add_argument("--fanout-interval", type=float, default=None, help="tick while measuring fan-out CPU")
    ap.add_argument("--clients", type=int, default=1000, help="fan-out clients (0: skip the fan-out phase)")
    ap.add_argument("--ticks", type=int, default=4, help="ticks per CPU window")
    ap.add_argument("--procs", type=int, default=2, help="Node.js load-client processes")
    ap.add_argument("--page-runs", type=int, default=3, help="Chromium page loads per fleet size (median time)")
    ap.add_argument("--tick-samples", type=int, default=3, help="live ticks averaged for bytes per tick")
    ap.add_argument("--no-browser", action="store_true", help="skip the Chromium page connect")
    ap.add_argument("--python", default=sys.executable, help="Python that runs `-m hub serve`")
    ap.add_argument("--out", type=Path, default=None, help="write raw results as JSON here")
    args = ap.parse_args(argv)
    if any(n < 1 for n in args.series):
        ap.error("--series: each value must be >= 1")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
