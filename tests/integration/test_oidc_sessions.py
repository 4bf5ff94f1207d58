"""Sessions as the credential, in-process: /api/me, X-Hub-CSRF, a mute signed by the person, a WebSocket
closed with 1008 when its session is logged out or expires, and the identity provider unreachable
(nothing listens on the issuer's port: the hub must say so, and tokens keep working).

Sessions are stored through the hub's own `Oidc.create` (what the callback does once the ID token
verified); the sign-in through a real provider is tests/system/test_oidc.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from hub.app import create_app
from hub.auth import hash_token
from hub.config import Config
from hub.oidc.gate import OIDC
from tests.support import free_port
from tests.support.aio import recv_type, wait_for
from tests.support.http_targets import Target, serve
from tests.support.timing import WAIT

READER = "read-token-0123456789"
SECRET = "client-secret-marker-8d1f0c"
INTERVAL = 0.2


@pytest.fixture
def hub_config(make_config: Callable[..., Config], tmp_path: Path) -> Callable[..., Config]:
    def make(checks: dict[str, str] | None = None, proxies: tuple[str, ...] = ()) -> Config:
        health = {"enabled": bool(checks), "checks": checks or {"x": "http://127.0.0.1:9/"}, "timeout": 1.0}
        return make_config({
            "server": {"trusted_proxies": list(proxies)},
            "broadcast": {"interval": INTERVAL},
            "audit": {"path": str(tmp_path / "audit.jsonl")},
            "auth": {"tokens": [{"name": "wall", "hash": hash_token(READER)}],
                     "oidc": {"issuer": f"http://127.0.0.1:{free_port()}", "client_id": "hub", "client_secret": SECRET,
                              "roles": {"oncall": {"actions": ["silence"]}, "sys": {"topics": ["system"]}}}},
            "sources": {"health": health}})

    return make


async def signed_in(client: Any, sid: str, *, groups: list[str], lifetime: float = 600.0) -> dict[str, str]:
    """Store a session for Ann (as the callback would) and return the request headers that carry it."""
    oidc = client.app[OIDC]
    claims = {"sub": "u-ann", "name": "Ann Lee", "email": "ann@example.org", "groups": groups,
              "exp": time.time() + lifetime}
    assert await oidc.create(claims, id_token="", csrf="c" * 32, sid=sid) is not None
    return {"Cookie": f"hub_session={sid}", "Origin": str(client.make_url("")).rstrip("/")}


def audit(tmp_path: Path, event: str) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    return [r for r in map(orjson.loads, path.read_bytes().splitlines()) if r["event"] == event] \
        if path.exists() else []


async def test_a_session_is_the_credential_and_changes_need_the_csrf_header(
        aiohttp_client: Any, hub_config: Callable[..., Config], tmp_path: Path) -> None:
    async with serve(Target().app) as url:
        client = await aiohttp_client(create_app(hub_config({"backend": f"{url}/toggle"})))
        ann = await signed_in(client, "sid-ann-1", groups=["oncall", "unmapped"])
        me = await client.get("/api/me", headers=ann)
        assert me.status == 200 and await me.json() == {
            "name": "Ann Lee", "email": "ann@example.org", "groups": ["oncall", "unmapped"],
            "topics": ["system", "application", "business", "alerts", "health"], "actions": ["silence"],
            "csrf": "c" * 32}
        body = {"check": "backend", "duration_s": 600, "comment": "deploy"}
        refused = await client.post("/api/mutes", headers=ann, json=body)
        assert refused.status == 403 and (await refused.json())["error"] == (
            "forbidden: missing or wrong X-Hub-CSRF header (a signed-in page sends /api/me's csrf with every change)")
        wrong = await client.post("/api/mutes", headers={**ann, "X-Hub-CSRF": "d" * 32}, json=body)
        assert wrong.status == 403
        made = await client.post("/api/mutes", headers={**ann, "X-Hub-CSRF": "c" * 32}, json=body)
        assert made.status == 201
        await wait_for(lambda: audit(tmp_path, "mute_created"), timeout=WAIT, what="the mute's audit line")
        (line,) = audit(tmp_path, "mute_created")
        assert (line["name"], line["sub"], line["email"]) == ("Ann Lee", "u-ann", "ann@example.org")
        async with client.ws_connect("/ws", headers={"Authorization": f"Bearer {READER}"}) as ws:
            async def mutes() -> list[dict[str, Any]]:
                return (await recv_type(ws, "metrics_update", timeout=WAIT))["data"]["health"]["mutes"]

            (mute,) = await wait_for(mutes, timeout=WAIT, what="the mute in data.health.mutes")
            assert mute["createdBy"] == "Ann Lee <ann@example.org>"
        refused_lines = audit(tmp_path, "action_refused")
        assert refused_lines and refused_lines[0]["sub"] == "u-ann" and "X-Hub-CSRF" in refused_lines[0]["reason"]


async def test_logout_and_expiry_close_the_sessions_socket_with_1008(
        aiohttp_client: Any, hub_config: Callable[..., Config], tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(hub_config()))
    for how in ("logout", "expiry"):
        ann = await signed_in(client, f"sid-{how}", groups=["sys"], lifetime=600.0 if how == "logout" else 1.0)
        async with client.ws_connect("/ws", headers=ann) as ws:
            msg = await recv_type(ws, "metrics_update", timeout=WAIT)
            assert set(msg["data"]) <= {"system"}
            t0 = time.monotonic()
            if how == "logout":
                out = await client.get("/auth/logout", headers=ann, allow_redirects=False)
                # The provider cannot be reached: the hub's session ends all the same, and the page says so.
                assert out.status == 200 and "You are signed out of the hub." in await out.text()
                assert "hub_session=\"\"" in out.headers.getall("Set-Cookie")[0]
            while (m := await ws.receive(timeout=WAIT)).type == aiohttp.WSMsgType.TEXT:
                pass
            assert m.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1008, (how, m)
            assert time.monotonic() - t0 < 1.0 + 10 * INTERVAL + 2, how
        me = await client.get("/api/me", headers=ann)
        assert me.status == 401 and await me.json() == {
            "error": "unauthorized: session ended or unknown; sign in again", "signIn": "auth/login", "tokens": True}
    def disconnects() -> list[int]:
        return [r["code"] for r in audit(tmp_path, "disconnect") if r.get("sub") == "u-ann"]

    await wait_for(lambda: len(disconnects()) == 2, timeout=WAIT, what="both disconnects audited")
    assert disconnects() == [1008, 1008]


async def test_a_cookie_upgrade_from_a_foreign_origin_is_refused(
        aiohttp_client: Any, hub_config: Callable[..., Config]) -> None:
    client = await aiohttp_client(create_app(hub_config()))
    ann = await signed_in(client, "sid-origin", groups=["oncall"])
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await client.ws_connect("/ws", headers={**ann, "Origin": "https://evil.example"})
    assert caught.value.status == 403


async def test_an_unreachable_provider_gets_a_clear_page_and_tokens_keep_working(
        aiohttp_client: Any, hub_config: Callable[..., Config], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = await aiohttp_client(create_app(hub_config()))
    resp = await client.get("/auth/login", allow_redirects=False)
    text = await resp.text()
    assert resp.status == 503 and "<h1>Sign-in service unreachable</h1>" in text
    assert "access tokens keep working" in text
    assert "oidc: discovery failed: discovery: the identity provider is unreachable" in caplog.text
    failed = await wait_for(lambda: audit(tmp_path, "login_failed"), timeout=WAIT, what="the audit line")
    assert [r["reason"][:9] for r in failed] == ["discovery"]
    anonymous = await client.get("/api/metrics/snapshot")
    assert anonymous.status == 401 and (await anonymous.json())["signIn"] == "auth/login"
    async with client.ws_connect("/ws", headers={"Authorization": f"Bearer {READER}"}) as ws:
        assert (await recv_type(ws, "metrics_update", timeout=WAIT))["seq"] >= 1
    forged = await client.get("/api/me", headers={"Cookie": "hub_session=forged"})
    assert forged.status == 401
    assert SECRET not in caplog.text and SECRET not in (tmp_path / "audit.jsonl").read_text()


async def test_behind_a_trusted_tls_proxy_the_cookie_is_host_prefixed_and_the_origin_is_https(
        aiohttp_client: Any, hub_config: Callable[..., Config]) -> None:
    client = await aiohttp_client(create_app(hub_config(proxies=("127.0.0.0/8",))))
    ann = await signed_in(client, "sid-tls", groups=["oncall"])
    host = client.make_url("").host + f":{client.make_url('').port}"
    tls = {"X-Forwarded-Proto": "https"}
    plain = await client.get("/api/me", headers={**tls, "Cookie": ann["Cookie"]})
    assert plain.status == 401  # over https only __Host-hub_session counts
    me = await client.get("/api/me", headers={**tls, "Cookie": "__Host-hub_session=sid-tls"})
    assert me.status == 200 and (await me.json())["name"] == "Ann Lee"
    out = await client.get("/auth/logout", headers={**tls, "Cookie": "__Host-hub_session=sid-tls"})
    cleared = "; ".join(out.headers.getall("Set-Cookie"))
    assert "__Host-hub_session=" in cleared and "Secure" in cleared and "HttpOnly" in cleared
    ann = await signed_in(client, "sid-tls-2", groups=["oncall"])
    async with client.ws_connect("/ws", headers={**tls, "Cookie": "__Host-hub_session=sid-tls-2",
                                                 "Origin": f"https://{host}"}) as ws:
        assert (await recv_type(ws, "metrics_update", timeout=WAIT))["seq"] >= 1
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:  # http is not the origin of an https hub
        await client.ws_connect("/ws", headers={**tls, "Cookie": "__Host-hub_session=sid-tls-2",
                                                "Origin": f"http://{host}"})
    assert caught.value.status == 403
