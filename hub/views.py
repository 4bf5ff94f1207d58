"""HTTP handlers: health, readiness, the REST API and /metrics."""

from __future__ import annotations

import collections
import hmac
import logging
import math
from collections.abc import Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hub.auth import AuthError, Principal, presented_token
from hub.bodies import send_json
from hub.context import HUB
from hub.errors import JSONHTTPError, int_param, json_error, json_response
from hub.oidc.gate import CSRF_HEADER, OIDC, StoreDown
from hub.sources.base import SourceError
from hub.vocab import TIME_RANGES, TOPICS

log = logging.getLogger(__name__)

#: uPlot sets styles only through the CSSOM (el.style.x = ...), which CSP does not restrict, so
#: nothing beyond 'self' is needed (the dashboard tests serve the page under exactly that).
CSP = "default-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: CSP, nosniff and no-referrer on every HTTP response, errors included.

    A signal rather than a middleware: a middleware's frame would stay alive for the whole
    life of every WebSocket connection, and memory per connection is what fan-out is judged on.
    """
    if isinstance(response, web.WebSocketResponse):
        return  # a 101 has no document to protect; its headers would be kept per connection
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")


async def retry_after(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every 503 says when to try again (the broadcast interval, rounded up).

    One place for every 503 (capacity, not ready, no snapshot yet, busy, business unavailable, the
    page's missing files), so no handler can forget it.
    """
    if response.status == 503 and "Retry-After" not in response.headers:
        response.headers["Retry-After"] = str(max(1, math.ceil(request.app[HUB].config.broadcast.interval)))


def auth_on(request: web.Request) -> bool:
    """True when a credential is needed: tokens or [auth.oidc] are configured."""
    return request.app[HUB].auth.enabled or OIDC in request.app


def _unauthorized(request: web.Request, reason: str) -> JSONHTTPError:
    extra: dict[str, object] = {}
    if OIDC in request.app:  # the page offers "Sign in" (and goes there itself when no token would do)
        extra = {"signIn": "auth/login", "tokens": request.app[HUB].auth.enabled}
    return JSONHTTPError(401, f"unauthorized: {reason}", headers={"WWW-Authenticate": 'Bearer realm="hub"'}, **extra)


async def principal(request: web.Request, *, ws: bool | None = None) -> Principal:
    """Authenticate `request` (a bearer token, else the session cookie), or raise 401 (audited), 429
    while its address is locked out, or 503 when the session store cannot answer.

    Refusals count in hub_ws_rejected_total for a WebSocket upgrade (`ws`; None: judged by the
    request's `Upgrade` header) and in hub_http_rejected_total otherwise.
    """
    hub = request.app[HUB]
    oidc = request.app.get(OIDC)
    if not hub.auth.enabled and oidc is None:
        return hub.auth.check(request)
    if ws is None:
        ws = request.headers.get("Upgrade", "").lower() == "websocket"
    rejected = hub.metrics.rejected if ws else hub.metrics.http_rejected
    ip = hub.client_address(request)
    failures = hub.auth_failures
    if failures.blocked(ip):
        rejected.labels("auth_rate_limited").inc()
        raise JSONHTTPError(429, "too many failed authentications from this address; try again later",
                            headers={"Retry-After": str(failures.retry_after(ip))})
    try:
        if oidc is not None and presented_token(request) is None and (oidc.session_id(request) or not hub.auth.enabled):
            return await oidc.principal(request)
        return hub.auth.check(request)
    except StoreDown as exc:
        raise JSONHTTPError(503, f"cannot check the session: {exc}") from None
    except AuthError as exc:
        if failures.record(ip) == 1:  # repeats are reported as one line per window (auth.AuthFailures)
            hub.audit.event("auth_failure", request, remote=ip, path=request.path, reason=str(exc))
        rejected.labels("unauthorized").inc()
        raise _unauthorized(request, str(exc)) from None


async def actor(request: web.Request, action: str, topic: str) -> Principal:
    """The principal allowed to take `action` on `topic`'s data, or 401/403 (refusals audited).

    Open mode (no tokens) cannot act: with nobody named, an action could be neither authorised nor
    attributed, and anyone who can reach the port could silence the pager (docs/security.md). A
    person (session cookie) also needs the X-Hub-CSRF header equal to /api/me's `csrf`.
    """
    hub = request.app[HUB]
    who = await principal(request, ws=False)
    kind = "person" if who.person else "token"
    if not auth_on(request):
        reason = "the hub runs without tokens (open mode), which cannot act; configure [auth] tokens with actions"
    elif who.person and not hmac.compare_digest(request.headers.get(CSRF_HEADER, "").encode(), who.csrf.encode()):
        reason = f"missing or wrong {CSRF_HEADER} header (a signed-in page sends /api/me's csrf with every change)"
    elif action not in who.actions:
        reason = f"{kind} {who.name!r} may not {action} (its actions: {list(who.actions)})"
    elif not who.may_read(topic):
        reason = f"{kind} {who.name!r} may not read topic {topic!r}, which {action} needs"
    else:
        return who
    hub.metrics.http_rejected.labels("forbidden").inc()
    hub.audit.event("action_refused", request, remote=hub.client_address(request), path=request.path,
                    name=who.name, **who.person_fields(), action=action, reason=reason)
    raise JSONHTTPError(403, f"forbidden: {reason}")


