"""/auth/login, /auth/callback and /auth/logout: the authorization code flow with PKCE, state and nonce.

Every refusal answers with a short page saying what happened (401 for a sign-in that does not
verify, 403 for a person in no mapped group, 503 when the provider cannot be reached), logs one
line and writes one audit record; nothing is stored for a refused sign-in.
"""

from __future__ import annotations

import html
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from aiohttp import web
from authlib.common.security import generate_token  # type: ignore[import-untyped]

from hub.client import Client
from hub.context import HUB
from hub.oidc.client import IdpUnavailable, TokenRefused
from hub.oidc.gate import OIDC, Oidc, StoreDown
from hub.oidc.sessions import LOGIN_TTL, digest
from hub.tasks import cancel_and_wait, spawn

log = logging.getLogger(__name__)

LOGIN_COOKIE = "hub_login"
SECURE_LOGIN_COOKIE = "__Host-hub_login"
CALLBACK = "/auth/callback"
LOGGED_OUT = "/auth/logged-out"
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def page(status: int, title: str, text: str, *, links: tuple[tuple[str, str], ...] = ()) -> web.Response:
    """A small self-contained HTML page (no script) with `title` and `text`."""
    more = "".join(f'<p><a href="{html.escape(href)}">{html.escape(label)}</a></p>' for href, label in links)
    body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}</style>'
            f'</head><body><h1>{html.escape(title)}</h1><p id="message">{html.escape(text)}</p>{more}</body></html>')
    return web.Response(status=status, text=body, content_type="text/html",
                        headers={"Cache-Control": "no-store", "Content-Security-Policy": PAGE_CSP})


def redirect(status: int, location: str) -> web.Response:
    """A redirect that is never cached."""
    return web.Response(status=status, headers={"Location": location, "Cache-Control": "no-store"})


def _origin(oidc: Oidc, request: web.Request) -> str:
    return f"{'https' if oidc.https(request) else 'http'}://{request.host}"


def redirect_uri(oidc: Oidc, request: web.Request) -> str:
    """auth.oidc.redirect_url, or this request's origin + /auth/callback."""
    return oidc.cfg.redirect_url or _origin(oidc, request) + CALLBACK


def _login_cookie(oidc: Oidc, request: web.Request) -> str:
    return SECURE_LOGIN_COOKIE if oidc.https(request) else LOGIN_COOKIE


def _unreachable(request: web.Request, exc: Exception, step: str) -> web.Response:
    hub = request.app[HUB]
    log.warning("oidc: %s failed: %s", step, exc)
    hub.audit.event("login_failed", request, remote=hub.client_address(request), reason=f"{step}: {exc}")
    return page(503, "Sign-in service unreachable",
                "The sign-in service (the organisation's identity provider) cannot be reached right now, so "
                "nobody can sign in. Try again in a few minutes; access tokens keep working.",
                links=(("/auth/login", "Try again"),))


def _refused(request: web.Request, status: int, reason: str, text: str) -> web.Response:
    hub = request.app[HUB]
    log.warning("oidc: sign-in refused (%s): %s", status, reason)
    hub.audit.event("login_refused", request, remote=hub.client_address(request), status=status, reason=reason)
    return page(status, "Sign-in refused", text, links=(("/auth/login", "Sign in again"),))


async def login(request: web.Request) -> web.StreamResponse:
    """GET /auth/login: remember state, nonce and PKCE verifier for LOGIN_TTL s, then redirect to the provider."""
    oidc = request.app[OIDC]
    try:
        disc = await oidc.client.discovery(max_age=0)
    except IdpUnavailable as exc:
        return _unreachable(request, exc, "discovery")
    state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
    uri = redirect_uri(oidc, request)
    pending = orjson.dumps({"nonce": nonce, "verifier": verifier, "redirect_uri": uri})
    try:
        await oidc.store.put("login:" + digest(state), pending, LOGIN_TTL)
    except Exception as exc:  # the store's error names no secret
        return _unreachable(request, exc, "session store")
    resp = redirect(302, oidc.client.authorize_url(disc, redirect_uri=uri, state=state, nonce=nonce,
                                                   verifier=verifier))
    # Binds the callback to this browser: a callback URL sent to someone else (login CSRF) has no cookie.
    resp.set_cookie(_login_cookie(oidc, request), state, max_age=int(LOGIN_TTL), path="/", httponly=True,
                    samesite="Lax", secure=oidc.https(request))
    return resp


