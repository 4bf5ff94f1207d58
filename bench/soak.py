"""Soak: a `hub serve` under continuous connection churn; RSS and open descriptors sampled over time.

    python bench/soak.py --seconds 1800 > bench/soak-30min.txt

Clients join and leave all the time (history requests, subscriptions, pings; clean closes,
aborted sockets and clients that stop reading), while the hub ticks. Every --sample seconds
the hub's RSS and open file descriptors are read from /proc/<pid>. The verdict compares the
median of the last quarter of the samples after warm-up with the median of the first quarter:
growth beyond noise (10 % + 5 MB for RSS, 10 % + 10 for descriptors) is a leak. When churn
stops, every client must be gone and the descriptors back at the idle count. Exit 1 on either.
Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
RSS_TOLERANCE = (0.10, 5.0)  # growth allowed: 10 % of the early median plus 5 MB
FD_TOLERANCE = (0.10, 10)  # growth allowed: 10 % plus 10 descriptors
IDLE_FD_SLACK = 5  # descriptors the idle hub may hold above its idle count before the churn


@dataclass
class Counters:
    connects: int = 0
    clean_closes: int = 0
    aborts: int = 0
    stalls: int = 0
    failures: int = 0
    messages: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def fail(self, exc: BaseException) -> None:
        self.failures += 1
        key = type(exc).__name__
        self.errors[key] = self.errors.get(key, 0) + 1


@dataclass
class Sample:
    t: float
    rss_mb: float
    fds: int
    ws: int
    connects: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident set size of `pid` in MB (VmRSS from /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def hub_connections(url: str) -> int:
    """hub_ws_connections from the hub's /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("hub_ws_connections "):
                return int(float(line.split()[1]))
    raise RuntimeError("hub_ws_connections missing from /metrics")


def start_hub(tmp: Path, *, port: int, interval: float) -> subprocess.Popen[bytes]:
    config = tmp / "soak.toml"
    config.write_text(
        f"[broadcast]\ninterval = {interval}\nheartbeat = 5.0\n"
        "[server]\nmax_connections = 100000\n"
        "[sources.prometheus]\nenabled = false\n[sources.business]\nenabled = false\n"
        f'[audit]\npath = "{tmp / "audit.jsonl"}"\n')
    log = open(tmp / "hub.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([sys.executable, "-m", "hub", "serve", "--config", str(config),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hub exited with {proc.returncode}: {(tmp / 'hub.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/ready", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("hub not ready within 30 s")


async def churn_worker(session: aiohttp.ClientSession, url: str, stop: asyncio.Event, c: Counters,
                       rng: random.Random, *, stay: tuple[float, float] = (0.2, 3.0)) -> None:
    """Connect, do something, leave; again and again until `stop`."""
    while not stop.is_set():
        path = "/ws"
        if rng.random() < 0.3:
            path += f"?history={rng.randint(1, 50)}"
        try:
            ws = await session.ws_connect(url + path, heartbeat=None, autoping=True)
        except (aiohttp.ClientError, OSError) as exc:
            c.fail(exc)
            await asyncio.sleep(0.1)
            continue
        c.connects += 1
        try:
            roll = rng.random()
            if roll < 0.3:
                await ws.send_str(json.dumps({"type": "subscribe",
                                              "topics": rng.sample(["system", "application", "alerts"], 2)}))
            elif roll < 0.6:
                await ws.send_str('{"type":"ping","id":1}')
            until = time.monotonic() + rng.uniform(*stay)
            fate = rng.random()
            if fate < 0.1:
                # stops reading: the hub must still let go of it when it leaves
                c.stalls += 1
                await asyncio.sleep(max(0.0, until - time.monotonic()))
            else:
                while (left := until - time.monotonic()) > 0:
                    with contextlib.suppress(TimeoutError):
                        msg = await ws.receive(timeout=left)
                        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
                        c.messages += 1
            if fate < 0.3:
                # vanish without a close handshake
                assert ws._response.connection is not None
                ws._response.connection.transport.abort()  # type: ignore[union-attr]
                c.aborts += 1
            else:
                await ws.close()
                c.clean_closes += 1
        except (aiohttp.ClientError, OSError, AttributeError, AssertionError) as exc:
            c.fail(exc)
        finally:
            with contextlib.suppress(Exception):
                await ws.close()


async def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="hub-soak-") as tmpname:
        tmp = Path(tmpname)
        proc = start_hub(tmp, port=port, interval=args.interval)
        pid = proc.pid
        try:
            await asyncio.sleep(0.5)
            idle_fds = open_fds(pid)
            idle_rss = rss_mb(pid)
            counters = Counters()
            stop = asyncio.Event()
            samples: list[Sample] = []
            connector = aiohttp.TCPConnector(limit=0, force_close=True)
            async with aiohttp.ClientSession(connector=connector) as session:
                workers = [asyncio.create_task(churn_worker(session, url, stop, counters, random.Random(rng.random()),
                                                            stay=(args.min_stay, args.max_stay)))
                           for _ in range(args.clients)]
                t0 = time.monotonic()
                print(f"soak: hub pid {pid}, {args.clients} churning clients staying "
                      f"{args.min_stay}-{args.max_stay} s, tick {args.interval} s, "
                      f"{args.seconds} s, sample every {args.sample} s; idle RSS {idle_rss:.1f} MB, "
                      f"{idle_fds} fds", flush=True)
                print(f"{'t_s':>7} {'rss_mb':>8} {'fds':>6} {'ws':>6} {'connects':>9}", flush=True)
                while (elapsed := time.monotonic() - t0) < args.seconds:
                    if proc.poll() is not None:
                        print(f"soak: hub exited with {proc.returncode}", flush=True)
                        return 1
                    ws_now = await asyncio.to_thread(hub_connections, url)
                    s = Sample(round(elapsed, 1), rss_mb(pid), open_fds(pid), ws_now, counters.connects)
                    samples.append(s)
                    print(f"{s.t:>7.1f} {s.rss_mb:>8.1f} {s.fds:>6} {s.ws:>6} {s.connects:>9}", flush=True)
                    await asyncio.sleep(min(args.sample, max(0.0, args.seconds - (time.monotonic() - t0))))
                stop.set()
                await asyncio.gather(*workers)
            # churn over: every client must be gone, descriptors back to the idle count
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                drained_ws = await asyncio.to_thread(hub_connections, url)
                drained_fds = open_fds(pid)
                if drained_ws == 0 and drained_fds <= idle_fds + IDLE_FD_SLACK:
                    break
                await asyncio.sleep(0.2)
            return verdict(args, samples, counters, idle_fds=idle_fds, idle_rss=idle_rss,
                           drained_ws=drained_ws, drained_fds=drained_fds, drained_rss=rss_mb(pid))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log = (tmp / "hub.log").read_text(errors="replace")
            if "Traceback" in log:
                print("soak: the hub logged a traceback:\n" + log[-3000:], flush=True)