async def me(request: web.Request) -> web.Response:
    """GET /api/me: {"name", "topics", "actions"} of the caller's token, or {"name", "email", "groups",
    "topics", "actions", "csrf"} of a signed-in person; 401 without a credential."""
    if not auth_on(request):
        raise JSONHTTPError(401, "unauthorized: the hub runs without tokens (open mode); there is no credential",
                            headers={"WWW-Authenticate": 'Bearer realm="hub"'})
    who = await principal(request, ws=False)
    topics = list(who.topics) if who.topics is not None else list(TOPICS)
    if who.person:
        return json_response({"name": who.name, "email": who.email, "groups": list(who.groups), "topics": topics,
                              "actions": list(who.actions), "csrf": who.csrf},
                             headers={"Cache-Control": "no-store"})
    return json_response({"name": who.name, "topics": topics, "actions": list(who.actions)})


async def health(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """Readiness: 200 once a tick delivered a snapshot; the body says when ticks or Redis fail; 503
    `stalled` when a replica's feed went silent while Redis answers."""
    hub = request.app[HUB]
    pub = hub.publisher
    ok = pub.ready or (hub.feed.latest is not None and pub.tick_error is None)
    body: dict[str, object] = {"status": "ready" if ok else "starting", "seq": hub.feed.seq, "epoch": hub.feed.epoch}
    if pub.tick_error is not None:
        body["tick_error"] = pub.tick_error
        body["status"] = "failing" if hub.feed.latest is None else "degraded"
    cluster = pub.status()
    if cluster is not None:
        body["cluster"] = cluster
        if ok and pub.degraded():  # stays 200: see docs/replicas.md
            body["status"] = "degraded"
    if pub.stalled():  # serving a frozen picture while nothing explains it: 503 (docs/replicas.md)
        body["status"] = "stalled"
        return json_response(body, status=503)
    return json_response(body, status=200 if ok or hub.feed.latest is not None else 503)


async def snapshot(request: web.Request) -> web.StreamResponse:
    """The latest snapshot, filtered to the token's topics; 503 before the first tick."""
    hub = request.app[HUB]
    who = await principal(request, ws=False)
    latest = hub.feed.latest
    if latest is None:
        return json_error(503, "no snapshot yet: the first tick has not completed")
    body = latest.encode(who.topics, hub.feed.source_sections)
    return await send_json(request, [body], len(body))


async def history(request: web.Request) -> web.StreamResponse:
    """Up to `limit` recent snapshots, oldest first, as {"items": [...]}, within the client byte budget.

    Like `/ws?history=N`: over `broadcast.max_client_buffer_bytes` the oldest are left out and the
    newest is always there. The body is streamed, one snapshot encoded at a time.
    """
    hub = request.app[HUB]
    who = await principal(request, ws=False)
    size = hub.config.broadcast.history_size
    limit = int_param(request, "limit", default=size, lo=0, hi=size)
    topics, sections = who.topics, hub.feed.source_sections
    budget = hub.config.broadcast.max_client_buffer_bytes
    kept = collections.deque(hub.feed.within(hub.feed.items(limit), topics, budget))
    length = len(b'{"items":[]}') + sum(e.encoded_size(topics, sections) for e in kept) + max(0, len(kept) - 1)

    def pieces() -> Iterable[bytes]:
        yield b'{"items":['
        first = True
        while kept:
            entry = kept.popleft()  # let go of each entry once sent (the feed may have evicted it)
            if not first:
                yield b","
            first = False
            yield from entry.segments(topics, sections)  # the feed's own bytes: nothing is copied whole
        yield b"]}"

    return await send_json(request, pieces(), length)


async def business(request: web.Request) -> web.Response:
    """The seed's /api/metrics/business?timeRange=..., computed in MongoDB."""
    hub = request.app[HUB]
    who = await principal(request, ws=False)
    if who.topics is not None and "business" not in who.topics:
        hub.metrics.http_rejected.labels("topic_not_allowed").inc()
        hub.audit.event("policy_violation", request, remote=hub.client_address(request), **who.audit(),
                        reason="topic business not allowed")
        return json_error(403, "this token may not read business metrics")
    time_range = request.query.get("timeRange", "24h")
    if time_range not in TIME_RANGES:
        return json_error(400, f"invalid timeRange {time_range[:32]!r}", allowed=list(TIME_RANGES))
    if hub.business is None:
        return json_error(503, "the business source is disabled in this hub's config")
    try:
        data = await hub.business.metrics_for(time_range)
    except SourceError as exc:
        return json_error(503, str(exc))
    return json_response(data)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of the app's private registry."""
    hub = request.app[HUB]
    if hub.config.auth.protect_metrics:
        await principal(request, ws=False)
    body = generate_latest(hub.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
