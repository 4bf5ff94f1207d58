"""`hub demo`: the hub plus a simulated healthcare backend, a MongoDB-wire store and Prometheus.

Everything runs from a temporary directory and stops on Ctrl-C. The store is SecantusDB (GPL-2.0),
run as a separate child process through its own command; nothing under hub/ imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from aiohttp import web

from hub.config import build_config
from hub.sources.base import Source, SourceError, SourceResult

log = logging.getLogger(__name__)

SLO_RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "booking-slo.yml"
PROMETHEUS_MISSING = ("Prometheus is not running: no `prometheus` program on PATH. Install it "
                      "(Debian/Ubuntu: apt-get install prometheus) and run `make run` again.")
DEMO_RULES = """\
groups:
  - name: healthcare-demo
    rules:
      - alert: HealthcareApplicationDown
        expr: up{job=~"healthcare-.*"} == 0
        for: 10s
        labels: {severity: critical}
        annotations: {summary: "{{ $labels.job }} is down"}
      - alert: HighResponseTime
        expr: histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{job="healthcare-backend"}[1m]))) > 0.4
        for: 10s
        labels: {severity: warning}
        annotations: {summary: "p95 response time above 400 ms"}
      - alert: HighErrorRate
        expr: sum(rate(http_requests_total{job="healthcare-backend",status_code=~"5.."}[1m])) / sum(rate(http_requests_total{job="healthcare-backend"}[1m])) * 100 > 2
        for: 10s
        labels: {severity: critical}
        annotations: {summary: "5xx rate above 2 %"}
      - alert: DemoEnvironment
        expr: vector(1)
        labels: {severity: info}
        annotations: {summary: "This is the hub demo: data comes from a simulator"}
"""


class MissingPrometheus(Source):
    """Stands in for the Prometheus source when no binary exists, saying how to get one."""

    name = "prometheus"
    sections = ("system", "alerts")
    timeout = 1.0

    async def collect(self, budget: float) -> SourceResult:
        raise SourceError(PROMETHEUS_MISSING)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


def _secantus_command() -> list[str]:
    exe = shutil.which("secantusd-py") or str(Path(sys.executable).with_name("secantusd-py"))
    if not Path(exe).exists():
        raise RuntimeError("SecantusDB is not installed: run `make run` (it installs the demo extra) "
                           "or `pip install 'hub[demo]'`")
    return [exe]


def start_store(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start SecantusDB in `tmp` on a free port; return the process and port."""
    port = _free_port()
    logf = open(tmp / "secantus.log", "ab")  # noqa: SIM115 - lives as long as the child
    proc = subprocess.Popen(
        [*_secantus_command(), "--host", "127.0.0.1", "--port", str(port),
         "--storage-path", str(tmp / "store"), "--log-level", "WARNING"],
        stdout=logf, stderr=subprocess.STDOUT)
    _wait_port(port, proc, "SecantusDB")
    return proc, port


