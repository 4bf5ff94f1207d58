"""Run a real `hub serve` subprocess on a free port and wait until it answers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]


def toml_value(v: Any) -> str:
    """A Python value as a TOML literal (enough for test configs)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Nested dicts as TOML tables."""
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    # an empty table is written too (`slo_queries = {}` means none, not the defaults)
    lines = [f"[{prefix}]"] if prefix and (scalars or not tables) else []
    lines += [f"{k} = {toml_value(v)}" for k, v in scalars.items()]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in tables.items():
        out += to_toml(v, f"{prefix}.{k}" if prefix else k)
    return out


class HubProcess:
    """A `hub serve` child process; `url` is its base URL."""

    def __init__(self, config: dict[str, Any], tmp: Path, *, port: int | None = None,
                 args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.config_path = tmp / f"hub-{self.port}.toml"
        self.config_path.write_text(to_toml(config))
        self.log_path = tmp / f"hub-{self.port}.log"
        self.args = args
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True, timeout: float = 20.0) -> HubProcess:
        """Start the process; with `wait`, block until /health answers."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub", "serve", "--config", str(self.config_path),
             "--host", "127.0.0.1", "--port", str(self.port), *self.args],
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        if wait:
            self.wait_healthy(timeout=timeout)
        return self

    def wait_healthy(self, *, timeout: float = 20.0, path: str = "/health") -> None:
        """Block until `path` answers 200, or raise with the log tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"hub did not answer {path} within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> int | None:
        """Terminate (or kill) and reap; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        code = self.proc.returncode
        self.proc = None
        return code
