"""The audit log's bounds: a bounded queue, write errors counted not printed, a writer thread that
lives only while the app runs, and `rejected` lines limited per address and reason."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from hub.app import create_app
from hub.audit import MAX_FIELD_CHARS, WINDOW, Audit, Repeats
from hub.context import HUB
from hub.metrics import HubMetrics
from hub.sources.base import Source, SourceResult
from tests.support.aio import sample


def lines(path: Path) -> list[dict[str, Any]]:
    """Every record in the audit file (each line must be one JSON object)."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def dropped(metrics: HubMetrics, reason: str) -> float:
    return sample(metrics, "hub_audit_dropped_total", reason=reason)


def test_records_wait_in_a_bounded_queue_until_start_and_what_does_not_fit_is_counted(tmp_path):
    path, metrics = tmp_path / "audit.jsonl", HubMetrics()
    audit = Audit(path=str(path), metrics=metrics, max_queue=10)
    try:
        for i in range(15):
            audit.event("connect", remote=f"10.0.0.{i}", token="ops")
        assert dropped(metrics, "queue_full") == 5
        assert path.read_bytes() == b"", "nothing is written before start()"
        audit.start()
    finally:
        audit.close()
    recs = lines(path)
    assert [r["remote"] for r in recs] == [f"10.0.0.{i}" for i in range(10)]  # the first ten, in order
    assert set(recs[0]) == {"time", "event", "remote", "token"} and recs[0]["event"] == "connect"
    audit.event("connect", remote="10.0.0.99")
    assert dropped(metrics, "closed") == 1 and len(lines(path)) == 10
    assert dropped(metrics, "write_error") == 0


def test_a_write_error_is_counted_and_reported_once_never_a_traceback_per_record(caplog, capfd):
    # /dev/full: every write fails with ENOSPC, as on a full disk.
    metrics = HubMetrics()
    audit = Audit(path="/dev/full", metrics=metrics)
    caplog.set_level(logging.WARNING, logger="hub.audit")
    audit.start()
    for _ in range(100):
        audit.event("connect", remote="10.0.0.1", token="ops")
    audit.close()
    assert dropped(metrics, "write_error") == 100
    reports = [r for r in caplog.records if r.name == "hub.audit"]
    assert len(reports) == 1 and "cannot write" in reports[0].getMessage(), [r.getMessage() for r in reports]
    assert reports[0].exc_info is None
    err = capfd.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err


class FailingStart(Source):
    name = "broken"
    sections = ()
    timeout = 1.0

    async def start(self) -> None:
        raise RuntimeError("broken cannot start")

    async def collect(self, budget: float) -> SourceResult:
        return SourceResult(data={})


async def test_the_writer_thread_lives_only_while_the_app_runs(aiohttp_client, make_config, tmp_path):
    before = set(threading.enumerate())

    def new_threads() -> list[str]:
        # asyncio's default executor threads come and go with to_thread; they are not the audit's.
        return [t.name for t in set(threading.enumerate()) - before
                if t.is_alive() and not t.name.startswith("asyncio_")]

    cfg = make_config({"audit": {"path": str(tmp_path / "audit.jsonl")}})
    create_app(cfg)  # built, never started (as when `hub serve` cannot bind its port)
    assert new_threads() == []
    runner = web.AppRunner(create_app(cfg, extra_sources=[FailingStart()]))
    with pytest.raises(RuntimeError, match="broken cannot start"):
        await runner.setup()
    await runner.cleanup()
    assert new_threads() == [], "a failed start leaves no thread behind"
    client = await aiohttp_client(create_app(cfg))
    assert new_threads() == ["hub-audit-writer"]
    await client.close()
    assert new_threads() == []


async def test_rejected_is_written_once_per_address_and_reason_then_summed(aiohttp_client, make_config, tmp_path):
    path = tmp_path / "audit.jsonl"
    cfg = make_config({"audit": {"path": str(path)}, "server": {"max_connections": 1}})
    client = await aiohttp_client(create_app(cfg))
    async with client.ws_connect("/ws"):
        for _ in range(5):
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await client.ws_connect("/ws")
        for _ in range(2):
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await client.ws_connect("/ws", headers={"Origin": "https://evil.example"})
    await client.close()  # cleanup: open windows are summarised, the queue written, the file closed
    recs = [r for r in lines(path) if r["event"].startswith("rejected")]
    assert [(r["event"], r["reason"]) for r in recs] == [
        ("rejected", "capacity"), ("rejected", "origin"),
        ("rejected_repeated", "capacity"), ("rejected_repeated", "origin")]
    assert recs[0]["remote"] == "127.0.0.1" and "user_agent" in recs[0]
    assert {k: v for k, v in recs[2].items() if k != "time"} == {
        "event": "rejected_repeated", "remote": "127.0.0.1", "reason": "capacity", "repeats": 4, "window_seconds": 60}
    assert recs[3]["repeats"] == 1


