"""Access control, audit, abuse limits, privacy and fault tolerance, each proven on a real hub.

Every guarantee in docs/security.md names the test here that proves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType

from hub.app import create_app
from hub.auth import SUBPROTOCOL, hash_token
from hub.state import STATE_KEY
from tests.conftest import recv_json, recv_type, wait_for
from tests.services import free_port, need_program
from tests.services.hubproc import HubProcess

TOKEN_ALL = "tok-all-Zq8vWk2Jm4Lp9Rt6Yx3Ns7Bc1Df5Gh0"
TOKEN_WALL = "tok-wall-Hb6Nc2Xv9Qm4Kp8Lr1Tz5Wy3Sd7Fg0"
TOKEN_WRONG = "tok-wrong-Ua3Ie8Ro5Py1Mt7Wn2Qb6Kc9Lx4Vz0"
WALL_TOPICS = ("system", "application", "alerts")


def auth_config(tmp_path: Path, **server: Any) -> dict[str, Any]:
    """Two tokens (one limited to topics) and an audit file under `tmp_path`."""
    return {
        "server": server,
        "auth": {"tokens": [{"name": "ops", "hash": hash_token(TOKEN_ALL)},
                            {"name": "wallboard", "hash": hash_token(TOKEN_WALL), "topics": list(WALL_TOPICS)}]},
        "audit": {"path": str(tmp_path / "audit.jsonl")},
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit_lines(tmp_path: Path) -> list[dict[str, Any]]:
    """Every audit record written so far (each line must be a JSON object)."""
    path = tmp_path / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def audited(tmp_path: Path, event: str, **match: Any) -> dict[str, Any]:
    """Wait for an audit record of `event` whose fields include `match`."""

    def find() -> dict[str, Any] | None:
        for rec in audit_lines(tmp_path):
            if rec["event"] == event and all(rec.get(k) == v for k, v in match.items()):
                return rec
        return None

    return await wait_for(find)


async def recv_close(ws: aiohttp.ClientWebSocketResponse, *, timeout: float = 5.0) -> aiohttp.WSMessage:
    """Skip messages until the close arrives."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                return msg


@pytest.fixture
async def authed(aiohttp_client, make_config, tmp_path):
    """A hub app with auth on, fast ticks, first tick done."""
    client = await aiohttp_client(create_app(make_config(auth_config(tmp_path))))
    await wait_for(lambda: client.app[STATE_KEY].feed.latest)
    return client


# ----------------------------------------------------------------------------- access control


async def test_ws_without_or_with_wrong_token_gets_401_before_upgrade(authed, tmp_path):
    for kwargs in ({}, {"headers": bearer(TOKEN_WRONG)},
                   {"protocols": (SUBPROTOCOL, "bearer." + TOKEN_WRONG)},
                   {"headers": {"Authorization": f"Basic {TOKEN_ALL}"}}):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await authed.ws_connect("/ws", **kwargs)
        assert info.value.status == 401, kwargs
        assert info.value.headers["WWW-Authenticate"] == 'Bearer realm="hub"'
    assert authed.app[STATE_KEY].feed.clients == set()
    assert {r["reason"] for r in audit_lines(tmp_path) if r["event"] == "auth_failure"} == {
        "missing token", "invalid token"}


async def test_ws_token_by_header_or_subprotocol_is_accepted_and_never_echoed(authed):
    async with authed.ws_connect("/ws", headers=bearer(TOKEN_ALL)) as ws:
        assert (await recv_json(ws))["type"] == "metrics_update"
    async with authed.ws_connect("/ws", protocols=(SUBPROTOCOL, "bearer." + TOKEN_ALL)) as ws:
        # The server selects hub.v1; the token is never sent back in the 101 response.
        assert ws.protocol == SUBPROTOCOL
        assert TOKEN_ALL not in str(ws._response.headers)
        assert (await recv_json(ws))["type"] == "metrics_update"


