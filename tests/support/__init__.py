"""Helpers for tests that start real external programs (Prometheus, Redis, Chromium, SecantusDB)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest


def services_required() -> bool:
    """True when HUB_REQUIRE_SERVICES=1: a missing program must fail the run, not skip."""
    return os.environ.get("HUB_REQUIRE_SERVICES") == "1"


def need_program(name: str, *, hint: str = "") -> str:
    """Path of executable `name`; skip the test when missing, or fail under HUB_REQUIRE_SERVICES=1."""
    path = shutil.which(name)
    if path:
        return path
    why = f"{name!r} is not on PATH" + (f" ({hint})" if hint else "")
    if services_required():
        pytest.fail(f"{why}, and HUB_REQUIRE_SERVICES=1 requires it")
    pytest.skip(why)
    raise AssertionError("unreachable")


def _ephemeral_low() -> int:
    """The lowest port the kernel hands to outgoing connections (32768 when it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_given: set[int] = set()
_rng = random.SystemRandom()  # pytest-randomly reseeds `random` before every test


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, and that nothing else is likely to take.

    Not from the kernel's ephemeral range: a port bound to 0 there is free only until the next
    outgoing connection of any test takes it (CI saw "address already in use" from a server started
    on such a port). Below that range only listeners bind; a random pick that binds now, never
    given twice in this process, leaves only another program choosing the same port meanwhile.
    """
    low = min(_ephemeral_low(), 65536) - 1
    first = max(1024, low - 12000)
    for _ in range(200):
        port = _rng.randint(first, low)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    with socket.socket() as s:  # a crowded range: the old way
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def end_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, *, timeout: float = 10.0) -> None:
    """Send `sig` to `proc` if it still runs, wait up to `timeout` s, then SIGKILL; always reap it."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def log_tail(path: Path, n: int) -> str:
    """The last `n` lines of the log at `path`, or "(no log)"."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"
