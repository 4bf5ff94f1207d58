"""The WebSocket protocol: checks before the upgrade, the initial message, then the receive loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from hub.admission import is_https
from hub.aiohttp_ws import HubWebSocket
from hub.auth import SUBPROTOCOL, bearer_protocol_ok
from hub.broadcast import EVICT_GRACE
from hub.client import Client, CloseReason
from hub.context import HUB, Hub
from hub.errors import int_param, json_error
from hub.frames import control_frame, text_frame
from hub.oidc.gate import OIDC
from hub.views import principal
from hub.vocab import TOPICS, utc_iso

log = logging.getLogger(__name__)

TOO_LARGE = 1009
UNSUPPORTED_DATA = 1003
POLICY_VIOLATION = 1008
PROTOCOL_ERROR = 1002
INVALID_DATA = 1007


def same_origin(request: web.BaseRequest, origin: str, allowed: tuple[str, ...], *, https: bool | None = None) -> bool:
    """True when a browser `origin` is the hub's own scheme and host, or is in server.allowed_origins.

    `https`: whether the request came over https (`admission.is_https`); None: `request.secure`.
    """
    try:
        parts = urlsplit(origin.strip().lower())
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    own_scheme = "https" if (request.secure if https is None else https) else "http"
    if parts.netloc == request.host.lower() and parts.scheme == own_scheme:
        return True
    norm = f"{parts.scheme}://{parts.netloc}"
    return any(norm == a.strip().lower().rstrip("/") for a in allowed)


def _reject(hub: Hub, request: web.Request, ip: str, status: int, reason: str, message: str) -> web.Response:
    hub.metrics.rejected.labels(reason).inc()
    hub.audit.event("rejected", request, remote=ip, reason=reason)
    return json_error(status, message)


def is_upgrade(request: web.BaseRequest) -> bool:
    """True for a WebSocket upgrade request (any path: the seed's ws server accepted any)."""
    return request.headers.get("Upgrade", "").lower() == "websocket"


async def ws_handler(request: web.Request) -> web.StreamResponse:
    """`/ws` (and an upgrade on `/`): checks, initial snapshot, points or history, then a receive loop."""
    hub = request.app[HUB]
    cfg = hub.config
    ip = hub.client_address(request)
    history_n = int_param(request, "history", default=-1, lo=0, hi=1_000_000)
    points_n = int_param(request, "points", default=-1, lo=0, hi=1_000_000)
    if not is_upgrade(request):
        # RFC 9110 15.5.22: name the protocol this resource needs.
        return json_error(426, f"{request.path} is a WebSocket endpoint: send an Upgrade: websocket request",
                          headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    if not bearer_protocol_ok(request):
        return _reject(hub, request, ip, 400, "subprotocol",
                       f'a "bearer." token subprotocol must be offered together with "{SUBPROTOCOL}"')
    origin = request.headers.get("Origin")
    # Cross-site WebSocket hijacking: a foreign page's upgrade carries the hub's session cookie too.
    oidc = request.app.get(OIDC)
    https = is_https(request, hub.trusted_proxies)  # the one definition, shared with the session cookie
    if origin is not None and not same_origin(request, origin, cfg.server.allowed_origins, https=https):
        return _reject(hub, request, ip, 403, "origin", f"origin {origin[:100]!r} is not allowed")
    who = await principal(request, ws=True)
    # Every frame counts against the rate limit, PINGs included (autoping off: the hub answers them).
    # aiohttp refuses messages of max_msg_size bytes or more; server.max_message_bytes is the
    # largest message allowed, so the limit handed to aiohttp is one more.
    ws = HubWebSocket(
        heartbeat=cfg.broadcast.heartbeat, compress=True, max_msg_size=cfg.server.max_message_bytes + 1,
        protocols=(SUBPROTOCOL,), close_grace=EVICT_GRACE, autoping=False,
        rate=(cfg.server.client_rate_limit, cfg.server.client_rate_burst))
    if not ws.can_prepare(request).ok:
        return json_error(400, f"expected a WebSocket upgrade request on {request.path}")
    refused = hub.admission.admit(ip)
    if refused == "capacity":
        return _reject(hub, request, ip, 503, "capacity", "too many connections: server.max_connections reached")
    if refused == "per_ip":
        return _reject(hub, request, ip, 429, "per_ip", "too many connections from this address")

    client: Client | None = None
    try:
        await ws.prepare(request)
        assert request.transport is not None
        client = Client(ws=ws, transport=request.transport, remote=ip, token_name=who.name, allowed=who.topics,
                        window_bits=ws.compress or 0)
        client.set_topics(None)
        if oidc is not None and who.person:  # closed with 1008 within one interval of its session's end
            oidc.track(client, who.session)
        await hub.broadcaster.join(client, history=history_n, points=points_n)
        hub.audit.event("connect", request, remote=ip, **who.audit())
        await _receive_loop(hub, request, client)
    except (TimeoutError, ConnectionError) as exc:
        log.debug("client %s: connection lost: %s", ip, exc)
    finally:
        try:
            if client is not None:
                hub.broadcaster.discard(client)
                if oidc is not None:
                    oidc.untrack(client)
                if ws.guard is not None and ws.guard.violation is not None:
                    # Also when the handler was cancelled while the close lingered (handler_cancellation).
                    _note_violation(hub, request, client, ws.guard.violation[0])
                reason = client.close_reason or _disconnect_reason(ws)
                hub.metrics.disconnects.labels(reason).inc()
                hub.audit.event("disconnect", request, remote=ip, **who.audit(),
                                code=client.close_code or ws.close_code, reason=str(reason))
                if client.closing is not None:  # an eviction still owns the socket for its grace period
                    with contextlib.suppress(Exception):
                        await asyncio.shield(client.closing)
        finally:
            # Runs even when aiohttp cancels this handler because the socket was lost meanwhile.
            transport = request.transport
            if transport is not None and (not transport.is_closing() or transport.get_write_buffer_size()):
                # A peer that stopped reading would hold the socket (and its unsent backlog) forever:
                # close() waits for the buffer to drain, abort() does not.
                transport.abort()
            hub.admission.release(ip)
    return ws


def _disconnect_reason(ws: web.WebSocketResponse) -> CloseReason:
    exc = ws.exception()
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) or type(exc).__name__ == "ServerTimeoutError":
        return CloseReason.DEAD_PEER
    code = ws.close_code
    if code == WSCloseCode.OK:
        return CloseReason.NORMAL
    if code == WSCloseCode.GOING_AWAY:
        return CloseReason.GOING_AWAY
    if code == TOO_LARGE:
        return CloseReason.TOO_LARGE
    if code in (PROTOCOL_ERROR, INVALID_DATA):
        return CloseReason.PROTOCOL_ERROR
    return CloseReason.ERROR


def _send(hub: Hub, client: Client, obj: dict[str, Any]) -> None:
    # Replies are written like broadcasts, never awaited: a peer that stopped reading cannot hold
    # the handler (its backlog counts toward max_client_buffer_bytes, and fan-out evicts it).
    # Uncompressed frames are valid under permessage-deflate (RFC 7692 6: per message).
    if client.send_prepared(text_frame(orjson.dumps(obj))):
        hub.metrics.messages_sent.inc()


async def _receive_loop(hub: Hub, request: web.Request, client: Client) -> None:
    ws = client.ws
    while True:
        msg = await ws.receive()
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return
        if msg.type is WSMsgType.ERROR:
            # aiohttp has closed the connection already (HubWebSocket.close: bounded, then aborted);
            # record the code the hub sent, whatever the peer does next.
            _note_violation(hub, request, client, getattr(ws.exception(), "code", None))
            return
        if msg.type is WSMsgType.TEXT:
            _handle_text(hub, request, client, msg.data)
        elif msg.type is WSMsgType.PING:
            client.send_prepared(control_frame(0xA, msg.data))
        elif msg.type is WSMsgType.BINARY:
            hub.audit.event("policy_violation", request, remote=client.remote, token=client.token_name,
                            reason="binary_frame")
            client.close_reason, client.close_code = CloseReason.PROTOCOL_ERROR, UNSUPPORTED_DATA
            await ws.close(code=UNSUPPORTED_DATA, message=b"binary frames are not supported")
            return
        # PONG: a heartbeat reply; aiohttp resets the heartbeat on any received data


def _note_violation(hub: Hub, request: web.Request, client: Client, code: int | None) -> None:
    """Record why the hub failed the connection (close code, reason, audit), once."""
    if client.close_reason is not None:
        return
    if code == TOO_LARGE:
        client.close_reason, client.close_code = CloseReason.TOO_LARGE, TOO_LARGE
        hub.audit.event("policy_violation", request, remote=client.remote, token=client.token_name,
                        reason="message_too_big")
    elif code == POLICY_VIOLATION:  # the frame guard's rate limit: every frame counts
        client.close_reason, client.close_code = CloseReason.RATE_LIMITED, POLICY_VIOLATION
        hub.audit.event("policy_violation", request, remote=client.remote, token=client.token_name,
                        reason="rate_limited")
    elif code in (PROTOCOL_ERROR, INVALID_DATA):
        client.close_reason, client.close_code = CloseReason.PROTOCOL_ERROR, code


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": code, "message": message}


def _handle_text(hub: Hub, request: web.Request, client: Client, text: str) -> None:
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        _send(hub, client, _error("invalid_json", f"message is not valid JSON: {exc}"))
        return
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        _send(hub, client, _error("invalid_message", 'expected a JSON object with a string "type"'))
        return
    kind = msg["type"]
    if kind == "ping":
        reply: dict[str, Any] = {"type": "pong", "timestamp": utc_iso(), "seq": hub.feed.seq,
                                 "epoch": hub.feed.epoch}
        if "id" in msg and isinstance(msg["id"], (str, int, float)):
            reply["id"] = msg["id"]
        _send(hub, client, reply)
    elif kind == "subscribe":
        topics = msg.get("topics")
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            _send(hub, client, _error("invalid_topics", '"topics" must be a list of strings'))
            return
        unknown = [t for t in topics if t not in TOPICS]
        if unknown:
            _send(hub, client, _error(
                "unknown_topic", f"unknown topic(s) {', '.join(repr(t[:40]) for t in unknown[:10])}; "
                                 f"known: {', '.join(TOPICS)}"))
            return
        requested = tuple(dict.fromkeys(topics))
        effective = client.set_topics(requested)
        reply = {"type": "subscribed", "topics": list(effective)}
        denied = [t for t in requested if t not in effective]
        if denied:
            reply["denied"] = denied
            hub.audit.event("policy_violation", request, remote=client.remote, token=client.token_name,
                            reason="topics_not_allowed", topics=denied)
        _send(hub, client, reply)
    else:
        _send(hub, client, _error("unknown_type", f"unknown message type {kind[:40]!r}; "
                                                        "expected ping or subscribe"))