async def test_token_in_url_query_is_not_accepted(authed):
    for path in (f"/ws?access_token={TOKEN_ALL}", f"/ws?token={TOKEN_ALL}"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await authed.ws_connect(path)
        assert info.value.status == 401
    for path in (f"/api/metrics/snapshot?access_token={TOKEN_ALL}",
                 f"/api/metrics/history?access_token={TOKEN_ALL}"):
        assert (await authed.get(path)).status == 401


async def test_api_needs_token_health_and_ready_stay_open(authed):
    for path in ("/api/metrics/snapshot", "/api/metrics/history", "/api/metrics/business?timeRange=1h"):
        resp = await authed.get(path)
        assert resp.status == 401, path
        assert (await resp.json())["error"] == "unauthorized: missing token"
        assert (await authed.get(path, headers=bearer(TOKEN_WRONG))).status == 401
        assert (await authed.get(path, headers=bearer(TOKEN_ALL))).status in (200, 503), path
    assert (await authed.get("/health")).status == 200
    assert (await authed.get("/ready")).status == 200
    # /metrics is open unless auth.protect_metrics is set
    assert (await authed.get("/metrics")).status == 200


async def test_protect_metrics_requires_token(aiohttp_client, make_config, tmp_path):
    cfg = auth_config(tmp_path)
    cfg["auth"]["protect_metrics"] = True
    client = await aiohttp_client(create_app(make_config(cfg)))
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers=bearer(TOKEN_WRONG))).status == 401
    resp = await client.get("/metrics", headers=bearer(TOKEN_ALL))
    assert resp.status == 200 and "hub_ws_connections" in await resp.text()
    assert (await client.get("/health")).status == 200


async def test_auth_off_when_no_tokens(aiohttp_client, make_config):
    client = await aiohttp_client(create_app(make_config()))
    await wait_for(lambda: client.app[STATE_KEY].feed.latest)
    assert (await client.get("/api/metrics/snapshot")).status == 200
    async with client.ws_connect("/ws") as ws:
        assert (await recv_json(ws))["type"] == "metrics_update"


def sections_of(msg: dict[str, Any]) -> set[str]:
    return set(msg["data"])


async def test_topic_limited_token_never_receives_other_sections(authed, tmp_path):
    st = authed.app[STATE_KEY]
    protos = (SUBPROTOCOL, "bearer." + TOKEN_WALL)
    async with authed.ws_connect("/ws?history=5", protocols=protos) as ws:
        hist = await recv_json(ws)
        assert hist["type"] == "history" and hist["items"]
        for item in hist["items"]:
            assert sections_of(item) == set(WALL_TOPICS)
        update = await recv_type(ws, "metrics_update")
        assert sections_of(update) == set(WALL_TOPICS)
        # Whatever it subscribes to, business never comes through.
        await ws.send_str('{"type":"subscribe","topics":["business","system"]}')
        sub = await recv_type(ws, "subscribed")
        assert sub["topics"] == ["system"] and sub["denied"] == ["business"]
        seen = st.feed.seq
        while True:
            m = await recv_type(ws, "metrics_update")
            assert sections_of(m) == {"system"}
            if m["seq"] > seen + 1:
                break
        await ws.send_str('{"type":"subscribe","topics":["business"]}')
        sub = await recv_type(ws, "subscribed")
        assert sub["topics"] == [] and sub["denied"] == ["business"]
        m = await recv_type(ws, "metrics_update")
        assert m["data"] == {}
        await ws.send_str('{"type":"subscribe","topics":["system","application","business","alerts"]}')
        sub = await recv_type(ws, "subscribed")
        assert sub["topics"] == list(WALL_TOPICS)
        m = await recv_type(ws, "metrics_update")
        assert sections_of(m) == set(WALL_TOPICS)
    await audited(tmp_path, "policy_violation", token="wallboard", reason="topics_not_allowed")
    snap = await (await authed.get("/api/metrics/snapshot", headers=bearer(TOKEN_WALL))).json()
    assert sections_of(snap) == set(WALL_TOPICS)
    items = (await (await authed.get("/api/metrics/history", headers=bearer(TOKEN_WALL))).json())["items"]
    assert items and all(sections_of(i) == set(WALL_TOPICS) for i in items)
    resp = await authed.get("/api/metrics/business?timeRange=1h", headers=bearer(TOKEN_WALL))
    assert resp.status == 403
    await audited(tmp_path, "policy_violation", token="wallboard", reason="topic business not allowed")
    # the unlimited token gets every section
    snap = await (await authed.get("/api/metrics/snapshot", headers=bearer(TOKEN_ALL))).json()
    assert sections_of(snap) == {"system", "application", "business", "alerts"}