def verdict(args: argparse.Namespace, samples: list[Sample], c: Counters, *, idle_fds: int, idle_rss: float,
            drained_ws: int, drained_fds: int, drained_rss: float) -> int:
    """Print the summary; 0 when nothing grew beyond noise, 1 otherwise."""
    warm = [s for s in samples if s.t >= args.seconds * args.warmup]
    q = max(1, len(warm) // 4)
    early, late = warm[:q], warm[-q:]
    rss0, rss1 = statistics.median(s.rss_mb for s in early), statistics.median(s.rss_mb for s in late)
    fd0, fd1 = statistics.median(s.fds for s in early), statistics.median(s.fds for s in late)
    rss_limit = rss0 * (1 + RSS_TOLERANCE[0]) + RSS_TOLERANCE[1]
    fd_limit = fd0 * (1 + FD_TOLERANCE[0]) + FD_TOLERANCE[1]
    problems = []
    if len(warm) < 8:
        problems.append(f"only {len(warm)} samples after warm-up: run longer or sample more often")
    if rss1 > rss_limit:
        problems.append(f"RSS grew: median {rss0:.1f} -> {rss1:.1f} MB (limit {rss_limit:.1f})")
    if fd1 > fd_limit:
        problems.append(f"open fds grew: median {fd0:.0f} -> {fd1:.0f} (limit {fd_limit:.0f})")
    if drained_ws != 0:
        problems.append(f"{drained_ws} WebSocket clients still registered after every client left")
    if drained_fds > idle_fds + IDLE_FD_SLACK:
        problems.append(f"{drained_fds} fds open after every client left (idle: {idle_fds})")
    if c.connects == 0 or c.failures > c.connects * 0.01:
        problems.append(f"{c.failures} failed connects of {c.connects}: {c.errors}")
    print()
    print(f"connects {c.connects} ({c.connects / args.seconds:.1f}/s), clean closes {c.clean_closes}, "
          f"aborted sockets {c.aborts}, stalled readers {c.stalls}, messages read {c.messages}, "
          f"failures {c.failures} {c.errors or ''}")
    print(f"RSS MB: idle {idle_rss:.1f}, early median {rss0:.1f}, late median {rss1:.1f} "
          f"(limit {rss_limit:.1f}), after drain {drained_rss:.1f}")
    print(f"fds: idle {idle_fds}, early median {fd0:.0f}, late median {fd1:.0f} (limit {fd_limit:.0f}), "
          f"after drain {drained_fds}")
    print("verdict: " + ("GROWTH: " + "; ".join(problems) if problems else "OK, no growth beyond noise"))
    print("summary: " + json.dumps({"seconds": args.seconds, "clients": args.clients, "connects": c.connects,
                                    "failures": c.failures, "idle_rss_mb": round(idle_rss, 1),
                                    "early_rss_mb": round(rss0, 1), "late_rss_mb": round(rss1, 1),
                                    "drained_rss_mb": round(drained_rss, 1), "idle_fds": idle_fds,
                                    "early_fds": fd0, "late_fds": fd1, "drained_fds": drained_fds,
                                    "ok": not problems}), flush=True)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="how long the churn runs (default 60)")
    p.add_argument("--clients", type=int, default=100, help="concurrent churning clients (default 100)")
    p.add_argument("--min-stay", type=float, default=0.2, help="shortest client visit in seconds (0.2)")
    p.add_argument("--max-stay", type=float, default=3.0, help="longest client visit in seconds (3.0)")
    p.add_argument("--interval", type=float, default=0.5, help="hub tick interval in seconds (default 0.5)")
    p.add_argument("--sample", type=float, default=0.0,
                   help="seconds between samples (default: seconds/40, at least 1)")
    p.add_argument("--warmup", type=float, default=0.25, help="fraction of the run ignored as warm-up (0.25)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if not args.sample:
        args.sample = max(1.0, args.seconds / 40)
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
