"""One connected WebSocket client: its topics, its negotiated compression and a guarded raw send."""

from __future__ import annotations

import asyncio
import enum
import struct
import zlib
from dataclasses import dataclass

from aiohttp import web

from hub.vocab import TOPICS

#: the four bytes every Z_SYNC_FLUSH ends with; RFC 7692 7.2.1 has the sender drop them
DEFLATE_TAIL = b"\x00\x00\xff\xff"


class CloseReason(enum.StrEnum):
    """Why a connection ended: the `reason` label of hub_ws_disconnects_total and the audit log."""

    NORMAL = "normal"
    GOING_AWAY = "going_away"
    SLOW_CONSUMER = "slow_consumer"
    DEAD_PEER = "dead_peer"
    PROTOCOL_ERROR = "protocol_error"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    ERROR = "error"
    SHUTDOWN = "shutdown"


def text_frame(payload: bytes, *, compressed: bool = False) -> bytes:
    """One unmasked, final WebSocket text frame (RFC 6455 5.2); RSV1 set when `compressed` (RFC 7692)."""
    first = 0xC1 if compressed else 0x81
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


def deflate_message(payload: bytes, *, window_bits: int = 15, level: int = 6) -> bytes:
    """`payload` compressed on its own, with an empty window (RFC 7692 7.2.1).

    A message that references nothing before it is valid whatever context takeover was agreed,
    so one compressed copy serves every client with the same window size.
    """
    c = zlib.compressobj(level, zlib.DEFLATED, -window_bits)
    out = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4] if out.endswith(DEFLATE_TAIL) else out


def prepared_frame(payload: bytes, window_bits: int) -> bytes:
    """The frame for a client that negotiated `window_bits` (0: no permessage-deflate)."""
    if not window_bits:
        return text_frame(payload)
    return text_frame(deflate_message(payload, window_bits=window_bits), compressed=True)


class HubWebSocket(web.WebSocketResponse):
    """aiohttp's WebSocketResponse, always answering permessage-deflate with server_no_context_takeover.

    Broadcast frames are compressed once per tick and written raw to every client, so no message
    may depend on an earlier one; RFC 7692 7.1.1.1 lets a server add this parameter on its own.
    aiohttp's own frames (pong, close, replies) then also use a fresh compressor each.
    """

    def _handshake(self, request):  # type: ignore[no-untyped-def]
        headers, protocol, compress, notakeover = super()._handshake(request)
        if compress:
            from aiohttp.http_websocket import ws_ext_gen

            headers["Sec-WebSocket-Extensions"] = ws_ext_gen(compress=compress, isserver=True,
                                                             server_notakeover=True)
            notakeover = True
        return headers, protocol, compress, notakeover


@dataclass(eq=False, slots=True)
class Client:
    """One connected WebSocket client as the broadcaster sees it."""

    ws: web.WebSocketResponse
    transport: asyncio.Transport
    remote: str = ""
    token_name: str | None = None
    #: topics this client's token may receive (None: all)
    allowed: tuple[str, ...] | None = None
    #: topics the client subscribed to (None: all it may receive)
    subscribed: tuple[str, ...] | None = None
    #: effective topics, derived from the two above; None means every section
    topics: tuple[str, ...] | None = None
    #: negotiated permessage-deflate window bits; 0 when the client did not offer it
    window_bits: int = 0
    close_reason: CloseReason | None = None
    #: the close code the hub sent, when the hub ended the connection
    close_code: int | None = None
    last_seq: int = 0
    last_epoch: str = ""
    #: the hub's close of this client (eviction), awaited before its admission slot is released
    closing: asyncio.Task[None] | None = None

    @property
    def frame_key(self) -> tuple[tuple[str, ...] | None, int]:
        """Clients with equal keys receive byte-identical frames."""
        return self.topics, self.window_bits

    def set_topics(self, subscribed: tuple[str, ...] | None) -> tuple[str, ...]:
        """Set the subscription; return the effective topics (never outside `allowed`)."""
        self.subscribed = subscribed
        want = subscribed if subscribed is not None else TOPICS
        if self.allowed is not None:
            want = tuple(t for t in want if t in self.allowed)
        self.topics = None if set(want) == set(TOPICS) else tuple(t for t in TOPICS if t in want)
        return want if self.topics is None else self.topics

    def can_send(self) -> bool:
        """False once the hub or the peer started closing: no data frame may follow a Close frame."""
        return self.close_reason is None and not self.ws.closed and not self.transport.is_closing()

    def send_prepared(self, frame: bytes) -> bool:
        """Write a prepared frame without awaiting; False (nothing written) when the client is closing."""
        if not self.can_send():
            return False
        self.transport.write(frame)
        return True
