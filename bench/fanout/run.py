"""Fan-out benchmark: the hub against the seed's Node.js `ws` loop and the floor, same clients, same payload.

    python -m bench.fanout.run [--clients 1000,5000,9000] [--broadcasts 20] [--interval 1.0]
                               [--servers hub,seed,floor]

For each N and each server: start a fresh server, measure its idle CPU and RSS with no client,
connect N WebSocket clients (Node.js `ws`, split over --procs processes), then over --broadcasts
ticks read the server's CPU time and RSS from /proc and every client's delivery delay and
missing `seq`s. Prints a markdown table with hub/seed ratios and each server's CPU as a ratio to the
floor (bench/floor/server.py) and to the seed; raw results go to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import math
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientSession, ClientTimeout, web

from bench.procs import read_event, stop_load_clients, stop_process
from bench.fanout import payload

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
FANOUT_DIR = BENCH / "fanout"
REFERENCE_DIR = BENCH / "reference"
RESULTS_DIR = BENCH / "results"
NOFILE_WANTED = 20000
SERVERS = ("hub", "seed", "floor")
#: connection attempts in flight over all load-client processes; kept below aiohttp's default
#: listen backlog (128) so no SYN is dropped and retried a second later
CONNECT_CONCURRENCY = 100
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Prometheus' default queries as the hub's config has them; the fake Prometheus answers these.
try:
    from hub.config import DEFAULT_QUERIES
except ImportError:  # pragma: no cover - bench/ used without hub/ on the path
    DEFAULT_QUERIES = {}


# --------------------------------------------------------------------------- environment


def raise_nofile(wanted: int = NOFILE_WANTED) -> int:
    """Raise this process' open-file soft limit towards `wanted` (children inherit it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def node_program() -> str:
    """The `node` to run (env NODE overrides), or SystemExit when there is none."""
    node = os.environ.get("NODE") or shutil.which("node")
    if not node:
        raise SystemExit("node is not on PATH: the reference server and the load client need Node.js >= 18")
    return node


def ensure_node_deps(directory: Path) -> None:
    """Install `directory`'s pinned npm dependencies (`npm ci`) unless node_modules has them; one
    process at a time (parallel test workers share the directory, and two `npm ci` there break both)."""
    marker = directory / "node_modules" / "ws" / "package.json"
    if marker.exists():
        return
    npm = shutil.which("npm")
    if not npm:
        raise SystemExit(f"npm is not on PATH: cannot install {directory.name}/'s dependencies")
    npm_ci_once(npm, directory, marker)


def npm_ci_once(npm: str, directory: Path, marker: Path) -> None:
    """`npm ci` in `directory` unless `marker` exists, under a file lock: a second process waits, then
    finds `marker` and returns (two `npm ci` in one directory break each other)."""
    with open(directory / ".npm-ci.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():  # another process installed it while this one waited
            return
        print(f"installing Node dependencies in {directory.relative_to(REPO)} (npm ci)", file=sys.stderr)
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=directory, check=True,
                       stdin=subprocess.DEVNULL, timeout=300)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_ms(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads) in ms, from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) * 1000.0 / CLK_TCK


def proc_sys_ms(pid: int) -> float:
    """System (kernel) CPU time of process `pid` in ms: the part spent in syscalls and softirqs."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2:].split()[12]) * 1000.0 / CLK_TCK


def proc_rss_kb(pid: int) -> int:
    """Resident set size of process `pid` in KiB, from /proc/<pid>/status VmRSS."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def wait_for(predicate: Any, *, timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll async `predicate()` until it returns a truthy value; TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(step)


async def sleep_until_wall(t: float) -> None:
    """Sleep until wall-clock time `t` (seconds since the epoch)."""
    delay = t - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


# --------------------------------------------------------------------------- fake Prometheus


