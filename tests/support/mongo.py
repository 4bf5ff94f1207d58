"""A real MongoDB-wire-protocol server for tests: SecantusDB run as a child process on a free port.

SecantusDB is GPL-2.0 and a dev dependency only: it is started as a separate program
(its `secantusd-py` console script, or `python -m secantus`), never imported.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port, need_program, services_required

START_TIMEOUT = 20.0


def secantus_command() -> list[str]:
    """The command that runs SecantusDB: the console script next to this Python, on PATH, or `-m secantus`."""
    local = Path(sys.executable).with_name("secantusd-py")
    if local.is_file() and os.access(local, os.X_OK):
        return [str(local)]
    found = shutil.which("secantusd-py")
    if found:
        return [found]
    if importlib.util.find_spec("secantus") is not None:
        return [sys.executable, "-m", "secantus"]
    return [need_program("secantusd-py", hint="pip install SecantusDB (dev dependency)")]


class MongoServer:
    """One SecantusDB process: `uri`, `stop()`, `start()` (same port, same data dir)."""

    def __init__(self, data_dir: Path, *, port: int | None = None, database: str = "healthcare",
                 args: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.args = list(args)  # extra server flags, e.g. --standalone (no change streams), --oplog-max-entries
        self.port = port or free_port()
        self.database = database
        self.auth = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = data_dir.parent / f"secantus-{self.port}.log"

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/{self.database}"

    def uri_with(self, user: str, password: str, *, auth_source: str = "") -> str:
        """This server's URI with credentials (and an authSource when given)."""
        tail = f"?authSource={auth_source}" if auth_source else ""
        return f"mongodb://{user}:{password}@127.0.0.1:{self.port}/{self.database}{tail}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (benchmarks read its CPU time)."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, *, auth: bool | None = None) -> None:
        """Start (or restart) the server on the same port and data dir; wait until it accepts connections."""
        if self.running:
            return
        if auth is not None:
            self.auth = auth
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [*secantus_command(), "--host", "127.0.0.1", "--port", str(self.port),
               "--storage-path", str(self.data_dir), "--log-level", "WARNING", "--cache-size", "256M"]
        if self.auth:
            cmd.append("--auth")
        cmd += self.args
        log = open(self._log, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        try:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          cwd=self.data_dir.parent)
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"SecantusDB exited with {self._proc.returncode}: {self.log_tail()}")
            if self._accepts():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"SecantusDB did not accept connections within {START_TIMEOUT}s: {self.log_tail()}")

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server cleanly (SIGTERM, SIGKILL after 5 s) so a restart finds every write."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def kill(self) -> None:
        """Stop the server at once (SIGKILL): for teardown, when the data is thrown away anyway."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def insert(self, docs: list[dict[str, Any]], collection: str = "appointments") -> None:
        """Insert `docs` with a synchronous client (test set-up; the hub itself never writes)."""
        from pymongo import MongoClient

        with MongoClient(self.uri, serverSelectionTimeoutMS=10_000) as client:
            client.get_default_database()[collection].insert_many(docs)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self._log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@pytest.fixture(scope="module")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer]:
    """A SecantusDB server shared by one test module."""
    server = MongoServer(tmp_path_factory.mktemp("secantus") / "data")
    try:
        server.start()
    except RuntimeError as exc:
        if services_required():
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    yield server
    server.kill()


@pytest.fixture
def mongo_server_fn(tmp_path: Path) -> Iterator[MongoServer]:
    """A SecantusDB server of its own for one test (for stop/restart and auth tests)."""
    server = MongoServer(tmp_path / "data")
    server.start()
    yield server
    server.kill()
