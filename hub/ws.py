"""The WebSocket endpoint: checks before the upgrade, the hand-over to a `Peer`, the initial message, and
what the hub does with client messages (`Receiver`)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import WSCloseCode, web

from hub.admission import is_https
from hub.aiohttp_ws import Handshake, hand_over, let_go
from hub.auth import SUBPROTOCOL, bearer_protocol_ok
from hub.broadcast import EVICT_GRACE
from hub.client import Client, CloseReason
from hub.context import HUB, Hub
from hub.errors import int_param, json_error
from hub.frames import TokenBucket, text_frame
from hub.oidc.gate import OIDC
from hub.peer import Peer
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
    """`/ws` (and an upgrade on `/`): checks, the 101, the socket handed to a `Peer`, then the initial
    snapshot, points or history; the handler returns once the peer reads (aiohttp keeps nothing)."""
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
    shake = Handshake(compress=True, protocols=(SUBPROTOCOL,))
    if not shake.can_prepare(request).ok:
        return json_error(400, f"expected a WebSocket upgrade request on {request.path}")
    refused = hub.admission.admit(ip)
    if refused == "capacity":
        return _reject(hub, request, ip, 503, "capacity", "too many connections: server.max_connections reached")
    if refused == "per_ip":
        return _reject(hub, request, ip, 429, "per_ip", "too many connections from this address")

    peer: Peer | None = None
    tail: bytes | None = None
    try:
        await shake.prepare(request)
        # Every frame counts against the rate limit, PINGs included (the hub answers them itself).
        rate = TokenBucket(cfg.server.client_rate_limit, cfg.server.client_rate_burst)
        peer = Peer(hub.peers, request.app[RECEIVER], deflate=bool(shake.window_bits),
                    limit=cfg.server.max_message_bytes, bucket=rate, grace=EVICT_GRACE)
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("the connection was lost during the handshake")
        client = Client(ws=peer, transport=transport, remote=ip, token_name=who.name, allowed=who.topics,
                        window_bits=shake.window_bits, who=who, origin=origin,
                        user_agent=request.headers.get("User-Agent"))
        peer.client = client
        tail = hand_over(request, peer)
        if tail is None:
            raise ConnectionResetError("the connection was lost during the handshake")
        hub.peers.add(peer)
        client.set_topics(None)
        if oidc is not None and who.person:  # closed with 1008 within one interval of its session's end
            oidc.track(client, who.session)
        await hub.broadcaster.join(client, history=history_n, points=points_n)
        hub.audit.event("connect", request, remote=ip, **who.audit())
    except BaseException as exc:
        if tail is None:
            hub.admission.release(ip)  # never handed over: nothing else releases the slot
        else:
            assert peer is not None and peer.transport is not None
            peer.transport.abort()  # the peer's end (connection_lost) releases it
        if not isinstance(exc, (TimeoutError, ConnectionError)):
            raise
        log.debug("client %s: connection lost: %s", ip, exc)
    finally:
        if tail is not None:
            assert peer is not None
            peer.start(tail)
            let_go(request)
    # Never written (aiohttp let the connection go); the access log shows the upgrade's status.
    return web.Response(status=101)


class Receiver:
    """What the hub does with every connection's messages and its end (one per app)."""

    def __init__(self, hub: Hub, oidc: Any) -> None:
        self.hub = hub
        self.oidc = oidc

    def text(self, peer: Peer, text: str) -> None:
        _handle_text(self.hub, peer, peer.client, text)

    def binary(self, peer: Peer) -> None:
        hub, client = self.hub, peer.client
        _violation(hub, peer, "binary_frame")
        client.close_reason, client.close_code = CloseReason.PROTOCOL_ERROR, UNSUPPORTED_DATA
        hub.peers.spawn(peer.close(code=UNSUPPORTED_DATA, message=b"binary frames are not supported"))

    def failed(self, peer: Peer, code: int) -> None:
        _note_violation(self.hub, peer, peer.client, code)

    def closed(self, peer: Peer) -> None:
        # Counted as disconnected when the close starts; its slot is held until the socket is gone.
        hub, client = self.hub, peer.client
        hub.broadcaster.discard(client)
        if self.oidc is not None:
            self.oidc.untrack(client)
        reason = client.close_reason or _disconnect_reason(peer)
        hub.metrics.disconnects.labels(reason).inc()
        _audit(hub, peer, "disconnect", **client.who.audit(), code=client.close_code or peer.close_code,
               reason=str(reason))

    def ended(self, peer: Peer) -> None:
        self.hub.admission.release(peer.client.remote)


#: the app's Receiver (hub.app.create_app sets it)
RECEIVER = web.AppKey("receiver", Receiver)


def _audit(hub: Hub, peer: Peer, event: str, **fields: Any) -> None:
    """An audit event for `peer`, with the fields its request gave (address, origin, user agent)."""
    c = peer.client
    hub.audit.event(event, remote=c.remote, origin=c.origin, user_agent=c.user_agent, **fields)


def _violation(hub: Hub, peer: Peer, reason: str, **fields: Any) -> None:
    _audit(hub, peer, "policy_violation", token=peer.client.token_name, reason=reason, **fields)


def _disconnect_reason(peer: Peer) -> CloseReason:
    if peer.timed_out:
        return CloseReason.DEAD_PEER
    code = peer.close_code
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
    # the loop (its backlog counts toward max_client_buffer_bytes, and fan-out evicts it).
    # Uncompressed frames are valid under permessage-deflate (RFC 7692 6: per message).
    if client.send_prepared(text_frame(orjson.dumps(obj))):
        hub.metrics.messages_sent.inc()


def _note_violation(hub: Hub, peer: Peer, client: Client, code: int | None) -> None:
    """Record why the hub failed the connection (close code, reason, audit), once."""
    if client.close_reason is not None:
        return
    if code == TOO_LARGE:
        client.close_reason, client.close_code = CloseReason.TOO_LARGE, TOO_LARGE
        _violation(hub, peer, "message_too_big")
    elif code == POLICY_VIOLATION:  # the rate limit: every frame counts
        client.close_reason, client.close_code = CloseReason.RATE_LIMITED, POLICY_VIOLATION
        _violation(hub, peer, "rate_limited")
    elif code in (PROTOCOL_ERROR, INVALID_DATA):
        client.close_reason, client.close_code = CloseReason.PROTOCOL_ERROR, code


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": code, "message": message}


def _handle_text(hub: Hub, peer: Peer, client: Client, text: str) -> None:
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
            _violation(hub, peer, "topics_not_allowed", topics=denied)
        _send(hub, client, reply)
    else:
        _send(hub, client, _error("unknown_type", f"unknown message type {kind[:40]!r}; "
                                                        "expected ping or subscribe"))
