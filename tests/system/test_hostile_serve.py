"""Issue 13 and 14 against a real `hub serve` process and real sockets: malformed HTTP requests, bad
serve options, an ephemeral port, silent and slowloris connections, failed-authentication lockout,
and a Prometheus that echoes the credentials it was sent.

The Prometheus here is a stand-in (a local aiohttp server): a real Prometheus cannot be made to echo
the Authorization header in its error body, which is what a misconfigured proxy in front of it does.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from hub.auth import hash_token
from tests.support.hubproc import ROOT, HubProcess, to_toml

pytestmark = [pytest.mark.timeout(180)]

BASE: dict[str, Any] = {
    "broadcast": {"interval": 0.2, "heartbeat": 30.0},
    "sources": {"prometheus": {"enabled": False}, "business": {"enabled": False}, "health": {"enabled": False}},
}
TOKEN = "hostile-serve-token-5f1c9e"
#: generous: the machine is shared; every wait returns as soon as its event happens
WAIT = 20.0


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _wait_until(pred: Callable[[], Any], *, what: str, timeout: float = WAIT) -> Any:
    """Poll `pred` (reading a file the hub writes) until truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _loopback_alias(addr: str) -> bool:
    """True when this machine can send from `addr` (every 127/8 address on Linux)."""
    try:
        with socket.socket() as s:
            s.bind((addr, 0))
        return True
    except OSError:
        return False


def _raw(port: int, data: bytes, *, source: str = "127.0.0.1") -> bytes:
    """Send `data` from `source` and return the status line the hub answers (b"" if it just closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT, source_address=(source, 0)) as s:
        s.sendall(data)
        got = b""
        try:
            while b"\r\n" not in got:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
    return got.split(b"\r\n", 1)[0]


def _malformed(port: int) -> dict[str, bytes]:
    host = f"Host: 127.0.0.1:{port}\r\n"
    return {
        "url over 8190 bytes": f"GET /{'a' * 9000} HTTP/1.1\r\n{host}\r\n".encode(),
        "header over 8190 bytes": f"GET /health HTTP/1.1\r\n{host}X-Big: {'b' * 9000}\r\n\r\n".encode(),
        "too many headers": (f"GET /health HTTP/1.1\r\n{host}"
                             + "".join(f"X-H{i}: v\r\n" for i in range(300)) + "\r\n").encode(),
        "missing Host": b"GET /health HTTP/1.1\r\n\r\n",
        "duplicate Host": f"GET /health HTTP/1.1\r\n{host}{host}\r\n".encode(),
        "bad chunked encoding": (f"POST /health HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n"
                                 "zz\r\nabc\r\n0\r\n\r\n").encode(),
    }


# ----------------------------------------------------------------------------- item 6: malformed requests


def test_malformed_requests_get_4xx_and_one_warning_per_remote_per_minute(tmp_path: Path) -> None:
    remotes = ["127.0.0.1", *(["127.0.0.2"] if _loopback_alias("127.0.0.2") else [])]
    hub = HubProcess(BASE, tmp_path).start()
    try:
        for remote in remotes:
            for _round in range(3):  # repeats must not add lines
                for what, data in _malformed(hub.port).items():
                    line = _raw(hub.port, data, source=remote)
                    assert re.match(rb"HTTP/1\.[01] 4\d\d ", line), (what, line)
        hub.wait_healthy(timeout=WAIT)  # and the hub still serves
        for remote in remotes:
            _wait_until(lambda r=remote: f"malformed HTTP request from {r} " in hub.log(),
                        what=f"the warning for {remote}")
    finally:
        assert hub.stop() == 0
    log = hub.log_path.read_text(errors="replace")
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
    for remote in remotes:
        lines = [ln for ln in log.splitlines() if f"malformed HTTP request from {remote} " in ln]
        assert len(lines) == 1, lines
        assert " WARNING " in lines[0] and len(lines[0]) < 600, lines[0]


# ----------------------------------------------------------------------------- item 9: serve options and binding


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "serve.toml"
    cfg.write_text(to_toml(BASE))
    return subprocess.run([sys.executable, "-m", "hub", "serve", "--config", str(cfg), *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("args, needle", [
    (("--port", "70000"), "--port: server.port: must be <= 65535, got 70000"),
    (("--port", "-5"), "--port: server.port: must be >= 0, got -5"),
    (("--host", "not a host"), "--host: server.host"),
    (("--host", "192.0.2.1", "--port", "8080"), "server.host: '192.0.2.1' is not an address of this machine"),
    ("in use", "server.port: {port} is already in use on 127.0.0.1"),
], ids=["port-too-big", "port-negative", "bad-host", "host-not-local", "port-in-use"])
def test_bad_serve_address_exits_2_naming_the_option(tmp_path: Path, args: Any, needle: str) -> None:
    if args == "in use":
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            res = _serve(tmp_path, "--host", "127.0.0.1", "--port", str(port))
        needle = needle.format(port=port)
    else:
        res = _serve(tmp_path, *args)
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert needle in res.stderr, res.stderr
    assert "Traceback" not in res.stderr + res.stdout, res.stderr


# ----------------------------------------------------------------------------- item 10: port = 0


def test_port_0_serves_on_an_ephemeral_port_and_logs_the_real_one(tmp_path: Path) -> None:
    cfg = tmp_path / "port0.toml"
    cfg.write_text(to_toml(_merge(BASE, {"server": {"host": "127.0.0.1", "port": 0}})))
    log_path = tmp_path / "port0.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hub", "serve", "--config", str(cfg)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    try:
        m = _wait_until(lambda: re.search(r"hub serving on http://127\.0\.0\.1:(\d+)\b", log_path.read_text()),
                        what="the serving line")
        port = int(m.group(1))
        assert port != 0
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=WAIT) == 0
    assert ":0 " not in log_path.read_text() and "Traceback" not in log_path.read_text()


# ----------------------------------------------------------------------------- issue 14: handshake timeout


def _silent(port: int) -> float:
    """Connect, send nothing; seconds until the hub closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        t0 = time.monotonic()
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass
        return time.monotonic() - t0


