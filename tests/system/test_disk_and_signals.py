"""Issue 20 items 5 and 6 against a real `hub serve`: the audit file on a full disk, log rotation
(`create` and `copytruncate`, SIGHUP), and SIGTERM at any moment of start-up."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support import free_port, services_required
from tests.support.hubproc import ROOT, HubProcess, to_toml

pytestmark = [pytest.mark.timeout(120)]

BASE: dict[str, Any] = {
    "broadcast": {"interval": 0.2, "heartbeat": 30.0},
    "sources": {"prometheus": {"enabled": False}, "business": {"enabled": False}, "health": {"enabled": False}},
}
#: generous: the machine is shared; every wait returns as soon as its condition holds
WAIT = 20.0


def wait_until(pred: Callable[[], Any], *, what: str, timeout: float = WAIT) -> Any:
    """Poll `pred` (reading what the hub wrote) until truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def records(path: Path) -> list[dict[str, Any]]:
    """Every line of an audit file as JSON: a cut or merged line fails here."""
    return [orjson.loads(line) for line in path.read_bytes().split(b"\n")[:-1]] if path.exists() else []


def dropped(hub: HubProcess) -> dict[str, float]:
    """hub_audit_dropped_total by reason, from the hub's /metrics."""
    with urllib.request.urlopen(hub.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return {m[1]: float(m[2]) for m in re.finditer(r'^hub_audit_dropped_total\{reason="(\w+)"\} (\S+)$', text, re.M)}


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, unmounted afterwards (needs root; skips otherwise unless services are required)."""
    where = tmp_path / "disk"
    where.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        why = f"cannot mount a tmpfs here: {res.stderr.strip() or res.returncode}"
        if services_required():
            pytest.fail(f"{why}, and HUB_REQUIRE_SERVICES=1 requires it")
        pytest.skip(why)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


async def refused_upgrades(port: int, n: int, *, concurrency: int = 16) -> list[bytes]:
    """`n` upgrades from `n` forwarded addresses, each with an 8 KB foreign Origin and User-Agent: 403."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> bytes:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                              "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              f"Sec-WebSocket-Version: 13\r\nX-Forwarded-For: 10.9.{i // 250}.{i % 250 + 1}\r\n"
                              f"Origin: https://evil.example/{'o' * 8000}\r\nUser-Agent: {'u' * 8000}\r\n\r\n"
                              ).encode())
                return await asyncio.wait_for(reader.readline(), WAIT)
            finally:
                writer.close()

    return await asyncio.gather(*(one(i) for i in range(n)))


async def test_a_full_disk_costs_one_warning_counts_every_lost_record_and_the_hub_keeps_serving(
        tmp_path: Path, tiny_disk: Path) -> None:
    # Before: 2,000 refused upgrades grew stderr by 17.7 MB of "--- Logging error ---" tracebacks;
    # each record carried 16 KB of Origin and User-Agent; a write cut short by the full disk left a
    # broken line in the file.
    audit = tiny_disk / "audit.jsonl"
    n = 400  # about 700 bytes each once capped: 64 KiB holds about 90
    hub = HubProcess({**BASE, "audit": {"path": str(audit)}, "server": {"trusted_proxies": ["127.0.0.1/32"]}},
                     tmp_path).start()
    try:
        heads = await refused_upgrades(hub.port, n)
        assert {h.split(b" ")[1] for h in heads} == {b"403"}, set(heads)
        # Every record is written or counted, none silently lost (each address is new: no repeats).
        def settled() -> dict[str, float] | None:
            d = dropped(hub)  # read before the file: a batch is counted only after its write failed
            data = audit.read_bytes()
            done = data.endswith(b"\n") and data.count(b"\n") + d.get("write_error", 0) + d.get("queue_full", 0) == n
            return d if done else None

        counts = wait_until(settled, what="every record written or counted")
        assert counts.get("write_error", 0) > 0, counts
        recs = records(audit)
        assert 50 < len(recs) < n and all(r["event"] == "rejected" for r in recs)
        assert max(len(orjson.dumps(r)) for r in recs) < 1000
        assert all(len(r["origin"]) == 256 and r["origin"].endswith("…") for r in recs)
        log = hub.log_path.read_text()
        assert len(log) < 8192, f"the hub's log grew to {len(log)} bytes"
        assert "Traceback" not in log and "Logging error" not in log, log
        assert log.count("cannot write (No space left on device)") == 1, log
        # Still serving: a client connects and gets a snapshot.
        async with aiohttp.ClientSession() as session, session.ws_connect(hub.url + "/ws") as ws:
            assert (await ws.receive(timeout=5)).type is aiohttp.WSMsgType.TEXT
        # Space again (the file truncated, as copytruncate does): the next records are written whole.
        os.truncate(audit, 0)
        async with aiohttp.ClientSession() as session, session.ws_connect(hub.url + "/ws") as ws:
            assert (await ws.receive(timeout=5)).type is aiohttp.WSMsgType.TEXT
        wait_until(lambda: any(r["event"] == "connect" for r in records(audit)), what="a connect line after truncation")
        assert audit.read_bytes().startswith(b'{"time"')
        wait_until(lambda: "writing again" in hub.log_path.read_text(), what="the recovery line")
    finally:
        assert hub.stop() == 0, hub.log()


