"""HTTP and WebSocket handlers."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hub.auth import BEARER_PROTOCOL_PREFIX, SUBPROTOCOL, AuthError, Principal
from hub.broadcast import ALL_TOPICS, Client, text_frame
from hub.config import TIME_RANGES
from hub.scheduler import utc_iso
from hub.sources.base import SourceError
from hub.state import STATE_KEY, HubState

log = logging.getLogger(__name__)

#: uPlot sets styles only through the CSSOM (el.style.x = ...), which CSP does not restrict, so
#: nothing beyond 'self' is needed (tests/test_dashboard.py serves the page under exactly that).
CSP = "default-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
TOO_LARGE = 1009
UNSUPPORTED_DATA = 1003
POLICY_VIOLATION = 1008


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response encoded with orjson."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json",
                        headers=headers)


def json_error(status: int, error: str, **extra: Any) -> web.Response:
    """A JSON error body {"error": ..., ...extra} with `status`."""
    return json_response({"error": error, **extra}, status=status)


def _int_param(request: web.Request, name: str, *, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(
            text=orjson.dumps({"error": f"query parameter {name!r} must be an integer, got {raw[:64]!r}"}).decode(),
            content_type="application/json") from None
    if not lo <= value <= hi:
        raise web.HTTPBadRequest(
            text=orjson.dumps({"error": f"query parameter {name!r} must be between {lo} and {hi}, got {value}"}).decode(),
            content_type="application/json")
    return value


# ----------------------------------------------------------------------------- middleware


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
    """Authenticate `request` or raise 401 (audited)."""
    st = request.app[STATE_KEY]
    try:
        return st.auth.check(request)
    except AuthError as exc:
        st.audit.event("auth_failure", request, path=request.path, reason=str(exc))
        st.metrics.rejected.labels("unauthorized").inc()
        raise web.HTTPUnauthorized(
            text=orjson.dumps({"error": f"unauthorized: {exc}"}).decode(), content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="hub"'}) from None


# ----------------------------------------------------------------------------- HTTP


async def health(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """Readiness: 200 once the first snapshot exists (and, clustered, Redis is reachable)."""
    st = request.app[STATE_KEY]
    body: dict[str, Any] = {"status": "ready" if st.ready else "starting", "seq": st.feed.seq}
    ok = st.ready
    if st.cluster is not None:
        body["cluster"] = st.cluster.status()
        if ok and body["cluster"]["redis"] != "up":  # stays 200: see docs/replicas.md
            body["status"] = "degraded"
    return json_response(body, status=200 if ok else 503)


async def snapshot(request: web.Request) -> web.Response:
    """The latest snapshot, filtered to the token's topics; 503 before the first tick."""
    st = request.app[STATE_KEY]
    who = principal(request)
    latest = st.feed.latest
    if latest is None:
        return json_error(503, "no snapshot yet: the first tick has not completed")
    return web.Response(body=st.feed.encode_one(latest, who.topics), content_type="application/json")


async def history(request: web.Request) -> web.Response:
    """Up to `limit` recent snapshots, oldest first, as {"items": [...]}."""
    st = request.app[STATE_KEY]
    who = principal(request)
    size = st.config.broadcast.history_size
    limit = _int_param(request, "limit", default=size, lo=0, hi=size)
    items = st.feed.encode_items(st.feed.items(limit), who.topics)
    return web.Response(body=b'{"items":' + items + b"}", content_type="application/json")