class FakePrometheus:
    """A stand-in Prometheus HTTP API serving fixed answers, so the hub's frames carry them.

    A mock only because the benchmarks need fixed, realistic query results; the hub's own tests
    run against a real Prometheus. Answers are encoded once, so serving them costs almost nothing.
    `results` maps PromQL to a result list (default: the small fixed payload).
    """

    def __init__(self, *, queries: dict[str, str] | None = None,
                 results: dict[str, list[dict[str, Any]]] | None = None,
                 alerts: list[dict[str, Any]] | None = None) -> None:
        if results is None:
            results = payload.prometheus_query_map(dict(queries or DEFAULT_QUERIES))
        self.by_query = {promql: orjson.dumps({"status": "success",
                                               "data": {"resultType": "vector", "result": result}})
                         for promql, result in results.items()}
        self.alerts = orjson.dumps({"status": "success",
                                    "data": {"alerts": payload.prometheus_alerts() if alerts is None else alerts}})
        self.requests = 0
        #: queries asked that have no answer here (answered with an empty result)
        self.unknown: set[str] = set()
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _query(self, request: web.Request) -> web.Response:
        self.requests += 1
        params = dict(request.query)
        if request.method == "POST":
            params.update(await request.post())
        query = str(params.get("query", ""))
        body = self.by_query.get(query)
        if body is None:
            self.unknown.add(query[:200])
            body = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
        return web.Response(body=body, content_type="application/json")

    async def _alerts(self, _request: web.Request) -> web.Response:
        self.requests += 1
        return web.Response(body=self.alerts, content_type="application/json")

    async def _ok(self, _request: web.Request) -> web.Response:
        return web.Response(text="Prometheus is Ready.\n")

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        app = web.Application()
        app.router.add_route("*", "/api/v1/query", self._query)
        app.router.add_get("/api/v1/alerts", self._alerts)
        app.router.add_get("/-/ready", self._ok)
        app.router.add_get("/-/healthy", self._ok)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# --------------------------------------------------------------------------- servers under test


@dataclass
class Server:
    """One running server under test: its pid, WebSocket URL and log file."""

    kind: str
    proc: asyncio.subprocess.Process
    port: int
    ws_url: str
    log: Path
    info: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        await stop_process(self.proc)


#: the hub's WebSocket heartbeat in the benchmark: longer than any measuring window, because the
#: seed sends no pings and the table compares broadcasts (see bench/README.md for its cost)
BENCH_HEARTBEAT = 3600.0


def hub_config_text(*, port: int, interval: float, prometheus_url: str,
                    heartbeat: float = BENCH_HEARTBEAT) -> str:
    """The hub's config for the benchmark: fake Prometheus, no MongoDB, no health checks, room for
    20,000 clients. The seed's feed ran no health checks (its AlertingService did, once a minute,
    apart from the feed); the hub's defaults probe the guide's two hostnames, which do not resolve
    here, so every tick would time a failed DNS lookup the reference never makes."""
    return (
        "[server]\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        "max_connections = 20000\n"
        "\n[broadcast]\n"
        f"interval = {interval}\n"
        f"heartbeat = {heartbeat}\n"
        "\n[sources.prometheus]\n"
        f'url = "{prometheus_url}"\n'
        "\n[sources.business]\n"
        "enabled = false\n"
        "\n[sources.health]\n"
        "enabled = false\n"
    )


async def _port_open(port: int) -> bool:
    try:
        _r, w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    w.close()
    with contextlib.suppress(OSError):
        await w.wait_closed()
    return True


