"""Stopping the benchmarks' child processes: the servers under test and the Node.js load clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Iterable
from typing import Any


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


async def read_event(proc: asyncio.subprocess.Process, event: str) -> dict[str, Any]:
    """The next JSON line a load client prints with `"event": event` (earlier lines are skipped)."""
    assert proc.stdout is not None
    while True:
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load client exited ({proc.returncode}) before {event!r}")
        msg = json.loads(line)
        if msg.get("event") == event:
            return msg