def _slowloris(port: int) -> tuple[float, int]:
    """Trickle a request one byte per 0.1 s; (seconds until the hub closes it, bytes sent)."""
    head = f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode()
    trickle = b"X-Slow: " + b"a" * 10_000
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        t0 = time.monotonic()
        s.sendall(head)
        sent = len(head)
        s.settimeout(0.1)  # the pace of the trickle: one byte whenever the hub stays silent for 0.1 s
        for b in trickle:
            try:
                if s.recv(1) == b"":
                    break
            except TimeoutError:
                try:
                    s.send(bytes([b]))
                    sent += 1
                except OSError:
                    break
            except ConnectionResetError:
                break
            if time.monotonic() - t0 > WAIT:
                raise AssertionError("the trickled request was never cut")
        return time.monotonic() - t0, sent


async def test_silent_and_slowloris_connections_are_cut_after_handshake_timeout(tmp_path: Path) -> None:
    timeout = 1.0
    hub = HubProcess(_merge(BASE, {"server": {"handshake_timeout": timeout}}), tmp_path).start()
    try:
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{hub.url}/ws") as ws:
            first = json.loads((await ws.receive(timeout=WAIT)).data)
            attackers = asyncio.gather(asyncio.to_thread(_silent, hub.port), asyncio.to_thread(_slowloris, hub.port))
            seqs = [first["seq"]]
            while not attackers.done():  # the normal client keeps reading every tick meanwhile
                msg = json.loads((await ws.receive(timeout=WAIT)).data)
                assert msg["type"] == "metrics_update"
                assert msg["seq"] == seqs[-1] + 1, seqs + [msg["seq"]]
                seqs.append(msg["seq"])
            silent, (slow, sent) = await attackers
            # A WebSocket is exempt: it outlived the handshake timeout by far, fed every tick.
            assert len(seqs) >= 3 and not ws.closed
            async with session.get(f"{hub.url}/health") as r:
                assert r.status == 200
    finally:
        assert hub.stop() == 0
    margin = 5.0  # a loaded machine delays the timer, never the other way round
    assert timeout * 0.9 <= silent <= timeout + margin, silent
    assert timeout * 0.9 <= slow <= timeout + margin, (slow, sent)
    assert sent > 40  # it really trickled (one byte per 0.1 s)
    assert "Traceback" not in hub.log_path.read_text()


# ----------------------------------------------------------------------------- issue 14: failed authentications


def _get(port: int, path: str, *, source: str, token: str | None = None,
         headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT, source_address=(source, 0))
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    conn.request("GET", path, headers=h)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


