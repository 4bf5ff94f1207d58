"""A real `prometheus-alertmanager` (0.25) for tests: free port, temp storage, no gossip, and a
webhook receiver on loopback recording every notification it sends.

Usage: `from tests.support.alertmanager import alertmanager_server  # noqa: F401` and take the fixture,
or `start_alertmanager(tmp_dir, group_wait=...)`. Alerts reach it from a test Prometheus started
with `alertmanagers=[am.address]` (tests/support/prom.py), or posted directly (`post_alerts`).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import end_process, free_port, log_tail, need_program

READY_TIMEOUT = 30.0


class WebhookReceiver:
    """Alertmanager's webhook receiver on 127.0.0.1: keeps every notification (parsed JSON), in order."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.posts.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, name="am-webhook", daemon=True)
        self._thread.start()

    def notified(self) -> list[tuple[str, str]]:
        """(alertname, status) of every alert in every notification so far, in order."""
        with self._lock:
            return [(a["labels"].get("alertname", ""), a["status"]) for p in self.posts for a in p["alerts"]]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class AlertmanagerServer:
    """One Alertmanager process with a webhook receiver; every alert goes to it, grouped by `group_by`."""

    def __init__(self, binary: str, workdir: Path, *, group_wait: str = "2s", group_interval: str = "2s",
                 group_by: tuple[str, ...] = ("alertname",),
                 inhibit_rules: tuple[dict[str, Any], ...] = ()) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self.receiver = WebhookReceiver()
        self.config_path = workdir / "alertmanager.yml"
        self.log_path = workdir / "alertmanager.log"
        self.route = {"receiver": "hook", "group_by": list(group_by), "group_wait": group_wait,
                      "group_interval": group_interval, "repeat_interval": "1h"}
        self.inhibit_rules = list(inhibit_rules)   # Alertmanager's own form (source_matchers, ...)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Write the config, start the process and wait until /-/ready answers; on another free port when
        the chosen one was taken meanwhile (free_port cannot reserve it; CI caught "address already in use")."""
        for attempt in range(3):
            try:
                self._start_once()
                return
            except RuntimeError:
                if attempt == 2 or "address already in use" not in self.log_tail():
                    raise
                end_process(self.proc)
                self.port = free_port()
                self.address = f"127.0.0.1:{self.port}"
                self.url = f"http://{self.address}"

    def _start_once(self) -> None:
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        cfg = {"route": self.route,
               "receivers": [{"name": "hook", "webhook_configs": [{"url": self.receiver.url,
                                                                   "send_resolved": True}]}]}
        if self.inhibit_rules:
            cfg["inhibit_rules"] = self.inhibit_rules
        self.config_path.write_text(json.dumps(cfg, indent=2))  # JSON is valid YAML
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={self.config_path}", f"--storage.path={self.workdir / 'data'}",
                 f"--web.listen-address={self.address}", "--cluster.listen-address=", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir)
        finally:
            log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"alertmanager not ready after {READY_TIMEOUT} s; log:\n{self.log_tail()}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"alertmanager exited with {self.proc and self.proc.returncode}; "
                               f"log tail:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        end_process(self.proc)
        self.proc = None
        self.receiver.close()

    def api(self, path: str) -> Any:
        """GET /api/v2/`path` as parsed JSON."""
        with urllib.request.urlopen(f"{self.url}/api/v2/{path}", timeout=5) as resp:
            return json.loads(resp.read())

    def silences(self, *states: str) -> list[dict[str, Any]]:
        """Silences Alertmanager holds, those in `states` when given (active, pending, expired)."""
        return [s for s in self.api("silences") if not states or s["status"]["state"] in states]

    def create_silence(self, matchers: dict[str, str], *, hours: float = 1.0, created_by: str = "test",
                       comment: str = "set by a test") -> str:
        """A silence of equality `matchers` (name -> value) from now for `hours`, as amtool makes one; its id."""
        now = time.time()

        def iso(t: float) -> str:
            return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + "Z"

        body = {"matchers": [{"name": n, "value": v, "isRegex": False, "isEqual": True} for n, v in matchers.items()],
                "startsAt": iso(now - 1), "endsAt": iso(now + hours * 3600), "createdBy": created_by,
                "comment": comment}
        req = urllib.request.Request(f"{self.url}/api/v2/silences", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            return str(json.loads(resp.read())["silenceID"])

    def expire_silence(self, silence_id: str) -> None:
        """DELETE /api/v2/silence/`silence_id`: it ends now."""
        req = urllib.request.Request(f"{self.url}/api/v2/silence/{silence_id}", method="DELETE")
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """POST alerts as Prometheus would ({"labels", "annotations"}; firing from now)."""
        req = urllib.request.Request(f"{self.url}/api/v2/alerts", data=json.dumps(alerts).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()

    def log_tail(self, n: int = 30) -> str:
        return log_tail(self.log_path, n)


def start_alertmanager(workdir: Path, **kwargs: Any) -> AlertmanagerServer:
    """A ready AlertmanagerServer in `workdir` (skips without the program, fails under HUB_REQUIRE_SERVICES=1)."""
    binary = need_program(os.environ.get("HUB_ALERTMANAGER_BIN", "prometheus-alertmanager"),
                          hint="Debian/Ubuntu package 'prometheus-alertmanager'")
    workdir.mkdir(parents=True, exist_ok=True)
    server = AlertmanagerServer(binary, workdir, **kwargs)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture
def alertmanager_server(tmp_path: Path) -> Iterator[AlertmanagerServer]:
    """A fresh, ready Alertmanager (group_wait 2 s) with its webhook receiver; stopped afterwards."""
    server = start_alertmanager(tmp_path / "alertmanager")
    try:
        yield server
    finally:
        server.stop()
