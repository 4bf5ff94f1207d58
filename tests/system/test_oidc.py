"""Sign-in through a real OpenID provider (oidc-provider on Node, its development login screen):
Chromium signs in, the session is the page's credential (WebSocket, /api/me, silences with
X-Hub-CSRF), Alertmanager records the person, two replicas on Redis share sessions and logout,
forged sign-ins are refused, and with the provider stopped sign-in says so while tokens still work.

One stack per module: a provider, Redis, Alertmanager and two hub replicas: A (tokens and
sign-in) and B (sign-in only). Browser cookies ignore ports, so one browser context signed in
on A sends the same cookie to B, as behind one load balancer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from hub.auth import hash_token
from hub.config import build_config, secrets_of
from hub.oidc.client import OidcClient, TokenRefused
from tests.support import browser, free_port
from tests.support.alertmanager import AlertmanagerServer, start_alertmanager
from tests.support.browser import wait_for
from tests.support.hubproc import HubProcess
from tests.support.oidc import CLIENT_ID, CLIENT_SECRET, OidcProvider, start_provider
from tests.support.redis import RedisServer, start_redis

chromium = browser.chromium

READER = "wall-token-3c9d0e5f7a1b"
INTERVAL = 0.5
WAIT = 30.0
ROLES = {"oncall": {"actions": ["silence"]}, "sysviewers": {"topics": ["system"]}}


class Stack:
    """Provider, Redis, Alertmanager, hub A (tokens + sign-in) and hub B (sign-in only)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ports = (free_port(), free_port())
        self.provider: OidcProvider | None = None
        self.redis: RedisServer | None = None
        self.am: AlertmanagerServer | None = None
        self.hubs: list[HubProcess] = []
        self.audit_path = tmp / "audit-a.jsonl"

    def start(self) -> None:
        bases = [f"http://127.0.0.1:{p}" for p in self.ports]
        self.provider = start_provider(self.tmp / "idp", redirect_uris=[b + "/auth/callback" for b in bases],
                                       post_logout_uris=[b + "/auth/logged-out" for b in bases])
        self.redis = start_redis(self.tmp / "redis")
        self.am = start_alertmanager(self.tmp / "am")
        common = {
            "broadcast": {"interval": INTERVAL, "heartbeat": 30.0},
            # Every test here comes from 127.0.0.1 and many fail on purpose (forged sign-ins, 401s):
            # the per-address lockout (tested elsewhere) must not turn them into 429s for the next test.
            "server": {"auth_failures_per_minute": 0},
            "cluster": {"redis_url": self.redis.url},
            "sources": {"prometheus": {"enabled": False}, "business": {"enabled": False},
                        "health": {"enabled": False}, "alertmanager": {"enabled": True, "url": self.am.url}},
        }
        oidc = {"issuer": self.provider.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                "roles": ROLES}
        a = {**common, "audit": {"path": str(self.audit_path)},
             "auth": {"tokens": [{"name": "wall", "hash": hash_token(READER)}], "oidc": oidc}}
        b = {**common, "audit": {"path": str(self.tmp / "audit-b.jsonl")}, "auth": {"oidc": oidc}}
        self.hubs = [HubProcess(a, self.tmp, port=self.ports[0]).start(wait=False),
                     HubProcess(b, self.tmp, port=self.ports[1], args=("--role", "edge")).start(wait=False)]
        for hub in self.hubs:
            hub.wait_healthy(path="/ready", timeout=WAIT)

    def stop(self) -> None:
        for hub in self.hubs:
            hub.stop()
        for part in (self.am, self.redis, self.provider):
            if part is not None:
                part.stop()

    @property
    def a(self) -> str:
        return self.hubs[0].url

    @property
    def b(self) -> str:
        return self.hubs[1].url

    def audit(self, event: str) -> list[dict[str, Any]]:
        lines = self.audit_path.read_text().splitlines() if self.audit_path.exists() else []
        return [r for r in map(json.loads, lines) if r["event"] == event]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("oidc"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture
def context(chromium: Any) -> Iterator[Any]:
    ctx = chromium.new_context()
    try:
        yield ctx
    finally:
        ctx.close()


def sign_in(ctx: Any, base: str, login: str) -> Any:
    """Open base/auth/login in `ctx`, sign in at the provider's login screen as `login`; return the page."""
    page = ctx.new_page()
    page.goto(base + "/auth/login", wait_until="domcontentloaded")
    assert page.url.startswith("http://127.0.0.1:") and "/interaction/" in page.url, page.url  # at the provider
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any password")
    page.click("button[type=submit]")
    page.click("button:has-text('Continue')")  # the provider's consent screen
    page.wait_for_url(lambda url: url.startswith(base + "/"), wait_until="domcontentloaded")
    return page


def cookie(ctx: Any) -> str:
    """The hub_session cookie of `ctx`, as a Cookie header."""
    found = [c for c in ctx.cookies() if c["name"] == "hub_session"]
    assert len(found) == 1, ctx.cookies()
    return f"hub_session={found[0]['value']}"


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of a GET that does not follow redirects."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def off_loop(coro: Any) -> Any:
    """Run `coro` to its end in a thread of its own (Playwright's sync API holds this thread's loop)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the test's thread
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=WAIT + 30)
    if "error" in result:
        raise result["error"]
    return result["value"]


async def ws_updates(url: str, headers: dict[str, str], n: int) -> list[dict[str, Any]]:
    """The first `n` metrics_update messages of a WebSocket to `url`/ws."""
    out: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(
            url.replace("http", "ws", 1) + "/ws", headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
        while len(out) < n:
            msg = await ws.receive(timeout=WAIT)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            data = json.loads(msg.data)
            if data.get("type") == "metrics_update":
                out.append(data)
    return out


def test_chromium_signs_in_as_oncall_and_the_page_goes_live_named(stack: Stack, context: Any) -> None:
    page = sign_in(context, stack.a, "alice")
    wait_for(lambda: page.evaluate("() => window.hubDebug && hubDebug.conn === 'live'"), timeout=WAIT,
             what="the page live on the session's WebSocket")
    me = page.evaluate("async () => (await fetch('api/me')).json()")
    assert {k: me[k] for k in ("name", "email", "groups", "actions")} == {
        "name": "Alice Oncall", "email": "alice@example.org", "groups": ["oncall"], "actions": ["silence"]}
    assert len(me["csrf"]) >= 32 and set(me) == {"name", "email", "groups", "topics", "actions", "csrf"}
    wait_for(lambda: page.evaluate("() => hubDebug.me && hubDebug.me.csrf") == me["csrf"], timeout=10,
             what="the page holding the session's csrf for its changes")
    session = next(c for c in context.cookies() if c["name"] == "hub_session")
    assert session["httpOnly"] and session["sameSite"] == "Lax" and not session["secure"]
    login = [r for r in stack.audit("login") if r.get("sub") == "alice"]
    assert login and login[-1]["email"] == "alice@example.org"
    wait_for(lambda: any(r.get("sub") == "alice" and r.get("name") == "Alice Oncall" for r in stack.audit("connect")),
             timeout=10, what="the WebSocket connect audited with the person")


def test_the_page_names_the_signed_in_person_and_signs_out(stack: Stack, context: Any) -> None:
    page = sign_in(context, stack.a, "alice")
    wait_for(lambda: page.evaluate("() => !document.getElementById('me').hidden"), timeout=WAIT,
             what="the signed-in bar")
    assert page.text_content("#me-name") == "Alice Oncall"
    assert context.request.get(stack.a + "/api/me").status == 200
    page.click("#me-out")
    wait_for(lambda: "/auth/" in page.url or "/session/end" in page.url or stack.a not in page.url, timeout=WAIT,
             what="the page leaving for the sign-out")
    assert context.request.get(stack.a + "/api/me").status == 401   # the hub's session is over
    assert [r for r in stack.audit("logout") if r.get("sub") == "alice"]


def test_a_session_ended_with_its_id_token_signs_in_again_and_the_page_comes_back_live(
        stack: Stack, context: Any) -> None:
    assert stack.provider is not None
    stack.provider.id_token_ttl(8)   # the session may not outlive it
    try:
        page = sign_in(context, stack.a, "alice")
    finally:
        stack.provider.id_token_ttl(3600)
    wait_for(lambda: page.evaluate("() => hubDebug.conn === 'live' && !!hubDebug.me"), timeout=WAIT,
             what="the page live on the short session")
    logins = len([r for r in stack.audit("login") if r.get("sub") == "alice"])
    # The hub ends the session at the ID token's expiry and closes the socket (1008); the page goes
    # through sign-in again, which the provider's own session answers without a form.
    wait_for(lambda: len([r for r in stack.audit("login") if r.get("sub") == "alice"]) > logins, timeout=WAIT,
             what="a second sign-in by the page itself")
    def live_again() -> bool:
        try:
            return page.url.startswith(stack.a + "/") and "/auth/" not in page.url and bool(
                page.evaluate("() => window.hubDebug && hubDebug.conn === 'live' && !!hubDebug.me"))
        except Exception:
            return False

    wait_for(live_again, timeout=WAIT, what="the page live again")
    assert context.request.get(stack.a + "/api/me").json()["name"] == "Alice Oncall"


def test_a_signed_in_silence_names_the_person_and_needs_the_csrf_header(stack: Stack, context: Any) -> None:
    sign_in(context, stack.a, "alice")
    api = context.request
    body = {"matchers": [{"name": "alertname", "value": "OidcTestAlert", "isRegex": False}], "duration_s": 300,
            "comment": "maintenance window"}
    refused = api.post(stack.a + "/api/silences", data=body)
    assert refused.status == 403
    assert refused.json()["error"] == ("forbidden: missing or wrong X-Hub-CSRF header (a signed-in page sends "
                                       "/api/me's csrf with every change)")
    csrf = api.get(stack.a + "/api/me").json()["csrf"]
    made = api.post(stack.a + "/api/silences", data=body, headers={"X-Hub-CSRF": csrf})
    assert made.status == 201, made.text()
    sid = made.json()["silenceID"]
    with urllib.request.urlopen(f"{stack.am.url}/api/v2/silence/{sid}", timeout=10) as resp:  # type: ignore[union-attr]
        silence = json.loads(resp.read())
    assert silence["createdBy"] == "Alice Oncall <alice@example.org>"
    ended = api.delete(f"{stack.a}/api/silences/{sid}", headers={"X-Hub-CSRF": csrf})
    assert ended.status == 200


def test_a_group_limited_to_system_sees_only_system_data_and_no_group_is_refused(stack: Stack, context: Any) -> None:
    sign_in(context, stack.a, "sam")
    me = context.request.get(stack.a + "/api/me").json()
    assert me["topics"] == ["system"] and me["actions"] == [] and me["groups"] == ["sysviewers", "unmapped"]
    updates = off_loop(ws_updates(stack.a, {"Cookie": cookie(context), "Origin": stack.a}, 2))
    assert all(set(u["data"]) <= {"system"} for u in updates), [sorted(u["data"]) for u in updates]

    other = context.browser.new_context()
    try:
        page = sign_in(other, stack.a, "nora")
        assert page.locator("h1").text_content() == "No access to this hub"
        assert "none of your groups has access to this hub" in page.locator("#message").text_content()
        assert not [c for c in other.cookies() if c["name"] == "hub_session"]
    finally:
        other.close()


def test_page_redirects_to_sign_in_when_it_is_the_only_credential(stack: Stack, context: Any) -> None:
    status, headers, _ = get(stack.b + "/")
    assert (status, headers["Location"]) == (302, "auth/login")
    page = context.new_page()  # tokens too: the page loads and offers "Sign in" beside the token button
    page.goto(stack.a + "/")
    page.locator("#auth-signin").wait_for(state="visible", timeout=WAIT * 1000)
    assert page.locator("#auth-signin").get_attribute("href") == "auth/login"
    assert page.locator("#auth-btn").is_visible()


def test_a_cookie_upgrade_from_a_foreign_origin_is_refused(stack: Stack, context: Any) -> None:
    sign_in(context, stack.a, "alice")
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        off_loop(ws_updates(stack.a, {"Cookie": cookie(context), "Origin": "http://evil.example"}, 1))
    assert caught.value.status == 403


def test_forged_callbacks_are_refused_with_401(stack: Stack, context: Any) -> None:
    # Wrong state: a callback this browser never started.
    status, _, body = get(stack.a + "/auth/callback?state=forged&code=forged")
    assert status == 401 and "not started by this browser" in body
    # A real sign-in's callback, captured and replayed: its state is used up.
    seen: list[str] = []
    context.on("request", lambda r: seen.append(r.url) if "/auth/callback?" in r.url else None)
    sign_in(context, stack.a, "alice")
    callback = seen[-1]
    state = callback.split("state=", 1)[1].split("&", 1)[0]
    status, _, body = get(callback, {"Cookie": f"hub_login={state}"})  # the login cookie too
    assert status == 401 and "already used or has expired" in body
    status, _, body = get(callback)  # without it (the hub removed it after the sign-in)
    assert status == 401 and "not started by this browser" in body
    # Its code under a fresh state of this browser: the provider refuses the used code.
    start = context.request.get(stack.a + "/auth/login", max_redirects=0)
    state = start.headers["location"].split("state=", 1)[1].split("&", 1)[0]
    code = callback.split("code=", 1)[1].split("&", 1)[0]
    again = context.request.get(f"{stack.a}/auth/callback?code={code}&state={state}", max_redirects=0)
    assert again.status == 401 and "the identity provider refused the code: invalid_grant" in again.text()
    assert len([r for r in stack.audit("login_refused") if r["status"] == 401]) >= 3


#: how the provider's token endpoint forges the ID token -> the reason the hub's callback gives
FORGED = {
    "audience": "ID token claim 'aud' is wrong",
    "issuer": "ID token claim 'iss' is wrong",
    "nonce": "ID token claim 'nonce' is wrong",
    "expired": "ID token has expired",
    "kid": "ID token signed with unknown key kid='stranger'",
    "none": "ID token algorithm 'none' is not allowed",
    "altered": "ID token signature does not verify",
}


@pytest.mark.parametrize("mode", sorted(FORGED))
def test_a_forged_id_token_through_the_callback_is_refused_and_signs_nobody_in(
        stack: Stack, context: Any, mode: str) -> None:
    assert stack.provider is not None
    refused_before = len(stack.audit("login_refused"))
    stack.provider.tamper(mode)
    try:
        page = sign_in(context, stack.a, "alice")
    finally:
        stack.provider.tamper("")
    assert "/auth/callback?" in page.url
    body = page.text_content("body") or ""
    assert "Sign-in refused: " + FORGED[mode] in body, body
    assert not [c for c in context.cookies() if c["name"].endswith("hub_session")]
    assert context.request.get(stack.a + "/api/me").status == 401
    new = stack.audit("login_refused")[refused_before:]
    assert [(r["status"], r["reason"].startswith(FORGED[mode])) for r in new] == [(401, True)], new
    assert not [r for r in stack.audit("login") if r.get("sub") == "mallory"]


def test_forged_id_tokens_are_refused_against_the_providers_keys(stack: Stack) -> None:
    assert stack.provider is not None
    cfg = build_config({"auth": {"oidc": {"issuer": stack.provider.issuer, "client_id": CLIENT_ID,
                                          "client_secret": CLIENT_SECRET, "roles": ROLES}}}, environ={})
    now = int(time.time())
    good = {"iss": stack.provider.issuer, "aud": CLIENT_ID, "sub": "alice", "nonce": "n1", "iat": now, "exp": now + 300}
    own = stack.provider.key  # the provider's own signing key: only the claim is wrong
    stranger = RSAKey.generate_key(2048, parameters={"kid": "stranger"})

    def signed(claims: dict[str, Any], key: Any = own, alg: str = "RS256") -> str:
        return jwt.encode({"alg": alg, "kid": key.kid}, claims, key)

    alg_none = signed(good).rsplit(".", 2)
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","kid":"provider-key-1"}').rstrip(b"=").decode()
    cases = {
        "wrong audience": (signed({**good, "aud": "someone-else"}), "ID token claim 'aud' is wrong"),
        "expired": (signed({**good, "iat": now - 7200, "exp": now - 3600}), "ID token has expired"),
        "unknown kid": (signed(good, stranger), "ID token signed with unknown key kid='stranger'"),
        "alg none": (f"{none_header}.{alg_none[1]}.", "ID token algorithm 'none' is not allowed"),
        "wrong nonce": (signed({**good, "nonce": "other"}), "ID token claim 'nonce' is wrong"),
    }

    async def run() -> dict[str, str]:
        client = OidcClient(cfg.auth.oidc, secrets=secrets_of(cfg))
        out: dict[str, str] = {}
        try:
            assert (await client.verify(signed(good), nonce="n1"))["sub"] == "alice"  # the control
            for name, (token, _) in cases.items():
                try:
                    await client.verify(token, nonce="n1")
                    out[name] = "accepted"
                except TokenRefused as exc:
                    out[name] = str(exc)
        finally:
            await client.close()
        return out

    got = off_loop(run())
    for name, (_, expected) in cases.items():
        assert got[name].startswith(expected), (name, got[name])


def test_logout_on_one_replica_closes_the_other_replicas_socket_with_1008(stack: Stack, context: Any) -> None:
    sign_in(context, stack.a, "alice")
    headers = {"Cookie": cookie(context), "Origin": stack.b}
    opened, logged_out = threading.Event(), threading.Event()

    async def run() -> tuple[int | None, float]:
        async with aiohttp.ClientSession() as session, session.ws_connect(stack.b.replace("http", "ws") + "/ws",
                                                                          headers=headers) as ws:
            first = await ws.receive(timeout=WAIT)
            assert first.type == aiohttp.WSMsgType.TEXT
            opened.set()
            await asyncio.to_thread(logged_out.wait, WAIT)
            t0 = time.monotonic()
            while True:
                msg = await ws.receive(timeout=WAIT)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    return ws.close_code, time.monotonic() - t0

    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(closed=asyncio.run(run())), daemon=True)
    thread.start()
    assert opened.wait(WAIT), "the WebSocket on replica B did not open"
    out = context.request.get(stack.a + "/auth/logout", max_redirects=0)
    assert out.status == 303, out.text()
    logged_out.set()
    thread.join(WAIT + 10)
    code, took = result["closed"]
    assert code == 1008 and took < 10 * INTERVAL + 5, (code, took)  # one interval, generously on a loaded box
    status, _, body = get(stack.b + "/api/me", {"Cookie": headers["Cookie"]})
    assert status == 401 and json.loads(body)["error"] == "unauthorized: session ended or unknown; sign in again"


def test_with_the_provider_stopped_sign_in_says_so_and_a_token_client_keeps_receiving(stack: Stack) -> None:
    assert stack.provider is not None
    stack.provider.stop()
    try:
        status, _, body = get(stack.a + "/auth/login")
        assert status == 503 and "Sign-in service unreachable" in body and "access tokens keep working" in body
        updates = off_loop(ws_updates(stack.a, {"Authorization": f"Bearer {READER}"}, 2))
        assert updates[1]["seq"] > updates[0]["seq"]
    finally:
        stack.provider.start()  # same port and key: the other tests of the module sign in again


def test_doctor_checks_discovery_jwks_and_the_redirect_url(stack: Stack) -> None:
    import io

    from hub.doctor import run_doctor

    assert stack.provider is not None
    oidc = {"issuer": stack.provider.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "roles": ROLES}
    out = io.StringIO()
    cfg = build_config({"auth": {"oidc": oidc}, "sources": {"business": {"enabled": False}}}, environ={})
    assert off_loop(run_doctor(cfg, out=out)) == 0, out.getvalue()
    text = out.getvalue()
    assert "  discovery: ok (authorization " in text
    assert f"JWKS: 1 signing key(s) at {stack.provider.issuer}/jwks" in text
    assert f"logout at the provider: {stack.provider.issuer}/session/end" in text
    wrong = build_config({"auth": {"oidc": {**oidc, "redirect_url": "https://hub.example.org/callback"}},
                          "sources": {"business": {"enabled": False}}}, environ={})
    out = io.StringIO()
    assert off_loop(run_doctor(wrong, out=out)) == 1
    assert "warning: the redirect URL does not end in /auth/callback" in out.getvalue()
    closed = build_config({"auth": {"oidc": {**oidc, "issuer": f"http://127.0.0.1:{free_port()}"}},
                           "sources": {"business": {"enabled": False}}}, environ={})
    out = io.StringIO()
    assert off_loop(run_doctor(closed, out=out)) == 1
    assert "  discovery: NO - discovery: the identity provider is unreachable" in out.getvalue()
    assert CLIENT_SECRET not in out.getvalue()