async def test_cross_site_websocket_hijacking_refused_even_with_valid_token(authed, tmp_path):
    # A page on another site can make the browser send the subprotocol token; Origin gives it away.
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await authed.ws_connect("/ws", protocols=(SUBPROTOCOL, "bearer." + TOKEN_ALL),
                                headers={"Origin": "https://evil.example.net"})
    assert info.value.status == 403
    rec = await audited(tmp_path, "rejected", reason="origin")
    assert rec["origin"] == "https://evil.example.net"


async def test_bearer_subprotocol_without_hub_v1_is_refused_and_token_never_logged(authed, caplog):
    # aiohttp logs the client's subprotocol list at WARNING when none matches hub.v1; a client
    # offering only "bearer.<token>" would put its token into the hub's log.
    caplog.set_level(logging.DEBUG)
    for protos in (("bearer." + TOKEN_ALL,), ("chat", "bearer." + TOKEN_ALL)):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await authed.ws_connect("/ws", protocols=protos)
        assert info.value.status == 400
    assert TOKEN_ALL not in caplog.text
    assert authed.app[STATE_KEY].feed.clients == set()


async def test_tokens_never_in_access_log(authed, caplog):
    # The access log records the request line (and Referer, User-Agent): a subprotocol or
    # Authorization token never appears in it.
    caplog.set_level(logging.DEBUG)
    async with authed.ws_connect("/ws", protocols=(SUBPROTOCOL, "bearer." + TOKEN_ALL)) as ws:
        await recv_json(ws)
    await authed.get("/api/metrics/snapshot", headers=bearer(TOKEN_ALL))
    await authed.get("/api/metrics/snapshot", headers=bearer(TOKEN_WRONG))
    await wait_for(lambda: any(r.name == "aiohttp.access" and "/api/metrics/snapshot" in r.getMessage()
                               for r in caplog.records))
    access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any("GET /ws" in line for line in access)
    for token in (TOKEN_ALL, TOKEN_WRONG):
        assert token not in caplog.text


async def test_audit_records_events_without_tokens_or_bodies(authed, tmp_path):
    marker = "BODY-MARKER-4f1c"
    ua = {"User-Agent": "wallboard-test/1.0", "Origin": f"http://{authed.server.host}:{authed.server.port}"}
    async with authed.ws_connect("/ws", protocols=(SUBPROTOCOL, "bearer." + TOKEN_ALL), headers=ua) as ws:
        await recv_json(ws)
        await ws.send_str(orjson.dumps({"type": "ping", "id": marker}).decode())
        assert (await recv_type(ws, "pong"))["id"] == marker
        await ws.send_str(orjson.dumps({"type": marker, "note": marker}).decode())
        assert (await recv_type(ws, "error"))["error"] == "unknown_type"
        await ws.send_str("{" + marker)
        await recv_type(ws, "error")
    async with authed.ws_connect("/ws", headers=bearer(TOKEN_WALL)) as ws:
        await recv_json(ws)
        await ws.send_str('{"type":"subscribe","topics":["business"]}')
        await recv_type(ws, "subscribed")
        await ws.send_bytes(marker.encode())
        assert (await recv_close(ws)).data == 1003
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await authed.ws_connect("/ws", headers=bearer(TOKEN_WRONG))
    await authed.get("/api/metrics/snapshot", headers=bearer(TOKEN_WRONG))

    connect = await audited(tmp_path, "connect", token="ops")
    assert connect["user_agent"] == "wallboard-test/1.0" and connect["origin"] == ua["Origin"]
    assert connect["remote"] == "127.0.0.1" and connect["time"].endswith("Z")
    disc = await audited(tmp_path, "disconnect", token="ops")
    assert disc["code"] == 1000 and disc["reason"] == "normal"
    disc = await audited(tmp_path, "disconnect", token="wallboard")
    assert disc["code"] == 1003 and disc["reason"] == "protocol_error"
    await audited(tmp_path, "policy_violation", token="wallboard", reason="binary_frame")
    await audited(tmp_path, "policy_violation", token="wallboard", reason="topics_not_allowed")
    fails = [r for r in audit_lines(tmp_path) if r["event"] == "auth_failure"]
    assert {r["path"] for r in fails} == {"/ws", "/api/metrics/snapshot"}
    text = (tmp_path / "audit.jsonl").read_text()
    for secret in (TOKEN_ALL, TOKEN_WALL, TOKEN_WRONG, marker, hash_token(TOKEN_ALL)[7:]):
        assert secret not in text


