"""One connected WebSocket client: its topics, its negotiated compression and a guarded raw send."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Any

from hub.frames import snap_window
from hub.peer import Peer
from hub.vocab import TOPICS


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
    SESSION_ENDED = "session_ended"


@dataclass(eq=False, slots=True)
class Client:
    """One connected WebSocket client as the broadcaster sees it."""

    ws: Peer
    transport: asyncio.Transport
    remote: str = ""
    token_name: str | None = None
    #: for the audit log: who opened it (hub.auth.Principal), and its request's Origin and User-Agent
    who: Any = None
    origin: str | None = None
    user_agent: str | None = None
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
    #: clients with equal keys receive byte-identical frames: (topics, the window frames are compressed
    #: with: 0, 15 or 9), kept by set_topics
    key: tuple[tuple[str, ...] | None, int] = (None, 0)
    #: the hub's close of this client (eviction); its admission slot is released once the socket is gone
    closing: asyncio.Task[None] | None = None
    #: False once the hub or the peer started closing (evicted, or the WebSocket closed): the one
    #: flag fan-out reads per client instead of close_reason, ws.closed and the key's hash
    sending: bool = True
    #: the socket's descriptor for fan-out's direct write when nothing is queued (-1: always through
    #: the transport, e.g. TLS or a transport without a socket); set by Broadcaster.add
    fd: int = -1

    def __post_init__(self) -> None:
        self.sending = not self.ws.closed
        if isinstance(self.ws, Peer):
            self.ws.on_closed = self.stop_sending
        self.key = _interned(self.key)

    def stop_sending(self) -> None:
        """No data frame from now on (called when the WebSocket starts its close, or on eviction)."""
        self.sending = False

    def set_topics(self, subscribed: tuple[str, ...] | None) -> tuple[str, ...]:
        """Set the subscription; return the effective topics (never outside `allowed`)."""
        self.subscribed = subscribed
        want = subscribed if subscribed is not None else TOPICS
        if self.allowed is not None:
            want = tuple(t for t in want if t in self.allowed)
        self.topics = None if set(want) == set(TOPICS) else tuple(t for t in TOPICS if t in want)
        self.key = _interned((self.topics, snap_window(self.window_bits) if self.window_bits else 0))
        return want if self.topics is None else self.topics

    def can_send(self) -> bool:
        """False once the hub or the peer started closing: no data frame may follow a Close frame."""
        return self.sending and self.close_reason is None and not self.ws.closed and not self.transport.is_closing()

    def send_prepared(self, frame: bytes) -> bool:
        """Write a prepared frame without awaiting; False (nothing written) when the client is closing."""
        if not self.can_send():
            return False
        self.transport.write(frame)
        return True


_KEYS: dict[tuple[tuple[str, ...] | None, int], tuple[tuple[str, ...] | None, int]] = {}


def _interned(key: tuple[tuple[str, ...] | None, int]) -> tuple[tuple[str, ...] | None, int]:
    """One object per distinct key, so fan-out tells a run of equal keys apart by identity (a tuple's
    hash is computed afresh at every lookup). Bounded: topics are subsets of TOPICS, windows 0/9/15."""
    return _KEYS.setdefault(key, key)