def start_prometheus(tmp: Path, *, targets: dict[str, int]) -> tuple[subprocess.Popen[bytes], int] | None:
    """Start a real Prometheus scraping `targets` (job -> port) every 2 s, or None if not installed."""
    exe = shutil.which("prometheus")
    if exe is None:
        return None
    port = _free_port()
    (tmp / "rules.yml").write_text(DEMO_RULES)
    jobs = "\n".join(
        f"  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{p}']" for job, p in targets.items())
    # The booking API's SLO rules where the demo runs from a checkout (deploy/ is not in the wheel),
    # so the page's error-budget figures have data.
    rules = [tmp / "rules.yml", *([SLO_RULES] if SLO_RULES.is_file() else [])]
    (tmp / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\n"
        "rule_files:\n" + "".join(f"  - {r}\n" for r in rules) + f"scrape_configs:\n{jobs}\n")
    logf = open(tmp / "prometheus.log", "ab")  # noqa: SIM115 - lives as long as the child
    proc = subprocess.Popen(
        [exe, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=logf, stderr=subprocess.STDOUT)
    _wait_port(port, proc, "Prometheus")
    return proc, port


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _serve(*, host: str, port: int, interval: float, mongo_port: int, sim_port: int,
                 prom_port: int | None) -> None:
    from hub.app import create_app
    from hub_demo.simulator import run_simulator

    raw: dict[str, Any] = {
        "server": {"host": host, "port": port},
        "broadcast": {"interval": interval, "history_size": max(60, int(3600 / interval))},
        "sources": {"business": {"mongodb_uri": f"mongodb://127.0.0.1:{mongo_port}/healthcare",
                                 "time_range": "24h", "timeout": min(5.0, interval * 0.8)},
                    "prometheus": {"url": f"http://127.0.0.1:{prom_port or 9}",
                                   "enabled": prom_port is not None, "timeout": min(5.0, interval * 0.8),
                                   # Prometheus scrapes the hub as job "hub": its own charts are backfilled too.
                                   "self_job": "hub"},
                    # The guide's two probes, aimed at the simulator: its /health fails during
                    # a frontend outage (the first within ~1 min), /api/health during latency incidents.
                    "health": {"checks": {"frontend": f"http://127.0.0.1:{sim_port}/health",
                                          "backend": f"http://127.0.0.1:{sim_port}/api/health"},
                               "timeout": min(5.0, interval * 0.8)}},
    }
    cfg = build_config(raw, environ={})
    extra = [] if prom_port is not None else [MissingPrometheus()]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    seeded = asyncio.Event()
    sim = asyncio.create_task(run_simulator(mongodb_uri=f"mongodb://127.0.0.1:{mongo_port}/healthcare",
                                            metrics_port=sim_port, stop=stop, ready=seeded))
    runner: web.AppRunner | None = None
    try:
        # The hub starts on a collection that exists and holds its history, as in production. Started
        # beside the bulk seed, its stream also saw the collection and its index being created, and
        # SecantusDB refuses to resume from a position taken after such a command ("Resume token
        # namespace does not match"): after the first tick that timed out under the seed's load, the
        # hub rebuilt every hour with a warning.
        if not await _first(seeded.wait(), stop.wait(), sim):
            return
        app = create_app(cfg, extra_sources=extra)
        runner = web.AppRunner(app, shutdown_timeout=3.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=2048)
        await site.start()
        print(f"\n  hub demo: open http://{host}:{port}/   (Ctrl-C stops everything)\n", flush=True)
        await stop.wait()
    finally:
        print("hub demo: stopping...", flush=True)
        if runner is not None:
            await runner.cleanup()
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(sim, 5)


async def _first(seeded: Awaitable[Any], stopped: Awaitable[Any], sim: asyncio.Task[None]) -> bool:
    """Wait until the simulator has seeded its history (True), Ctrl-C (False) or the simulator ended
    (RuntimeError: it cannot reach the store)."""
    waits = [asyncio.ensure_future(seeded), asyncio.ensure_future(stopped)]
    try:
        await asyncio.wait([*waits, sim], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    if waits[0].done() and not waits[0].cancelled():
        return True
    if sim.done():
        raise RuntimeError(f"the simulator stopped before seeding: {sim.exception() or 'no error'}")
    return False


def run_demo(*, host: str = "127.0.0.1", port: int = 8080, interval: float = 2.0) -> int:
    """Run the demo until Ctrl-C; every child process is stopped on the way out."""
    store = prom = None
    with tempfile.TemporaryDirectory(prefix="hub-demo-") as tmpdir:
        tmp = Path(tmpdir)
        try:
            store, mongo_port = start_store(tmp)
            sim_port = _free_port()
            started = start_prometheus(tmp, targets={"healthcare-backend": sim_port, "hub": port})
            prom_port = None
            if started is not None:
                prom, prom_port = started
                log.info("demo: Prometheus on 127.0.0.1:%s", prom_port)
            else:
                log.warning("demo: %s", PROMETHEUS_MISSING)
            asyncio.run(_serve(host=host, port=port, interval=interval, mongo_port=mongo_port,
                               sim_port=sim_port, prom_port=prom_port))
        except RuntimeError as exc:
            print(f"hub demo: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            pass
        finally:
            _stop(prom)
            _stop(store)
    return 0