async def test_an_audit_on_a_full_stderr_never_adds_logging_tracebacks_to_it(tiny_disk: Path) -> None:
    # `[audit] path` empty: the audit and the hub's own log share stderr, here a file on the full disk.
    # Before: a batch cut short by the full disk was counted lost whole, though its first lines
    # were in stderr (the count was wrong); logging tracebacks are checked for as well.
    n = 400
    hub = HubProcess({**BASE, "server": {"trusted_proxies": ["127.0.0.1/32"]}}, tiny_disk).start()
    stderr = hub.log_path

    def audit_lines() -> int:
        count = 0
        for line in stderr.read_bytes().split(b"\n")[:-1]:  # whole lines only
            try:
                count += orjson.loads(line).get("event") == "rejected"
            except (orjson.JSONDecodeError, AttributeError):
                pass  # a log line, or the one record the full disk cut short (counted as lost)
        return count

    try:
        heads = await refused_upgrades(hub.port, n)
        assert {h.split(b" ")[1] for h in heads} == {b"403"}, set(heads)

        def settled() -> dict[str, float] | None:
            d = dropped(hub)  # read before the file: a batch is counted only after its write failed
            return d if audit_lines() + d.get("write_error", 0) + d.get("queue_full", 0) == n else None

        counts = wait_until(settled, what="every record written or counted")
        assert counts.get("write_error", 0) > 0, counts
        # Space again; SIGHUP logs a line, which flushes whatever stderr's buffer held.
        os.truncate(stderr, 0)
        assert hub.proc is not None
        hub.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "nothing to reopen" in stderr.read_text(errors="replace"), what="the SIGHUP lines")
        text = stderr.read_text(errors="replace")
        assert "Logging error" not in text and "Traceback" not in text, text
        assert len(text) < 8192, f"stderr grew to {len(text)} bytes after the truncation"
    finally:
        assert hub.stop() == 0, hub.log()


async def test_rename_then_sighup_moves_new_lines_to_a_new_file_and_keeps_clients_connected(tmp_path: Path) -> None:
    # Before: SIGHUP killed the hub at once (exit -1, clients got 1006), and lines kept going to the
    # renamed file.
    audit = tmp_path / "audit.jsonl"
    hub = HubProcess({**BASE, "audit": {"path": str(audit)}}, tmp_path).start()
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(hub.url + "/ws")
            seq = orjson.loads((await ws.receive(timeout=5)).data)["seq"]
            wait_until(lambda: any(r["event"] == "connect" for r in records(audit)), what="the connect line")
            os.rename(audit, tmp_path / "audit.jsonl.1")  # logrotate, before its postrotate
            assert hub.proc is not None
            hub.proc.send_signal(signal.SIGHUP)  # postrotate: kill -HUP
            wait_until(audit.exists, what="the audit file opened again at its path")
            for _ in range(3):  # the client stays: more snapshots, in order
                msg = await ws.receive(timeout=5)
                assert msg.type is aiohttp.WSMsgType.TEXT, msg
                assert orjson.loads(msg.data)["seq"] > seq
                seq = orjson.loads(msg.data)["seq"]
            async with session.ws_connect(hub.url + "/ws?points=1"):
                pass
            wait_until(lambda: [r["event"] for r in records(audit)] == ["connect", "disconnect"],
                       what="the second client's lines in the new file")
            assert [r["event"] for r in records(tmp_path / "audit.jsonl.1")] == ["connect"]
            assert hub.proc.poll() is None
            await ws.close()
        log = hub.log_path.read_text()
        assert "SIGHUP: reopening the audit log" in log and "reopened: SIGHUP" in log, log
    finally:
        assert hub.stop() == 0, hub.log()