async def start_server(kind: str, *, workdir: Path, interval: float, prometheus_url: str,
                       payload_file: Path, python: str, hub_root: Path = REPO) -> Server:
    """Start a fresh `hub` or `seed` server on a free port and wait until it serves."""
    port = free_port()
    log = workdir / f"{kind}-{port}.log"
    env = dict(os.environ)
    if kind == "hub":
        cfg = workdir / f"hub-{port}.toml"
        cfg.write_text(hub_config_text(port=port, interval=interval, prometheus_url=prometheus_url))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hub_root), env.get("PYTHONPATH", "")]))
        # Seed-era variables would override the config (hub.config.env_overrides).
        for name in ("PROMETHEUS_URL", "MONGODB_URI"):
            env.pop(name, None)
        argv = [python, "-m", "hub", "serve", "--config", str(cfg)]
        ws_url = f"ws://127.0.0.1:{port}/ws"
    elif kind == "seed":
        argv = [node_program(), str(REFERENCE_DIR / "seed_ws_server.js"), "--port", str(port),
                "--interval-ms", str(round(interval * 1000)), "--payload", str(payload_file)]
        ws_url = f"ws://127.0.0.1:{port}/"
    elif kind == "floor":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
        argv = [python, "-m", "bench.floor.server", "--port", str(port),
                "--interval-ms", str(round(interval * 1000)), "--payload", str(payload_file)]
        ws_url = f"ws://127.0.0.1:{port}/"
    else:
        raise ValueError(f"unknown server kind {kind!r}")
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(*argv, cwd=hub_root if kind == "hub" else REPO, env=env, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=out, stderr=asyncio.subprocess.STDOUT)
    server = Server(kind=kind, proc=proc, port=port, ws_url=ws_url, log=log)

    async def serving() -> bool:
        if proc.returncode is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{kind} server exited with {proc.returncode}:\n{tail}")
        if not await _port_open(port):
            return False
        if kind != "hub":
            return True
        try:
            async with ClientSession(timeout=ClientTimeout(total=2)) as http, \
                    http.get(f"http://127.0.0.1:{port}/ready") as resp:
                return resp.status == 200
        except OSError:
            return False

    try:
        await wait_for(serving, timeout=30 + 3 * interval, what=f"{kind} server to serve", step=0.1)
        if kind == "hub":
            server.info = await hub_info(port)
    except BaseException:
        await server.stop()
        raise
    return server


async def hub_info(port: int) -> dict[str, str]:
    """Labels of `hub_info` from the hub's /metrics (version, loop), or {} when absent."""
    try:
        async with ClientSession(timeout=ClientTimeout(total=5)) as http, \
                http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            text = await resp.text()
    except OSError:
        return {}
    for line in text.splitlines():
        if line.startswith("hub_info{"):
            labels = line[line.index("{") + 1:line.rindex("}")]
            return dict((kv.split("=", 1)[0], kv.split("=", 1)[1].strip('"')) for kv in labels.split(",") if "=" in kv)
    return {}


async def capture_hub_parts(port: int, *, timeout: float = 30.0) -> dict[str, Any]:
    """`data` and `sources` of the hub's latest snapshot once every enabled source is ok."""

    async def complete() -> dict[str, Any] | None:
        async with ClientSession(timeout=ClientTimeout(total=5)) as http, \
                http.get(f"http://127.0.0.1:{port}/api/metrics/snapshot") as resp:
            resp.raise_for_status()
            snap = await resp.json()
        if any(s.get("status") not in ("ok", "disabled") for s in snap["sources"].values()):
            return None
        return {"data": snap["data"], "sources": snap["sources"]}

    return await wait_for(complete, timeout=timeout, what="a hub snapshot with every source ok", step=0.2)


# --------------------------------------------------------------------------- load clients


