"""The hub under test: a real `python -m hub serve` child on a free port, and what /proc and /metrics say."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout

from bench.procs import stop_process
from bench.fanout.run import free_port, proc_cpu_ms, proc_rss_kb, wait_for

REPO = Path(__file__).resolve().parents[2]


def hub_config_text(*, port: int, prometheus_url: str, interval: float, history_size: int | None,
                    max_client_buffer_bytes: int | None, heartbeat: float | None) -> str:
    """Defaults except what the bench must set: port, interval, fake Prometheus, no MongoDB or health checks."""
    broadcast = [f"interval = {interval}"]
    if history_size is not None:
        broadcast.append(f"history_size = {history_size}")
    if max_client_buffer_bytes is not None:
        broadcast.append(f"max_client_buffer_bytes = {max_client_buffer_bytes}")
    if heartbeat is not None:
        broadcast.append(f"heartbeat = {heartbeat}")
    return ("[server]\nhost = \"127.0.0.1\"\n"
            f"port = {port}\n"
            "\n[broadcast]\n" + "\n".join(broadcast) + "\n"
            f"\n[sources.prometheus]\nurl = {json.dumps(prometheus_url)}\n"
            "\n[sources.business]\nenabled = false\n"
            "\n[sources.health]\nenabled = false\n")


def proc_status_kb(pid: int, field: str) -> int:
    """A `kB` field (VmRSS, VmHWM, RssAnon...) of /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


@dataclass
class HubProc:
    """A running hub: its process, port and log."""

    proc: asyncio.subprocess.Process
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_ms(self) -> float:
        """utime + stime of every thread, ms."""
        return proc_cpu_ms(self.pid)

    def rss_kb(self) -> int:
        return proc_rss_kb(self.pid)

    async def metrics(self) -> dict[str, float]:
        """/metrics samples by name, summed over labels (name -> value)."""
        async with ClientSession(timeout=ClientTimeout(total=10)) as http, \
                http.get(f"http://127.0.0.1:{self.port}/metrics") as resp:
            text = await resp.text()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                name = name.split("{", 1)[0]
                with contextlib.suppress(ValueError):
                    out[name] = out.get(name, 0.0) + float(value)
        return out

    async def source_statuses(self) -> dict[str, str]:
        """source name -> status in the latest snapshot."""
        async with ClientSession(timeout=ClientTimeout(total=10)) as http, \
                http.get(f"http://127.0.0.1:{self.port}/api/metrics/snapshot") as resp:
            snap = await resp.json(content_type=None)
        return {k: v.get("status", "?") for k, v in (snap.get("sources") or {}).items()}

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        await stop_process(self.proc)


async def start_hub(*, workdir: Path, python: str, prometheus_url: str, interval: float,
                    history_size: int | None = None, max_client_buffer_bytes: int | None = None,
                    heartbeat: float | None = None, root: Path = REPO, extra_config: str = "",
                    serve_args: Sequence[str] = ()) -> HubProc:
    """Start `python -m hub serve` (the hub of checkout `root`) with a generated config (plus
    `extra_config`, TOML appended) and `serve_args`; return once /ready answers 200."""
    port = free_port()
    cfg = workdir / f"hub-{port}.toml"
    cfg.write_text(hub_config_text(port=port, prometheus_url=prometheus_url, interval=interval,
                                   history_size=history_size, max_client_buffer_bytes=max_client_buffer_bytes,
                                   heartbeat=heartbeat) + extra_config)
    log = workdir / f"hub-{port}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    for name in ("PROMETHEUS_URL", "MONGODB_URI"):  # seed-era variables would override the config
        env.pop(name, None)
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(python, "-m", "hub", "serve", "--config", str(cfg), *serve_args,
                                                    cwd=root,
                                                    env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                                                    stderr=asyncio.subprocess.STDOUT)
    hub = HubProc(proc=proc, port=port, log=log)

    async def ready() -> bool:
        if proc.returncode is not None:
            raise RuntimeError(f"hub exited with {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            async with ClientSession(timeout=ClientTimeout(total=2)) as http, \
                    http.get(f"http://127.0.0.1:{port}/ready") as resp:
                return resp.status == 200
        except (OSError, asyncio.TimeoutError):
            return False

    try:
        await wait_for(ready, timeout=30 + 3 * interval, what="the hub to be ready", step=0.1)
    except BaseException:
        await hub.stop()
        raise
    return hub
