"""Stopping the benchmarks' child processes: the servers under test and the Node.js load clients."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterable


async def stop_process(proc: asyncio.subprocess.Process, *, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; always reaped."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    await _reap(proc, grace)


async def stop_load_clients(procs: Iterable[asyncio.subprocess.Process], *, grace: float = 10.0) -> None:
    """Ask each load client to exit (`{"cmd":"exit"}` on stdin), then kill those that do not."""
    procs = list(procs)
    for proc in procs:
        if proc.returncode is None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.write(b'{"cmd":"exit"}\n')
                proc.stdin.close()
    for proc in procs:
        await _reap(proc, grace)


async def _reap(proc: asyncio.subprocess.Process, grace: float) -> None:
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
