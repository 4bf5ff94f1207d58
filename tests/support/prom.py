"""A real `prometheus` server for tests: free port, temp config and TSDB, 1 s scrape and rule evaluation.

Usage: `from tests.support.prom import prometheus_server  # noqa: F401` and take the fixture;
or `start_prometheus(tmp_dir, targets={...})` to control the scrape targets from the start.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support import end_process, free_port, log_tail, need_program

#: Rules loaded into every test Prometheus: one alert that fires at the first evaluation
#: and one that stays pending for the whole test (its `for` is an hour).
TEST_RULES = """\
groups:
  - name: hub-test
    interval: 1s
    rules:
      - alert: HubTestAlwaysFiring
        expr: vector(1)
        labels:
          severity: critical
        annotations:
          summary: Always firing (test rule)
      - alert: HubTestAlwaysPending
        expr: vector(1)
        for: 1h
        labels:
          severity: info
        annotations:
          summary: Always pending (test rule)
"""

READY_TIMEOUT = 30.0

#: the shipped alerting rules and their promtool tests
DEPLOY_RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


class PrometheusServer:
    """One Prometheus process bound to a fixed port; can be killed and started again on that port."""

    def __init__(self, binary: str, workdir: Path, *, port: int | None = None,
                 targets: Mapping[str, Sequence[str]] | None = None,
                 rules: str = TEST_RULES, extra_rule_files: Sequence[str | Path] = (),
                 alertmanagers: Sequence[str] = ()) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Prometheus always scrapes itself, so `up{job="prometheus"}` exists without any hub.
        self.targets: dict[str, list[str]] = {"prometheus": [f"127.0.0.1:{self.port}"]}
        self.targets.update({job: list(t) for job, t in (targets or {}).items()})
        self.rules = rules
        self.extra_rule_files = [str(p) for p in extra_rule_files]
        #: host:port of Alertmanagers this Prometheus sends its firing alerts to
        self.alertmanagers = list(alertmanagers)
        self.config_path = workdir / "prometheus.yml"
        self.rules_path = workdir / "test-rules.yml"
        self.data_path = workdir / "data"
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # ---------------------------------------------------------------- config

    def _write_config(self) -> None:
        self.rules_path.write_text(self.rules)
        # JSON is valid YAML: no YAML writer needed.
        cfg: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(self.rules_path), *self.extra_rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]}
                for job, targets in self.targets.items()
            ],
        }
        if self.alertmanagers:
            cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": self.alertmanagers}]}]}
        self.config_path.write_text(json.dumps(cfg, indent=2))

    def set_targets(self, job: str, targets: Sequence[str]) -> None:
        """Scrape `targets` (host:port) as `job`; reloads a running server and waits for the reload."""
        self.targets[job] = list(targets)
        self._write_config()
        if self.running:
            self._post("/-/reload")

    # ---------------------------------------------------------------- process

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the process without waiting (use `wait_ready` or `await await_ready()` next)."""
        assert not self.running, "already running"
        self.data_path.mkdir(parents=True, exist_ok=True)
        self._write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [self.binary,
                 f"--config.file={self.config_path}",
                 f"--storage.tsdb.path={self.data_path}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--web.enable-lifecycle",
                 "--storage.tsdb.retention.time=1h",
                 "--log.level=warn",
                 # Alerts fired before the Alertmanager is discovered (about 5 s) would otherwise wait a
                 # minute to be sent again, and arrive older than any test's group_wait.
                 *(["--rules.alert.resend-delay=1s"] if self.alertmanagers else [])],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
        finally:
            log.close()

    def _ready_once(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.proc and self.proc.returncode}; "
                               f"log tail:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Block until /-/ready answers 200 (sync tests and fixtures)."""
        deadline = time.monotonic() + timeout
        while not self._ready_once():
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus not ready after {timeout} s; log tail:\n{self.log_tail()}")
            time.sleep(0.05)

    async def await_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Like `wait_ready` but yields to the event loop, so an in-process hub keeps ticking."""
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(self._ready_once):
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus not ready after {timeout} s; log tail:\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    async def astart(self) -> None:
        self.spawn()
        await self.await_ready()

    def kill(self) -> None:
        """SIGKILL: the abrupt death the hub must survive. Returns when the port is closed."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        self._end(signal.SIGTERM)

    def _end(self, sig: int) -> None:
        end_process(self.proc, sig)
        self.proc = None

    # ---------------------------------------------------------------- API helpers

    def _post(self, path: str) -> None:
        req = urllib.request.Request(f"{self.url}{path}", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    def api(self, path: str, **params: str) -> Any:
        """GET a /api/v1 endpoint and return its `data` (raises on an error answer)."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def log_tail(self, n: int = 30) -> str:
        return log_tail(self.log_path, n)


def start_prometheus(workdir: Path, **kwargs: Any) -> PrometheusServer:
    """Start a ready PrometheusServer in `workdir` (skips, or fails under HUB_REQUIRE_SERVICES=1, without the binary)."""
    binary = need_program(os.environ.get("HUB_PROMETHEUS_BIN", "prometheus"),
                          hint="Debian/Ubuntu package 'prometheus'")
    server = PrometheusServer(binary, workdir, **kwargs)
    server.start()
    return server


@pytest.fixture
def prometheus_server(tmp_path: Path) -> Iterator[PrometheusServer]:
    """A fresh, ready Prometheus scraping itself, with the always-firing test alert; stopped afterwards."""
    server = start_prometheus(tmp_path / "prometheus")
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def shared_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """One Prometheus for a whole test module (for tests that neither stop nor reconfigure it)."""
    server = start_prometheus(tmp_path_factory.mktemp("prometheus"))
    try:
        yield server
    finally:
        server.kill()
