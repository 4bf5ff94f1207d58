"""A real `redis-server` for tests: free port, temp dir, no persistence; stop() and start() keep the port.

Usage: `from tests.support.redis import redis_server  # noqa: F401` and take the fixture, or
`start_redis(tmp_dir)` for more control (e.g. `requirepass`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support import end_process, free_port, log_tail, need_program

READY_TIMEOUT = 10.0


class RedisServer:
    """One redis-server process on a fixed port; `stop()` then `start()` brings back an empty server."""

    def __init__(self, binary: str, workdir: Path, *, port: int | None = None, password: str = "",
                 extra_args: Sequence[str] = ()) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.password = password
        self.extra_args = list(extra_args)
        self.log_path = workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of the server (with the password when one is set)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, timeout: float = READY_TIMEOUT) -> RedisServer:
        """Start the server (empty: nothing is persisted) and wait until it answers PING."""
        assert not self.running, "already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]
        if self.password:
            args += ["--requirepass", self.password]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(args + self.extra_args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server not ready after {timeout} s:\n{self.log_tail()}")
            time.sleep(0.02)
        return self

    def _answers(self) -> bool:
        # A raw RESP PING: an AUTH-protected server answers -NOAUTH, which still means "up".
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64)[:1] in (b"+", b"-")
        except OSError:
            return False

    def stop(self, *, kill: bool = True) -> None:
        """End the server (SIGKILL by default: a crash) and wait until it is gone."""
        end_process(self.proc, signal.SIGKILL if kill else signal.SIGTERM)
        self.proc = None

    def log_tail(self, n: int = 20) -> str:
        return log_tail(self.log_path, n)


def start_redis(workdir: Path, **kwargs: object) -> RedisServer:
    """A started RedisServer in `workdir` (skips, or fails under HUB_REQUIRE_SERVICES=1, without the binary)."""
    binary = need_program(os.environ.get("HUB_REDIS_BIN", "redis-server"), hint="Debian/Ubuntu package 'redis-server'")
    return RedisServer(binary, workdir, **kwargs).start()  # type: ignore[arg-type]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty redis-server on a free port; stopped after the test."""
    server = start_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()