async def callback(request: web.Request) -> web.StreamResponse:
    """GET /auth/callback: check state, exchange the code (PKCE), verify the ID token, start a session."""
    oidc = request.app[OIDC]
    hub = request.app[HUB]
    q = request.query
    if "error" in q:
        return _refused(request, 401, f"provider error {q['error'][:80]!r}",
                        f"The identity provider did not sign you in ({q['error'][:80]}).")
    state, code = q.get("state", ""), q.get("code", "")
    if not state or not code:
        missing = " and ".join(n for n, v in (("state", state), ("code", code)) if not v)
        return page(400, "Bad sign-in request", f"The sign-in answer lacks the query parameter(s) {missing}.",
                    links=(("/auth/login", "Sign in again"),))
    if "iss" in q and q["iss"] != oidc.cfg.issuer:  # RFC 9207: an answer from another provider (mix-up)
        return _refused(request, 401, "wrong iss in the authorization response",
                        "The sign-in answer came from another identity provider.")
    cookie = request.cookies.get(_login_cookie(oidc, request), "")
    if cookie != state:
        return _refused(request, 401, "wrong state (not the one this browser started)",
                        "This sign-in was not started by this browser, or it took too long. Sign in again.")
    try:
        raw = await oidc.store.take("login:" + digest(state))
    except Exception as exc:
        return _unreachable(request, exc, "session store")
    pending: Any = orjson.loads(raw) if raw is not None else None
    if not isinstance(pending, dict):
        return _refused(request, 401, "wrong state (unknown, used or expired)",
                        "This sign-in was already used or has expired. Sign in again.")
    try:
        tokens = await oidc.client.exchange(code, redirect_uri=pending["redirect_uri"], verifier=pending["verifier"])
        claims = await oidc.client.verify(tokens["id_token"], nonce=pending["nonce"])
    except TokenRefused as exc:
        return _refused(request, 401, str(exc), f"Sign-in refused: {exc}.")
    except IdpUnavailable as exc:
        return _unreachable(request, exc, "code exchange")
    sid, csrf = generate_token(43), generate_token(32)
    try:
        session = await oidc.create(claims, id_token=tokens["id_token"], csrf=csrf, sid=sid)
    except StoreDown as exc:
        return _unreachable(request, exc, "session store")
    if session is None:
        who = str(claims.get("name") or claims.get("email") or claims.get("sub"))[:200]
        log.warning("oidc: sign-in refused (403): %s is in no mapped group", claims.get("sub"))
        hub.audit.event("login_refused", request, remote=hub.client_address(request), status=403,
                        sub=claims.get("sub"), name=claims.get("name"), email=claims.get("email"),
                        reason="no mapped group")
        return page(403, "No access to this hub",
                    f"You signed in as {who}, but none of your groups has access to this hub. "
                    "Ask the hub's operators to map one of your identity provider groups in [auth.oidc.roles].",
                    links=(("/auth/logout", "Sign out"),))
    hub.audit.event("login", request, remote=hub.client_address(request), sub=session.sub, name=session.name,
                    email=session.email, groups=list(session.groups))
    resp = redirect(303, "/")
    oidc.set_cookie(request, resp, sid, session.expires - oidc.clock())
    resp.del_cookie(_login_cookie(oidc, request), path="/")
    return resp


async def logout(request: web.Request) -> web.StreamResponse:
    """GET or POST /auth/logout: end the session everywhere, then the provider's too where it offers that."""
    oidc = request.app[OIDC]
    hub = request.app[HUB]
    try:
        ended = await oidc.end(request)
    except StoreDown as exc:
        return _unreachable(request, exc, "session store")
    target: str | None = None
    if ended is not None:
        hub.audit.event("logout", request, remote=hub.client_address(request), sub=ended.sub, name=ended.name,
                        email=ended.email)
        try:
            disc = await oidc.client.discovery()
            back = (oidc.cfg.redirect_url.rsplit(CALLBACK, 1)[0] if oidc.cfg.redirect_url.endswith(CALLBACK)
                    else _origin(oidc, request)) + LOGGED_OUT
            target = oidc.client.end_session_url(disc, id_token_hint=ended.id_token, post_logout=back)
        except IdpUnavailable as exc:  # the hub's session is over either way
            log.warning("oidc: logout at the identity provider skipped: %s", exc)
    resp = redirect(303, target) if target else logged_out_page()
    oidc.clear_cookie(request, resp)
    return resp


def logged_out_page() -> web.Response:
    """The page after logout."""
    return page(200, "Signed out", "You are signed out of the hub.", links=(("/auth/login", "Sign in again"),))


async def logged_out(request: web.Request) -> web.StreamResponse:
    """GET /auth/logged-out: where the provider sends the browser back after its logout."""
    return logged_out_page()


def add_routes(app: web.Application) -> None:
    """Route /auth/login, /auth/callback, /auth/logout (GET and POST) and /auth/logged-out."""
    app.router.add_get("/auth/login", login)
    app.router.add_get(CALLBACK, callback)
    app.router.add_get("/auth/logout", logout)
    app.router.add_post("/auth/logout", logout)
    app.router.add_get(LOGGED_OUT, logged_out)


def install(app: web.Application, oidc: Oidc, *, interval: float, evict: Callable[[Client], None]) -> None:
    """Route /auth/*, keep `oidc` under its AppKey, sweep ended sessions' sockets every `interval` s."""
    app[OIDC] = oidc
    add_routes(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        task = spawn(oidc.run_sweeps(interval, evict), name="hub-oidc-sweep")
        yield
        await cancel_and_wait([task])
        await oidc.client.close()
        await oidc.store.close()

    app.cleanup_ctx.append(lifecycle)