def test_rejected_windows_end_after_a_minute_and_the_tracked_keys_are_bounded(tmp_path):
    now = [1000.0]
    path, metrics = tmp_path / "audit.jsonl", HubMetrics()
    audit = Audit(path=str(path), metrics=metrics, clock=lambda: now[0])
    audit.rejected = Repeats(max_tracked=2, clock=lambda: now[0])
    for ip in ("10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3"):
        audit.event("rejected", remote=ip, reason="per_ip")
    assert dropped(metrics, "limiter_full") == 1  # 10.0.0.3: a third key while two are tracked
    audit.sweep()  # nothing ended yet
    now[0] += WINDOW
    audit.sweep()
    audit.event("rejected", remote="10.0.0.3", reason="per_ip")  # room again
    audit.close()
    assert [(r["event"], r["remote"], r.get("repeats")) for r in lines(path)] == [
        ("rejected", "10.0.0.1", None), ("rejected", "10.0.0.2", None),
        ("rejected_repeated", "10.0.0.1", 2), ("rejected", "10.0.0.3", None)]


async def test_a_user_agent_that_is_not_utf8_is_audited_not_a_500(aiohttp_client, make_config, tmp_path):
    # aiohttp keeps header bytes that are not UTF-8 as surrogates, which orjson refuses to encode.
    path = tmp_path / "audit.jsonl"
    client = await aiohttp_client(create_app(make_config({"audit": {"path": str(path)}})))
    port = client.server.port

    def refused_upgrade() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                      b"Origin: https://evil.example\r\nUser-Agent: probe\xff\xfe/1\r\n\r\n")
            return s.recv(100)

    head = await asyncio.to_thread(refused_upgrade)
    assert head.startswith(b"HTTP/1.1 403"), head
    await client.close()
    [rec] = [r for r in lines(path) if r["event"] == "rejected"]
    assert rec["user_agent"] == "probe\\xff\\xfe/1" and rec["reason"] == "origin"  # the bytes, escaped
    assert sample(client.app[HUB].metrics, "hub_audit_dropped_total", reason="write_error") == 0


async def test_client_fields_are_capped_and_escaped_so_one_attempt_costs_one_short_line(
        aiohttp_client, make_config, tmp_path):
    # Before: Origin and User-Agent went in uncut (up to 8 KB each: ~16 KB per refused attempt), and a
    # U+2028 or NEL in them split the record for any reader that splits lines the Unicode way.
    path = tmp_path / "audit.jsonl"
    client = await aiohttp_client(create_app(make_config({"audit": {"path": str(path)}})))
    port = client.server.port
    origin = "https://evil.example/" + "\u2028\x85" + "o" * 8000  # (the parser refuses raw C0 controls)
    agent = "probe/1 " + "\u00e9" * 4000  # two bytes each in UTF-8: 8 KB, just under the header limit

    def refused_upgrade() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                      + f"Origin: {origin}\r\nUser-Agent: {agent}\r\n\r\n".encode())
            return s.recv(100)

    head = await asyncio.to_thread(refused_upgrade)
    assert head.startswith(b"HTTP/1.1 403"), head
    await client.close()
    raw = path.read_bytes()
    [line] = [ln for ln in raw.split(b"\n") if b'"rejected"' in ln]
    assert len(line) < 1500, len(line)
    assert raw.decode().splitlines() == raw.decode().split("\n")[:-1], "no character a reader splits lines at"
    rec = orjson.loads(line)
    assert len(rec["origin"]) == MAX_FIELD_CHARS and rec["origin"].endswith("…")
    assert rec["origin"].startswith("https://evil.example/\\u2028\\x85ooo")
    assert len(rec["user_agent"]) == MAX_FIELD_CHARS and rec["user_agent"].endswith("…")