# ----------------------------------------------------------------------------- abuse limits


async def test_message_flood_closes_1008(aiohttp_client, make_config, tmp_path):
    cfg = auth_config(tmp_path, client_rate_limit=5.0, client_rate_burst=10)
    client = await aiohttp_client(create_app(make_config(cfg)))
    st = client.app[STATE_KEY]
    async with client.ws_connect("/ws", headers=bearer(TOKEN_ALL)) as ws:
        # within the burst: every ping answered
        for i in range(10):
            await ws.send_str(f'{{"type":"ping","id":{i}}}')
        for i in range(10):
            assert (await recv_type(ws, "pong"))["id"] == i
        for i in range(30):
            with contextlib.suppress(ConnectionError):
                await ws.send_str('{"type":"ping"}')
        msg = await recv_close(ws)
        assert msg.data == 1008
        assert ws.close_code == 1008
    await audited(tmp_path, "policy_violation", token="ops", reason="rate_limited")
    await audited(tmp_path, "disconnect", token="ops", code=1008, reason="rate_limited")
    await wait_for(lambda: st.metrics.disconnects.labels("rate_limited")._value.get() == 1)


async def test_message_rate_within_limit_is_never_cut(aiohttp_client, make_config):
    client = await aiohttp_client(create_app(make_config({"server": {"client_rate_limit": 50.0,
                                                                     "client_rate_burst": 5}})))
    async with client.ws_connect("/ws") as ws:
        # 40 messages at ~25/s: never more than the burst ahead of the refill
        for i in range(40):
            await ws.send_str(f'{{"type":"ping","id":{i}}}')
            assert (await recv_type(ws, "pong"))["id"] == i
            await asyncio.sleep(0.04)
        assert not ws.closed


async def test_websocket_ping_frame_flood_closes_1008(aiohttp_client, make_config, tmp_path):
    # Control frames are client messages too: a flood of WebSocket PINGs (each answered with a
    # PONG by the server) must hit the same rate limit as text messages.
    cfg = auth_config(tmp_path, client_rate_limit=5.0, client_rate_burst=10)
    client = await aiohttp_client(create_app(make_config(cfg)))
    async with client.ws_connect("/ws", headers=bearer(TOKEN_ALL), autoping=False) as ws:
        for _ in range(100):
            with contextlib.suppress(ConnectionError):
                await ws.ping(b"x")
        msg = await recv_close(ws)
        assert msg.data == 1008
    await audited(tmp_path, "policy_violation", token="ops", reason="rate_limited")


async def test_websocket_pings_within_limit_get_pongs(aiohttp_client, make_config):
    client = await aiohttp_client(create_app(make_config({"broadcast": {"interval": 5.0}})))
    async with client.ws_connect("/ws", autoping=False) as ws:
        await recv_json(ws)
        for i in range(5):
            await ws.ping(b"p%d" % i)
            msg = await ws.receive(timeout=5)
            assert msg.type is WSMsgType.PONG and msg.data == b"p%d" % i
        assert not ws.closed


async def test_per_ip_connection_cap_gets_429(aiohttp_client, make_config, tmp_path):
    client = await aiohttp_client(create_app(make_config(auth_config(tmp_path, max_connections_per_ip=3))))
    st = client.app[STATE_KEY]
    wss = [await client.ws_connect("/ws", headers=bearer(TOKEN_ALL)) for _ in range(3)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/ws", headers=bearer(TOKEN_ALL))
    assert info.value.status == 429
    await audited(tmp_path, "rejected", reason="per_ip")
    assert st.metrics.rejected.labels("per_ip")._value.get() == 1
    await wss[0].close()
    await wait_for(lambda: st.per_ip["127.0.0.1"] == 2)
    wss[0] = await client.ws_connect("/ws", headers=bearer(TOKEN_ALL))
    for ws in wss:
        await ws.close()
    await wait_for(lambda: not st.per_ip)