async def test_failed_authentications_lock_the_address_out_with_429_and_one_audit_line(tmp_path: Path) -> None:
    attacker, other = "127.0.0.3", "127.0.0.4"
    if not (_loopback_alias(attacker) and _loopback_alias(other)):
        pytest.skip("needs 127.0.0.3 and 127.0.0.4 as source addresses (Linux loopback)")
    audit = tmp_path / "audit.jsonl"
    cfg = _merge(BASE, {"server": {"auth_failures_per_minute": 3},
                        "auth": {"tokens": [{"name": "ops", "hash": hash_token(TOKEN)}]},
                        "audit": {"path": str(audit)}})
    hub = HubProcess(cfg, tmp_path).start()
    port = hub.port
    try:
        for i in range(3):
            assert _get(port, "/api/metrics/history?limit=0", source=attacker, token=f"wrong-{i}").status == 401
        locked = [_get(port, "/api/metrics/history?limit=0", source=attacker, token="wrong-again"),
                  _get(port, "/api/metrics/history?limit=0", source=attacker),
                  # a valid token does not open the lock before the window ends: guessing stays blocked
                  _get(port, "/api/metrics/history?limit=0", source=attacker, token=TOKEN),
                  _get(port, "/ws", source=attacker, token=TOKEN, headers=UPGRADE)]
        for resp in locked:
            assert resp.status == 429, resp.status
            assert 1 <= int(resp.headers["Retry-After"]) <= 61, resp.headers["Retry-After"]
        # Another address is not affected.
        assert _get(port, "/api/metrics/history?limit=0", source=other, token=TOKEN).status == 200
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(other, 0))) as session, \
                session.ws_connect(f"{hub.url}/ws", headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            await ws.receive(timeout=WAIT)
            metrics = await (await session.get(f"{hub.url}/metrics")).text()
        # The audit file is written in order by one thread: once the later connect is there, so is
        # everything before it.
        _wait_until(lambda: '"event":"connect"' in audit.read_text(), what="the connect audit line")
    finally:
        assert hub.stop() == 0
    events = [json.loads(ln) for ln in audit.read_text().splitlines()]
    failures = [e for e in events if e["event"] == "auth_failure"]
    assert len(failures) == 1, failures
    assert failures[0]["remote"] == attacker and failures[0]["reason"] == "invalid token"
    # REST refusals and WebSocket upgrades are counted apart.
    assert re.search(r'hub_http_rejected_total\{reason="auth_rate_limited"\} 3\.0', metrics), metrics
    assert re.search(r'hub_http_rejected_total\{reason="unauthorized"\} 3\.0', metrics), metrics
    assert re.search(r'hub_ws_rejected_total\{reason="auth_rate_limited"\} 1\.0', metrics), metrics
    assert 'hub_ws_rejected_total{reason="unauthorized"}' not in metrics, metrics
    everything = audit.read_text() + hub.log_path.read_text()
    assert TOKEN not in everything and "wrong-" not in everything


# ----------------------------------------------------------------------------- item 11: echoed credentials

USER, PASSWORD = "hubuser", "Pw@s3cret-9471"  # '@' so the URL carries it percent-encoded
URL_PASSWORD = PASSWORD.replace("@", "%40")
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def _fragments(secret: str, n: int) -> list[str]:
    """Every `n`-character piece of `secret`: a secret cut in half still gives itself away."""
    return [secret[i:i + n] for i in range(len(secret) - n + 1)]


class Echo:
    """A stand-in Prometheus behind a careless proxy: it rejects the request quoting its Authorization."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.seen: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        self.seen.append(auth)
        if self.mode == "json":
            return web.json_response({"status": "error", "errorType": "bad_data",
                                      "error": f"rejected credentials: {auth} ({request.url})"}, status=400)
        if self.mode == "text":
            return web.Response(status=401, text=f"401 Unauthorized\nAuthorization: {auth}\n")
        # "cut": the credential straddles byte 200, where the hub cuts a non-JSON body to quote it;
        # 24 of its characters come before the cut. The content type is short, so what is left of it
        # also fits in the 300 characters of the error text.
        head = "401 "
        pad = "x" * (200 - 24 - len(head) - len("Authorization: Basic "))
        return web.Response(status=401, body=f"{head}{pad}Authorization: {auth}\n".encode(),
                            content_type="text/plain")


@pytest.mark.parametrize("mode", [
    "json",
    "text",
    "cut",  # a credential straddling the 200-byte excerpt: scrubbed before the cut (it leaked in part before)
], ids=["json-error-text", "text-body", "credential-cut-by-the-excerpt"])
async def test_credentials_echoed_by_prometheus_never_reach_snapshot_log_or_metrics(tmp_path: Path,
                                                                                   mode: str) -> None:
    echo = Echo(mode)
    runner = web.AppRunner(_echo_app(echo), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    prom_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    cfg = _merge(BASE, {"sources": {"prometheus": {
        "enabled": True, "url": f"http://{USER}:{URL_PASSWORD}@127.0.0.1:{prom_port}",
        "queries": {"up": "up"}, "alerts": False, "timeout": 2.0}}})
    hub = HubProcess(cfg, tmp_path, env={"HUB_LOG_LEVEL": "DEBUG"})
    try:
        await asyncio.to_thread(hub.start, timeout=WAIT)
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{hub.url}/ws") as ws:
            while True:  # the next snapshots, until Prometheus's refusal is in one
                msg = json.loads((await ws.receive(timeout=WAIT)).data)
                prom = msg["sources"]["prometheus"]
                if prom["status"] == "error" and "HTTP 40" in prom["error"]:
                    break
            metrics = await (await session.get(f"{hub.url}/metrics")).text()
            snapshot = await (await session.get(f"{hub.url}/api/metrics/snapshot")).text()
    finally:
        hub.stop()
        await runner.cleanup()
    assert echo.seen and echo.seen[0] == f"Basic {BASIC}"  # the stand-in really got, and echoed, the secret
    error = prom["error"]
    log = hub.log_path.read_text(errors="replace")
    assert "Traceback" not in log
    for where, text in {"error": error, "snapshot": snapshot, "log": log, "metrics": metrics}.items():
        for secret in (PASSWORD, URL_PASSWORD, BASIC):
            assert secret not in text, (where, secret)
        leaked = [f for f in _fragments(BASIC, 8) if f in text]
        assert not leaked, (where, leaked, error)
    if mode != "cut":
        assert "***" in error, error  # the echo reached the error text, scrubbed


def _echo_app(echo: Echo) -> web.Application:
    app = web.Application()
    app.router.add_get("/api/v1/query", echo.handle)
    app.router.add_get("/api/v1/alerts", echo.handle)
    return app

