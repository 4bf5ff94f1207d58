"""Helpers for tests that start real external programs (Prometheus, Redis, Chromium, SecantusDB)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
import socket

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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
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
