"""HTTP handlers: health, readiness, the REST API and /metrics."""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hub.auth import AuthError, Principal
from hub.context import HUB
from hub.errors import JSONHTTPError, int_param, json_error, json_response
from hub.sources.base import SourceError
from hub.vocab import TIME_RANGES

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


def principal(request: web.Request) -> Principal:
    """Authenticate `request`, or raise 401 (audited), or 429 while its address is locked out."""
    hub = request.app[HUB]
    if not hub.auth.enabled:
        return hub.auth.check(request)
    ip = hub.client_address(request)
    failures = hub.auth_failures
    if failures.blocked(ip):
        hub.metrics.rejected.labels("auth_rate_limited").inc()
        raise JSONHTTPError(429, "too many failed authentications from this address; try again later",
                            headers={"Retry-After": str(failures.retry_after(ip))})
    try:
        return hub.auth.check(request)
    except AuthError as exc:
        if failures.record(ip) == 1:  # repeats are reported as one line per window (auth.AuthFailures)
            hub.audit.event("auth_failure", request, remote=ip, path=request.path, reason=str(exc))
        hub.metrics.rejected.labels("unauthorized").inc()
        raise JSONHTTPError(401, f"unauthorized: {exc}", headers={"WWW-Authenticate": 'Bearer realm="hub"'}) from None


async def health(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """Readiness: 200 once a tick delivered a snapshot; the body says when ticks or Redis fail."""
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
    return json_response(body, status=200 if ok or hub.feed.latest is not None else 503)


async def snapshot(request: web.Request) -> web.Response:
    """The latest snapshot, filtered to the token's topics; 503 before the first tick."""
    hub = request.app[HUB]
    who = principal(request)
    latest = hub.feed.latest
    if latest is None:
        return json_error(503, "no snapshot yet: the first tick has not completed")
    return _compressed(web.Response(body=latest.encode(who.topics, hub.feed.source_sections),
                                    content_type="application/json"))


async def history(request: web.Request) -> web.Response:
    """Up to `limit` recent snapshots, oldest first, as {"items": [...]}."""
    hub = request.app[HUB]
    who = principal(request)
    size = hub.config.broadcast.history_size
    limit = int_param(request, "limit", default=size, lo=0, hi=size)
    items, _last = hub.feed.encode_items(hub.feed.items(limit), who.topics)
    return _compressed(web.Response(body=b'{"items":' + items + b"}", content_type="application/json"))


def _compressed(resp: web.Response) -> web.Response:
    """Snapshots compress about 10x; gzip/deflate them for clients that accept it (big fleets)."""
    if resp.body is not None and len(resp.body) >= 1024:  # type: ignore[arg-type]
        resp.enable_compression()
    return resp


async def business(request: web.Request) -> web.Response:
    """The seed's /api/metrics/business?timeRange=..., computed in MongoDB."""
    hub = request.app[HUB]
    who = principal(request)
    if who.topics is not None and "business" not in who.topics:
        hub.audit.event("policy_violation", request, remote=hub.client_address(request), token=who.name,
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
        principal(request)
    body = generate_latest(hub.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
