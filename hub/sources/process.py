"""Process source: the hub's own process stats (the seed's getApplicationMetrics, extended)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import psutil

from hub.sources.base import Source, SourceResult
from hub.tasks import cancel_and_wait, spawn

LAG_PROBE_INTERVAL = 0.25  # seconds between event-loop lag probes


def open_fds(proc: psutil.Process) -> int | None:
    """How many file descriptors the process has open (None where the OS cannot say).

    Linux 6.2+ reports the count as the size of /proc/self/fd, in O(1); listing the directory
    (psutil's way, kept for older kernels) costs a dentry per descriptor, so with 9,000 clients it
    took milliseconds of every tick. The listing's own descriptor is not counted by the size.
    """
    try:
        size = os.stat("/proc/self/fd").st_size
    except OSError:
        size = 0
    if size > 0:
        return size
    try:
        return int(proc.num_fds())
    except (AttributeError, psutil.Error):  # not on Windows
        return None


class ProcessSource(Source):
    """Fills `data.application` with connections, memory, uptime, CPU, fds, threads, loop lag."""

    name = "process"
    sections = ("application",)

    def __init__(self, *, active_connections: Callable[[], int], timeout: float = 1.0) -> None:
        self._active = active_connections
        self.timeout = timeout
        self._proc = psutil.Process()
        self._started = time.monotonic()
        self._max_lag = 0.0
        self._lag_task: asyncio.Task[None] | None = None
        self._cpu_primed_at = 0.0

    async def start(self) -> None:
        self._proc.cpu_percent(None)  # first call primes the counter and returns 0.0
        self._cpu_primed_at = time.monotonic()
        # The probe outlives start(): it runs in a context of its own, not the caller's.
        self._lag_task = spawn(self._probe_lag(), name="hub-loop-lag")

    async def _probe_lag(self) -> None:
        # Sleep a fixed interval and record how late the loop woke us: that delay is
        # what every client message and /health request waited too.
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(LAG_PROBE_INTERVAL)
            lag = loop.time() - t0 - LAG_PROBE_INTERVAL
            if lag > self._max_lag:
                self._max_lag = lag

    async def collect(self, budget: float = 1.0) -> SourceResult:
        proc = self._proc
        with proc.oneshot():
            mem = proc.memory_info()
            fds = open_fds(proc)
            data: dict[str, Any] = {
                "activeConnections": self._active(),
                "memoryUsage": {"rss": mem.rss, "vms": mem.vms},
                "uptime": round(time.monotonic() - self._started, 3),
                "cpuPercent": self._cpu(),
                "openFds": fds,
                "threads": proc.num_threads(),
                "eventLoopLagMs": round(self._max_lag * 1000, 3),
            }
        self._max_lag = 0.0
        return SourceResult(data={"application": data})

    def _cpu(self) -> float | None:
        # psutil divides CPU time by the wall time since the previous call: over the few
        # milliseconds between start() and the first tick that ratio is noise (e.g. 400 %),
        # so the first sample is reported as unknown.
        value = self._proc.cpu_percent(None)
        if time.monotonic() - self._cpu_primed_at < 0.5:
            return None
        return value

    async def close(self) -> None:
        if self._lag_task is not None:
            task, self._lag_task = self._lag_task, None
            await cancel_and_wait([task])