class LoadClients:
    """N WebSocket clients in several Node.js processes (bench/fanout/load_client.js)."""

    def __init__(self, url: str, n: int, *, procs: int, concurrency: int = 200) -> None:
        self.url, self.n, self.nprocs, self.concurrency = url, n, max(1, min(procs, n or 1)), concurrency
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, *, timeout: float) -> dict[str, Any]:
        """Spawn the processes and wait until every connection attempt settled; totals."""
        node = node_program()
        sizes = [self.n // self.nprocs + (1 if i < self.n % self.nprocs else 0) for i in range(self.nprocs)]
        for size in sizes:
            proc = await asyncio.create_subprocess_exec(
                node, str(FANOUT_DIR / "load_client.js"), "--url", self.url, "--count", str(size),
                "--concurrency", str(self.concurrency), cwd=FANOUT_DIR,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024)
            self.procs.append(proc)
        readies = await asyncio.wait_for(asyncio.gather(*(self._read(p, "ready") for p in self.procs)), timeout)
        return {"connected": sum(r["connected"] for r in readies), "failed": sum(r["failed"] for r in readies),
                "errors": [e for r in readies for e in r["errors"]][:5]}

    async def _read(self, proc: asyncio.subprocess.Process, event: str) -> dict[str, Any]:
        return await read_event(proc, event)

    async def _ask(self, cmd: dict[str, Any], event: str) -> list[dict[str, Any]]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write((json.dumps(cmd) + "\n").encode())
        return list(await asyncio.wait_for(asyncio.gather(*(self._read(p, event) for p in self.procs)), 120))

    async def status(self) -> dict[str, Any] | None:
        """Merged status, or None while some process is still receiving a burst."""
        parts = await self._ask({"cmd": "status"}, "status")
        if any(p["busy"] for p in parts):
            return None
        open_parts = [p for p in parts if p["open"]]
        max_seq = max((p["max_seq"] for p in parts), default=-1)
        spans = [(p["first_arrival_max_seq"], p["last_arrival_max_seq"]) for p in parts if p["max_seq"] == max_seq]
        return {
            "open": sum(p["open"] for p in parts),
            "min_seq": min((p["min_seq"] for p in open_parts), default=-1),
            "max_seq": max((p["max_seq"] for p in parts), default=-1),
            "last_arrival": max(p["last_arrival"] for p in parts) / 1000.0,
            # first and last arrival of the newest seq over every client (wall clock, s)
            "max_seq_span": (min(a for a, _ in spans) / 1000.0, max(b for _, b in spans) / 1000.0),
            "closed": sum(p["closed"] for p in parts),
        }

    async def report(self, first: int, last: int) -> dict[str, Any]:
        """Per-seq delay lists merged over processes, missing counts, closes, frame size."""
        parts = await self._ask({"cmd": "report", "from": first, "to": last}, "report")
        delays: dict[int, list[float]] = {s: [] for s in range(first, last + 1)}
        sizes: dict[int, int] = {}
        close_codes: dict[str, int] = {}
        for p in parts:
            sizes.update((int(s), n) for s, n in p["bytes"].items())
            for s, values in p["delays"].items():
                delays[int(s)].extend(values)
            for code, count in p["close_codes"].items():
                close_codes[code] = close_codes.get(code, 0) + count
        return {"delays": delays, "frame_sizes": sizes, "missing": sum(p["missing"] for p in parts),
                "clients_missing": sum(p["clients_missing"] for p in parts),
                "closed": sum(p["closed"] for p in parts), "close_codes": close_codes,
                "frame_bytes": max(p["frame_bytes"] for p in parts)}

    async def stop(self) -> None:
        await stop_load_clients(self.procs)


# --------------------------------------------------------------------------- one measurement


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class Result:
    """What one (server, N) run measured."""

    server: str
    clients: int
    broadcasts: int = 0
    connected: int = 0
    failed: int = 0
    connect_s: float = math.nan
    cpu_ms_per_broadcast: float = math.nan
    #: the kernel's share of cpu_ms_per_broadcast (stime)
    sys_ms_per_broadcast: float = math.nan
    idle_cpu_ms_per_tick: float = math.nan
    fanout_cpu_ms: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    worst_max_ms: float = math.nan
    missing: int = 0
    clients_missing: int = 0
    closed: int = 0
    close_codes: dict[str, int] = field(default_factory=dict)
    rss0_kb: int = 0
    rss_connected_kb: int = 0
    rss_kb: int = 0
    kb_per_connection: float = math.nan
    frame_bytes: int = 0
    #: broadcasts in the window whose frame was >10% smaller than the largest (a source failed)
    short_frames: int = 0
    seq_first: int = 0
    seq_last: int = 0
    info: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: how many measurements this row combines (medians; the CPU range is min..max)
    runs: int = 1
    cpu_range: tuple[float, float] = (math.nan, math.nan)
    fanout_range: tuple[float, float] = (math.nan, math.nan)


_MEDIAN_FIELDS = ("connect_s", "cpu_ms_per_broadcast", "sys_ms_per_broadcast", "idle_cpu_ms_per_tick", "fanout_cpu_ms", "p50_ms", "p99_ms",
                  "max_ms", "kb_per_connection", "rss0_kb", "rss_connected_kb", "rss_kb")
_SUM_FIELDS = ("broadcasts", "failed", "missing", "clients_missing", "closed", "short_frames")


def combine(results: list[Result]) -> list[Result]:
    """One row per (N, server) in first-seen order: medians of repeated runs, sums of counts."""
    groups: dict[tuple[int, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.clients, r.server), []).append(r)
    rows = []
    for (n, kind), rs in groups.items():
        ok = [r for r in rs if r.broadcasts] or rs
        row = Result(server=kind, clients=n, runs=len(ok), info=next((r.info for r in rs if r.info), {}))
        for name in _MEDIAN_FIELDS:
            values = [getattr(r, name) for r in ok if not math.isnan(getattr(r, name))]
            setattr(row, name, statistics.median(values) if values else math.nan)
        for name in _SUM_FIELDS:
            setattr(row, name, sum(getattr(r, name) for r in rs))
        row.connected = min(r.connected for r in rs)
        row.worst_max_ms = max((r.worst_max_ms for r in ok if not math.isnan(r.worst_max_ms)), default=math.nan)
        row.frame_bytes = max(r.frame_bytes for r in rs)
        row.errors = [e for r in rs for e in r.errors]
        for name, attr in (("cpu_range", "cpu_ms_per_broadcast"), ("fanout_range", "fanout_cpu_ms")):
            values = [getattr(r, attr) for r in ok if not math.isnan(getattr(r, attr))]
            setattr(row, name, (min(values), max(values)) if values else (math.nan, math.nan))
        rows.append(row)
    return rows


async def _aligned_status(clients: LoadClients, *, interval: float, min_seq: int, timeout: float) -> dict[str, Any]:
    """Wait until every open client holds `min_seq`, then until the middle of the quiet gap between
    that broadcast's last arrival and the next one's expected first: a CPU reading there splits
    ticks cleanly."""

    async def reached() -> dict[str, Any] | None:
        st = await clients.status()
        return st if st is not None and st["open"] and st["min_seq"] >= min_seq else None

    st = await wait_for(reached, timeout=timeout, what=f"every client to receive seq {min_seq}")
    first, last = st["max_seq_span"]
    await sleep_until_wall((last + first + interval) / 2)
    return st


async def measure(kind: str, n: int, *, broadcasts: int, interval: float, procs: int, workdir: Path,
                  prometheus_url: str, payload_file: Path, python: str, hub_root: Path = REPO,
                  idle_ticks: int = 5, concurrency: int = CONNECT_CONCURRENCY) -> Result:
    """Run one server with `n` clients for `broadcasts` ticks; the numbers of the table row."""
    res = Result(server=kind, clients=n)
    server = await start_server(kind, workdir=workdir, interval=interval, prometheus_url=prometheus_url,
                                payload_file=payload_file, python=python, hub_root=hub_root)
    res.info = server.info
    clients = LoadClients(server.ws_url, n, procs=procs, concurrency=max(1, concurrency // max(1, procs)))
    try:
        # Idle: a whole number of intervals with no client gives the per-tick cost of
        # collecting and timers alone, and the baseline RSS for memory per connection.
        await asyncio.sleep(interval)
        cpu_a = proc_cpu_ms(server.pid)
        await asyncio.sleep(idle_ticks * interval)
        res.idle_cpu_ms_per_tick = (proc_cpu_ms(server.pid) - cpu_a) / idle_ticks
        res.rss0_kb = proc_rss_kb(server.pid)

        t_connect = time.monotonic()
        ready = await clients.start(timeout=120 + n / 50)
        res.connect_s = round(time.monotonic() - t_connect, 2)
        res.connected, res.failed, res.errors = ready["connected"], ready["failed"], ready["errors"]
        if res.connected == 0:
            raise RuntimeError(f"no client could connect to {kind}: {ready['errors']}")
        res.rss_connected_kb = proc_rss_kb(server.pid)

        # Start one full broadcast after everyone connected, between two ticks.
        st = await clients.status() or await wait_for(clients.status, timeout=30, what="quiet clients")
        start = await _aligned_status(clients, interval=interval, min_seq=max(st["max_seq"], 0) + 1,
                                      timeout=10 + 3 * interval)
        first_seq = start["max_seq"]
        cpu0, sys0 = proc_cpu_ms(server.pid), proc_sys_ms(server.pid)
        end = await _aligned_status(clients, interval=interval, min_seq=first_seq + broadcasts,
                                    timeout=30 + 2 * broadcasts * interval)
        cpu1, sys1 = proc_cpu_ms(server.pid), proc_sys_ms(server.pid)
        res.rss_kb = proc_rss_kb(server.pid)
        last_seq = end["max_seq"]
        if (after := await clients.status()) is not None and after["max_seq"] != last_seq:
            res.errors.append(f"a tick ({after['max_seq']}) overlapped the CPU reading")
        res.seq_first, res.seq_last = first_seq + 1, last_seq
        res.broadcasts = last_seq - first_seq
        res.cpu_ms_per_broadcast = (cpu1 - cpu0) / res.broadcasts
        res.sys_ms_per_broadcast = (sys1 - sys0) / res.broadcasts
        res.fanout_cpu_ms = res.cpu_ms_per_broadcast - res.idle_cpu_ms_per_tick

        rep = await clients.report(res.seq_first, res.seq_last)
        per_seq = [sorted(v) for v in rep["delays"].values() if v]
        if per_seq:
            res.p50_ms = statistics.median(percentile(v, 50) for v in per_seq)
            res.p99_ms = statistics.median(percentile(v, 99) for v in per_seq)
            res.max_ms = statistics.median(v[-1] for v in per_seq)
            res.worst_max_ms = max(v[-1] for v in per_seq)
        res.missing, res.clients_missing = rep["missing"], rep["clients_missing"]
        res.closed, res.close_codes = rep["closed"], rep["close_codes"]
        sizes = list(rep["frame_sizes"].values()) or [rep["frame_bytes"]]
        res.frame_bytes = max(sizes)
        res.short_frames = sum(1 for b in sizes if b < 0.9 * res.frame_bytes)
        if res.short_frames:
            res.errors.append(f"{res.short_frames} broadcasts carried a smaller frame "
                              f"(min {min(sizes)} B): a source failed during the window")
        res.kb_per_connection = (res.rss_kb - res.rss0_kb) / res.connected
    finally:
        # The server goes first, so TIME_WAIT lands on its side and not on client ports.
        await server.stop()
        await clients.stop()
    return res


# --------------------------------------------------------------------------- report


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _ratio(a: float, b: float) -> str:
    if any(isinstance(x, float) and math.isnan(x) for x in (a, b)) or not b:
        return "n/a"
    return f"{a / b:.2f}x"


def render_table(results: list[Result]) -> str:
    """Markdown: one row per (N, server), then hub/seed ratios per N against the issue's goals."""
    lines = [
        "| N | server | CPU ms/broadcast | idle CPU ms/tick | fan-out CPU ms | p50 ms | p99 ms | max ms "
        "| missing seqs | KB/connection | frame bytes |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    def spread(value: float, rng: tuple[float, float], runs: int) -> str:
        return _fmt(value) if runs < 2 else f"{_fmt(value)} [{_fmt(rng[0])}-{_fmt(rng[1])}]"

    for r in results:
        lines.append(
            f"| {r.clients} | {r.server} | {spread(r.cpu_ms_per_broadcast, r.cpu_range, r.runs)} "
            f"| {_fmt(r.idle_cpu_ms_per_tick)} | {spread(r.fanout_cpu_ms, r.fanout_range, r.runs)} | {_fmt(r.p50_ms)} | {_fmt(r.p99_ms)} | {_fmt(r.max_ms)} "
            f"| {r.missing if r.broadcasts else 'n/a'} | {_fmt(r.kb_per_connection)} | {r.frame_bytes} |")
    by = {(r.clients, r.server): r for r in results}
    ns = sorted({r.clients for r in results})
    if any((n, "hub") in by and (n, "seed") in by for n in ns):
        lines += ["", "| N | CPU hub/seed (goal <= 0.70x) | fan-out CPU hub/seed | p99 hub/seed (goal <= 1.00x) "
                      "| KB/connection hub/seed (goal <= 1.00x) | hub missing seqs (goal 0) |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for n in ns:
            h, s = by.get((n, "hub")), by.get((n, "seed"))
            if h is None or s is None:
                continue
            lines.append(f"| {n} | {_ratio(h.cpu_ms_per_broadcast, s.cpu_ms_per_broadcast)} "
                         f"| {_ratio(h.fanout_cpu_ms, s.fanout_cpu_ms)} "
                         f"| {_ratio(h.p99_ms, s.p99_ms)} | {_ratio(h.kb_per_connection, s.kb_per_connection)} "
                         f"| {h.missing if h.broadcasts else 'n/a'} |")
    if any((n, "floor") in by for n in ns):
        lines += ["", "| N | server | kernel ms/broadcast | fan-out µs/client | CPU/broadcast / floor "
                      "| fan-out CPU / floor (hub goal <= 1.25x) | CPU/broadcast / seed (hub goal <= 0.70x) |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        for n in ns:
            f, s = by.get((n, "floor")), by.get((n, "seed"))
            for r in (r for r in results if r.clients == n):
                per_client = r.fanout_cpu_ms * 1000.0 / r.clients if r.clients else math.nan
                lines.append(
                    f"| {n} | {r.server} | {_fmt(r.sys_ms_per_broadcast)} | {_fmt(per_client, 2)} "
                    f"| {_ratio(r.cpu_ms_per_broadcast, f.cpu_ms_per_broadcast) if f else 'n/a'} "
                    f"| {_ratio(r.fanout_cpu_ms, f.fanout_cpu_ms) if f else 'n/a'} "
                    f"| {_ratio(r.cpu_ms_per_broadcast, s.cpu_ms_per_broadcast) if s else 'n/a'} |")
    return "\n".join(lines)


def environment_line(results: list[Result], *, interval: float, broadcasts: int, procs: int,
                     repeat: int = 1) -> str:
    """One line naming what the numbers depend on."""
    node = subprocess.run([node_program(), "--version"], capture_output=True, text=True).stdout.strip()
    ws_version = json.loads((REFERENCE_DIR / "node_modules" / "ws" / "package.json").read_text())["version"]
    loop = next((r.info.get("loop", "") for r in results if r.info), "") or "?"
    load = Path("/proc/loadavg").read_text().split()[:3]
    return (f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, Python {platform.python_version()} "
            f"(hub loop: {loop}), Node.js {node} with ws {ws_version}; interval {interval:g} s, "
            f"{broadcasts} broadcasts per measurement"
            + (f", {repeat} measurements per row (medians, CPU range in brackets)" if repeat > 1 else "")
            + f", load client in {procs} Node.js processes; "
            f"load average at the end {' '.join(load)}")


# --------------------------------------------------------------------------- main


async def run(*, clients: list[int], broadcasts: int, interval: float, procs: int, servers: list[str],
              python: str, out: Path | None, hub_root: Path = REPO,
              concurrency: int = CONNECT_CONCURRENCY, keep_dir: Path | None = None,
              repeat: int = 1) -> list[Result]:
    """Run every (N, server) pair; print the table; write raw results to `out` if given."""
    raise_nofile()
    ensure_node_deps(REFERENCE_DIR)
    ensure_node_deps(FANOUT_DIR)
    results: list[Result] = []
    prom = FakePrometheus()
    await prom.start()
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
        workdir = Path(tmp) if keep_dir is None else keep_dir
        workdir.mkdir(parents=True, exist_ok=True)
        payload_file = workdir / "payload.json"
        parts = payload.seed_message_parts()
        if "hub" in servers:
            # The reference sends exactly what the hub sends: its own snapshot's data and sources.
            hub = await start_server("hub", workdir=workdir, interval=interval, prometheus_url=prom.url,
                                     payload_file=payload_file, python=python, hub_root=hub_root)
            try:
                parts = await capture_hub_parts(hub.port)
            finally:
                await hub.stop()
            if prom.requests == 0:
                raise SystemExit("the hub never queried the fake Prometheus: check its [sources.prometheus]")
        payload_file.write_text(json.dumps(parts))
        try:
            for n in clients:
                for rep, kind in ((rep, kind) for rep in range(repeat) for kind in servers):
                    print(f"-- {kind}, {n} clients" + (f", run {rep + 1}/{repeat}" if repeat > 1 else "") + " ...",
                          file=sys.stderr, flush=True)
                    try:
                        r = await measure(kind, n, broadcasts=broadcasts, interval=interval, procs=procs,
                                          workdir=workdir, prometheus_url=prom.url,
                                          payload_file=payload_file, python=python, hub_root=hub_root,
                                          concurrency=concurrency)
                    except (RuntimeError, TimeoutError, OSError) as exc:
                        r = Result(server=kind, clients=n, errors=[str(exc)[:2000]])
                    results.append(r)
                    print(f"   connect {_fmt(r.connect_s)} s, cpu {_fmt(r.cpu_ms_per_broadcast)} ms/bcast, "
                          f"p99 {_fmt(r.p99_ms)} ms, missing {r.missing}, {_fmt(r.kb_per_connection)} KB/conn, "
                          f"frame {r.frame_bytes} B" + (f", notes: {r.errors}" if r.errors else ""),
                          file=sys.stderr, flush=True)
        finally:
            await prom.stop()
    runs, results = results, combine(results)
    sizes = {r.server: r.frame_bytes for r in results if r.frame_bytes}
    print()
    print(environment_line(results, interval=interval, broadcasts=broadcasts, procs=procs, repeat=repeat))
    print()
    print(render_table(results))
    if len(sizes) >= 2:
        biggest = max(sizes.values())
        verdict = "within 10%" if min(sizes.values()) >= 0.9 * biggest else "NOT within 10%"
        print(f"\nframe size: {', '.join(f'{k} {v} B' for k, v in sizes.items())} ({verdict})")
    for r in results:
        if r.errors or r.failed or r.closed:
            print(f"\nnote {r.server} N={r.clients}: failed={r.failed} closed={r.closed} {r.close_codes} {r.errors}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"rows": [asdict(r) for r in results], "runs": [asdict(r) for r in runs]},
                                  indent=2))
        print(f"\nraw results: {out}", file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m bench.fanout.run", description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="1000,5000,9000", help="comma-separated client counts")
    ap.add_argument("--broadcasts", type=int, default=20, help="broadcasts measured per row")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between broadcasts")
    ap.add_argument("--repeat", type=int, default=1,
                    help="measure each (N, server) this many times, alternating servers; rows show medians")
    ap.add_argument("--procs", type=int, default=2, help="Node.js load-client processes")
    ap.add_argument("--concurrency", type=int, default=CONNECT_CONCURRENCY,
                    help="connection attempts in flight, over all load-client processes")
    ap.add_argument("--servers", default="hub,seed,floor", help="which of hub,seed,floor to run")
    ap.add_argument("--python", default=sys.executable, help="Python that runs `-m hub serve`")
    ap.add_argument("--hub-root", type=Path, default=REPO,
                    help="source tree to run the hub from (default: this checkout)")
    ap.add_argument("--keep", type=Path, default=None, metavar="DIR",
                    help="write server configs and logs to DIR and keep them")
    ap.add_argument("--out", type=Path, default=None,
                    help="raw JSON results (default bench/results/fanout-<time>.json)")
    args = ap.parse_args(argv)
    servers = [s for s in args.servers.split(",") if s]
    if bad := [s for s in servers if s not in SERVERS]:
        ap.error(f"unknown server(s) {bad}; choose from {SERVERS}")
    out = args.out or RESULTS_DIR / time.strftime("fanout-%Y%m%d-%H%M%S.json")
    asyncio.run(run(clients=[int(x) for x in args.clients.split(",") if x], broadcasts=args.broadcasts,
                    interval=args.interval, procs=args.procs, servers=servers, python=args.python, out=out,
                    hub_root=args.hub_root.resolve(), concurrency=args.concurrency, keep_dir=args.keep,
                    repeat=max(1, args.repeat)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