async def business(request: web.Request) -> web.Response:
    """The seed's /api/metrics/business?timeRange=..., computed in MongoDB and cached per window."""
    st = request.app[STATE_KEY]
    who = principal(request)
    if who.topics is not None and "business" not in who.topics:
        st.audit.event("policy_violation", request, token=who.name, reason="topic business not allowed")
        return json_error(403, "this token may not read business metrics")
    time_range = request.query.get("timeRange", "24h")
    if time_range not in TIME_RANGES:
        return json_error(400, f"invalid timeRange {time_range[:32]!r}", allowed=list(TIME_RANGES))
    if st.business is None:
        return json_error(503, "the business source is disabled in this hub's config")
    try:
        data = await st.business.metrics_for(time_range)
    except SourceError as exc:
        return json_error(503, str(exc))
    return json_response(data)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of the app's private registry."""
    st = request.app[STATE_KEY]
    if st.config.auth.protect_metrics:
        principal(request)
    body = generate_latest(st.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# ----------------------------------------------------------------------------- WebSocket


def same_origin(request: web.Request, origin: str, allowed: tuple[str, ...]) -> bool:
    """True when a browser `origin` is the hub's own host or listed in server.allowed_origins."""
    parts = urlsplit(origin.strip().lower())
    if parts.netloc and parts.netloc == request.host.lower():
        return True
    norm = f"{parts.scheme}://{parts.netloc}"
    return any(norm == a.strip().lower().rstrip("/") for a in allowed)


class TokenBucket:
    """Client message rate limit: `rate` per second with bursts up to `burst`."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.stamp = float(burst), time.monotonic()

    def take(self) -> bool:
        """Spend one token; False when the bucket is empty."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def _reject(st: HubState, request: web.Request, status: int, reason: str, message: str) -> web.Response:
    st.metrics.rejected.labels(reason).inc()
    st.audit.event("rejected", request, reason=reason)
    return json_error(status, message)


async def ws_handler(request: web.Request) -> web.StreamResponse:
    """`/ws`: checks before the upgrade, initial snapshot or history, then a receive loop."""
    st = request.app[STATE_KEY]
    cfg = st.config
    history_n = _int_param(request, "history", default=-1, lo=0, hi=1_000_000)
    origin = request.headers.get("Origin")
    if origin is not None and not same_origin(request, origin, cfg.server.allowed_origins):
        return _reject(st, request, 403, "origin", f"origin {origin[:100]!r} is not allowed")
    who = principal(request)
    if len(st.feed.clients) + st.pending >= cfg.server.max_connections:
        return _reject(st, request, 503, "capacity", "too many connections: server.max_connections reached")
    ip = request.remote or "unknown"
    cap = cfg.server.max_connections_per_ip
    if cap and st.per_ip[ip] >= cap:
        return _reject(st, request, 429, "per_ip", "too many connections from this address")
    if not _bearer_protocol_ok(request):
        return _reject(st, request, 400, "subprotocol",
                       f'a "bearer." token subprotocol must be offered together with "{SUBPROTOCOL}"')
    # aiohttp refuses messages of max_msg_size bytes or more; server.max_message_bytes is the
    # largest message allowed, so the limit handed to aiohttp is one more.
    ws = web.WebSocketResponse(
        heartbeat=cfg.broadcast.heartbeat, compress=False, max_msg_size=cfg.server.max_message_bytes + 1,
        protocols=(SUBPROTOCOL,), timeout=5.0, autoping=False)  # PINGs count against the rate limit
    if not ws.can_prepare(request).ok:
        return json_error(400, "expected a WebSocket upgrade request on /ws")

    st.pending += 1
    st.per_ip[ip] += 1
    pending = True
    client: Client | None = None
    try:
        await ws.prepare(request)
        assert request.transport is not None
        client = Client(ws=ws, transport=request.transport, remote=ip, token_name=who.name, allowed=who.topics)
        client.set_topics(None)
        await _send_initial(st, client, history_n)
        st.pending -= 1
        pending = False
        st.feed.add(client)
        st.audit.event("connect", request, token=who.name)
        await _receive_loop(st, request, client)
    finally:
        if pending:
            st.pending -= 1
        st.per_ip[ip] -= 1
        if st.per_ip[ip] <= 0:
            del st.per_ip[ip]
        if client is not None:
            st.feed.discard(client)
            reason = client.close_reason or _disconnect_reason(ws)
            st.metrics.disconnects.labels(reason).inc()
            st.audit.event("disconnect", request, token=who.name, code=client.close_code or ws.close_code, reason=reason)
    return ws


def _bearer_protocol_ok(request: web.Request) -> bool:
    """False when a "bearer." subprotocol is offered without hub.v1."""
    # aiohttp logs the client's whole subprotocol list at WARNING when none matches ours,
    # which would put the token into the hub's log; refuse before aiohttp sees it.
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    return SUBPROTOCOL in offered or not any(p.startswith(BEARER_PROTOCOL_PREFIX) for p in offered)


def _disconnect_reason(ws: web.WebSocketResponse) -> str:
    exc = ws.exception()
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) or type(exc).__name__ == "ServerTimeoutError":
        return "dead_peer"
    code = ws.close_code
    if code == WSCloseCode.OK:
        return "normal"
    if code == WSCloseCode.GOING_AWAY:
        return "going_away"
    if code == TOO_LARGE:
        return "too_large"
    return "error"