async def test_logrotate_create_and_copytruncate_are_picked_up_without_a_signal(tmp_path: Path) -> None:
    # Before: after a rename and a new file at the path (logrotate's `create`), lines kept going to
    # the renamed file until a restart.
    audit = tmp_path / "audit.jsonl"
    hub = HubProcess({**BASE, "audit": {"path": str(audit)}}, tmp_path).start()

    async def connect_once(session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(hub.url + "/ws?points=1") as ws:
            assert (await ws.receive(timeout=5)).type is aiohttp.WSMsgType.TEXT

    try:
        async with aiohttp.ClientSession() as session:
            await connect_once(session)
            wait_until(lambda: len(records(audit)) == 2, what="connect and disconnect")
            # `create`: rename, then a new empty file at the path; no signal.
            os.rename(audit, tmp_path / "audit.jsonl.1")
            audit.touch()
            await connect_once(session)
            wait_until(lambda: len(records(audit)) == 2, what="the lines in the new file")
            assert len(records(tmp_path / "audit.jsonl.1")) == 2
            # `copytruncate`: copy, then truncate in place; the next line starts the file (no hole).
            shutil.copy(audit, tmp_path / "audit.jsonl.2")
            os.truncate(audit, 0)
            await connect_once(session)
            wait_until(lambda: len(records(audit)) == 2, what="the lines after the truncation")
            assert audit.read_bytes().startswith(b'{"time"')
        log = hub.log_path.read_text()
        assert "reopened: a new file at its path (rotated)" in log and "reopened: the file shrank" in log, log
    finally:
        assert hub.stop() == 0, hub.log()


#: `hub serve` with one injected pause in its start-up, so the signal lands there every time:
#: either create_app waits for a release file, or a source's start() never returns.
PAUSED_START = """
import asyncio, sys, time
from pathlib import Path
import hub.app
from hub.sources.base import Source, SourceResult

marker, release, where = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
real_create_app = hub.app.create_app

class NeverStarts(Source):
    name, sections, timeout = "never_starts", (), 1.0
    async def start(self):
        marker.touch()
        await asyncio.Event().wait()
    async def collect(self, budget):
        return SourceResult(data={})

def create_app(cfg, **kw):
    if where == "create_app":
        marker.touch()
        while not release.exists():
            time.sleep(0.01)
        return real_create_app(cfg, **kw)
    return real_create_app(cfg, extra_sources=[NeverStarts()], **kw)

hub.app.create_app = create_app
from hub.cli import main
sys.exit(main(sys.argv[4:]))
"""


@pytest.mark.parametrize("where", ["create_app", "source_start"])
def test_sigterm_during_start_up_exits_0(tmp_path: Path, where: str) -> None:
    """The pause is injected by a wrapper around the real `hub serve` (PAUSED_START), so the signal
    arrives at that moment on every run; nothing else of the hub is replaced."""
    # Before: a SIGTERM in the first ~0.3 s (imports, create_app) killed the hub with -15.
    cfg = tmp_path / "hub.toml"
    cfg.write_text(to_toml({**BASE, "audit": {"path": str(tmp_path / "audit.jsonl")}}))
    marker, release, log = tmp_path / "paused", tmp_path / "release", tmp_path / "hub.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", PAUSED_START, str(marker), str(release), where,
             "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(free_port())],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_until(lambda: marker.exists() or proc.poll() is not None, what="the paused start-up")
        assert proc.poll() is None, log.read_text()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        if where == "create_app":
            # The paused process is asleep in the kernel: it meets the signal before it runs again,
            # so it cannot see this file first.
            release.touch()
        assert proc.wait(timeout=WAIT) == 0, log.read_text()
        assert time.monotonic() - t0 < 5.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "Traceback" not in text and "hub serving on" not in text, text
    assert "SIGTERM: closing clients with 1001 and stopping" in text and "stopped during start-up" in text, text