async def _send_initial(st: HubState, client: Client, history_n: int) -> None:
    # The initial message is awaited (drained) before the client joins the broadcast set, so a
    # long history never counts against max_client_buffer_bytes; whatever was broadcast meanwhile
    # is written right after, with no await in between, so the client misses no seq.
    feed = st.feed
    if history_n >= 0:
        entries = feed.items(history_n)
        body = b'{"type":"history","items":' + feed.encode_items(entries, client.topics) + b"}"
        await client.ws.send_frame(body, WSMsgType.TEXT)
        client.last_seq = entries[-1].seq if entries else 0
        st.metrics.messages_sent.inc()
    elif feed.latest is not None:
        latest = feed.latest
        await client.ws.send_frame(feed.encode_one(latest, client.topics), WSMsgType.TEXT)
        client.last_seq = latest.seq
        st.metrics.messages_sent.inc()
    missed = feed.items(len(feed.history), after=client.last_seq) if client.last_seq else []
    for entry in missed:
        client.transport.write(text_frame(feed.encode_one(entry, client.topics)))
        client.last_seq = entry.seq
    st.metrics.messages_sent.inc(len(missed))


async def _send(st: HubState, client: Client, obj: dict[str, Any]) -> None:
    await client.ws.send_frame(orjson.dumps(obj), WSMsgType.TEXT)
    st.metrics.messages_sent.inc()


async def _close(client: Client, code: int, reason: str, message: str) -> None:
    client.close_reason = reason
    client.close_code = code
    await client.ws.close(code=code, message=message.encode()[:120])


async def _receive_loop(st: HubState, request: web.Request, client: Client) -> None:
    ws = client.ws
    bucket = TokenBucket(st.config.server.client_rate_limit, st.config.server.client_rate_burst)
    while True:
        msg = await ws.receive()
        if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.PING:
            if not bucket.take():
                st.audit.event("policy_violation", request, token=client.token_name, reason="rate_limited")
                await _close(client, POLICY_VIOLATION, "rate_limited", "message rate limit exceeded")
                return
            if msg.type is WSMsgType.TEXT:
                await _handle_text(st, request, client, msg.data)
            else:
                await ws.pong(msg.data)
        elif msg.type is WSMsgType.PONG:
            continue  # heartbeat replies; aiohttp resets the heartbeat on any received data
        elif msg.type is WSMsgType.BINARY:
            st.audit.event("policy_violation", request, token=client.token_name, reason="binary_frame")
            await _close(client, UNSUPPORTED_DATA, "protocol_error", "binary frames are not supported")
            return
        elif msg.type is WSMsgType.ERROR:
            if getattr(ws.exception(), "code", None) == TOO_LARGE:
                client.close_reason, client.close_code = "too_large", TOO_LARGE
                st.audit.event("policy_violation", request, token=client.token_name, reason="message_too_big")
            return
        else:  # CLOSE, CLOSING, CLOSED
            return


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": code, "message": message}


async def _handle_text(st: HubState, request: web.Request, client: Client, text: str) -> None:
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        await _send(st, client, _error("invalid_json", f"message is not valid JSON: {exc}"))
        return
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        await _send(st, client, _error("invalid_message", 'expected a JSON object with a string "type"'))
        return
    kind = msg["type"]
    if kind == "ping":
        reply: dict[str, Any] = {"type": "pong", "timestamp": utc_iso(), "seq": st.feed.seq}
        if "id" in msg and isinstance(msg["id"], (str, int, float)):
            reply["id"] = msg["id"]
        await _send(st, client, reply)
    elif kind == "subscribe":
        topics = msg.get("topics")
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            await _send(st, client, _error("invalid_topics", '"topics" must be a list of strings'))
            return
        unknown = [t for t in topics if t not in ALL_TOPICS]
        if unknown:
            await _send(st, client, _error(
                "unknown_topic", f"unknown topic(s) {', '.join(repr(t[:40]) for t in unknown[:10])}; "
                                 f"known: {', '.join(ALL_TOPICS)}"))
            return
        requested = tuple(dict.fromkeys(topics))
        effective = client.set_topics(requested)
        reply = {"type": "subscribed", "topics": list(effective)}
        denied = [t for t in requested if t not in effective]
        if denied:
            reply["denied"] = denied
            st.audit.event("policy_violation", request, token=client.token_name,
                           reason="topics_not_allowed", topics=denied)
        await _send(st, client, reply)
    else:
        await _send(st, client, _error("unknown_type", f"unknown message type {kind[:40]!r}; "
                                                       "expected ping or subscribe"))
