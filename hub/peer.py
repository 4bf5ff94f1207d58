"""A WebSocket connection the hub owns from the first byte after its 101: its close, its heartbeat, its end.

aiohttp does the handshake (`hub.aiohttp_ws`) and then lets the socket go; from there on this
protocol object is all a connection costs: no request, no handler task, no reader queue, no timer.
Frames are parsed and checked by its base, `hub.peer_read.FrameReader`; it hands whole messages to
its `Receiver` (one per hub), answers PINGs, and closes one way whoever starts it.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from hub.frames import DROP_LIMIT, TokenBucket, control_frame
from hub.peer_read import ABNORMAL, INVALID_DATA, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameReader

log = logging.getLogger(__name__)

#: how often a closing socket's unsent bytes are checked while its peer has the grace to read them
FLUSH_POLL = 0.05


class Registry(Protocol):
    """What a peer needs of the set it belongs to (`hub.peers.Peers`)."""

    def now(self) -> float:
        """The loop's clock."""

    def discard(self, peer: Peer) -> None:
        """Forget `peer` (its socket is gone)."""

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a close without awaiting it."""


class Receiver(Protocol):
    """What the hub does with a connection's messages and its end (one object serves every peer)."""

    def text(self, peer: Peer, text: str) -> None:
        """A whole text message (inflated, valid UTF-8, within the size limit)."""

    def binary(self, peer: Peer) -> None:
        """A whole binary message."""

    def failed(self, peer: Peer, code: int) -> None:
        """The hub failed the connection with `code` (its Close frame is on the way)."""

    def closed(self, peer: Peer) -> None:
        """The close started, whoever started it: called once, after `start`."""

    def ended(self, peer: Peer) -> None:
        """The socket is gone: called once, after `closed`."""


class Peer(FrameReader):
    """One upgraded connection. Its `close()` is the one way a close goes, whoever starts it: a Close
    frame, then within `grace` seconds the peer may read it (and answer), then the socket is aborted.

    `closed` turns True when the close starts (the hub's or the peer's); `on_closed` is called then.
    """

    __slots__ = ("_dropped", "_ended", "_grace", "_lost", "_peer_closed", "_peers", "_said_closed", "_started",
                 "_waiter", "client", "close_code", "closed", "last_rx", "on_closed", "ping_at", "receiver",
                 "timed_out", "transport", "violation")

    def __init__(self, peers: Registry, receiver: Receiver, *, deflate: bool, limit: int,
                 bucket: TokenBucket | None, grace: float) -> None:
        self.transport: asyncio.Transport | None = None
        self.receiver = receiver
        self.client: Any = None  # hub.client.Client once joined (typed loosely: client imports this module)
        #: True once the close started, whoever started it: no data frame may follow
        self.closed = False
        #: the code of the peer's Close frame (0: it had none), or the hub's when the hub failed it
        self.close_code: int | None = None
        #: True when the heartbeat found the peer dead
        self.timed_out = False
        #: (close code, reason) once the hub failed the connection
        self.violation: tuple[int, str] | None = None
        self.on_closed: Callable[[], None] | None = None
        self.last_rx = 0.0
        #: when the unanswered heartbeat PING was sent (0.0: none outstanding)
        self.ping_at = 0.0
        super().__init__(deflate=deflate, limit=limit, bucket=bucket)
        self._peers = peers
        self._grace = grace
        self._started = False
        self._lost = False
        self._peer_closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._dropped = 0
        self._said_closed = False
        self._ended = False

    # ------------------------------------------------------------------ asyncio.Protocol
    # (pause_writing and resume_writing stay the base's no-ops: fan-out never waits on a peer, it
    # reads the backlog instead; connection_made never comes, hand_over sets the transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._lost = True
        if self.close_code is None and not self.timed_out:
            self.close_code = 1000  # aiohttp read a socket's end as a normal close, reset or not
        self._set_closed()
        self._wake()
        self._peers.discard(self)
        if self._started:
            self._end()

    def eof_received(self) -> bool | None:
        # The peer sent FIN without a Close frame (or after answering ours): close the socket. aiohttp
        # answered a bare EOF with a Close frame of its own and code 1000, so the hub does too.
        if not self.closed and self.close_code is None:
            self.close_code = 1000
            self._reply_close()
        self._peer_closed = self._halt = True
        self._wake()
        return False  # the transport closes itself once its buffer is written

    def data_received(self, data: bytes) -> None:
        self.last_rx = self._peers.now()
        if self.violation is not None or self._peer_closed:
            # Read only to see the peer close: what it still sends is dropped unparsed, and past
            # DROP_LIMIT the connection stops reading for good.
            self._dropped += len(data)
            if self._dropped > DROP_LIMIT:
                self._pause()
            return
        if not self._started:  # the hub is still sending the first message: parsed once it is sent
            self._buf += data
            return
        self._parse(data)

    # ------------------------------------------------------------------ the hub's side

    def start(self, tail: bytes = b"") -> None:
        """Begin reading: `tail` (bytes that came after the upgrade request) first. Calls `ended` now
        if the socket went while the hub was joining it."""
        self._started = True
        self.last_rx = self._peers.now()
        if self.closed:
            self._tell_closed()
        if self._lost:
            self._end()
            return
        if self._halt:  # the peer's Close or FIN came meanwhile: nothing more is read
            return
        held, self._buf = tail + self._buf, b""
        if held:
            self._parse(held)
        t = self.transport
        if t is not None and not self._halt:
            t.resume_reading()

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool:
        """Send a Close frame; within the grace let the peer read it (and, unless the hub failed the
        connection, answer it); then abort what is left. False when a close already ran. `drain` is
        ignored: waiting for a peer that stopped reading is what this replaces."""
        if self.closed:
            return False
        self._set_closed()
        if not message and self.violation is not None:
            message = self.violation[1].encode()[:120]
        t = self.transport
        if t is None:
            return False
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(loop.time() + self._grace):
                if not t.is_closing():
                    t.write(control_frame(OP_CLOSE, struct.pack("!H", code) + message))
                    if self.violation is not None:
                        # The input is unread (a flood the hub stopped reading), and closing such a
                        # socket makes the kernel send RST, which can discard the Close frame before the
                        # peer reads it: FIN after the queued bytes instead, and read (dropping) until
                        # the peer's FIN. TLS cannot half-close: closed after the queued bytes then.
                        if t.can_write_eof():
                            t.write_eof()
                            self._resume()
                        else:
                            t.close()
                    elif not self._peer_closed:
                        self._waiter = loop.create_future()
                        await self._waiter  # the peer's Close (or its end)
                    if not t.is_closing() and self.violation is None:
                        t.close()
                while t.get_write_buffer_size() or (self.violation is not None and not self._lost):
                    await asyncio.sleep(FLUSH_POLL)
        except TimeoutError:
            if self.close_code is None:
                self.close_code = ABNORMAL
        finally:
            self._waiter = None
            if not t.is_closing() or t.get_write_buffer_size():
                t.abort()
        return True

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection with `code` (RFC 6455 7.1.7): nothing more is parsed; a Close goes out."""
        if self.violation is not None:
            return
        self.violation = (code, reason)
        self.close_code = code
        self._halt = True
        self._buf = b""
        self._frag = []
        self._pause()
        if self.closed:  # a close is under way already: it ends the socket within its grace
            return
        self.receiver.failed(self, code)
        self._peers.spawn(self.close(code=code))

    def heartbeat(self, now: float, interval: float) -> None:
        """Called by the sweep: PING a peer silent for `interval`; drop one silent `interval/2` after it."""
        if self.closed or self.transport is None:
            return
        if self.ping_at:
            if self.last_rx >= self.ping_at:
                self.ping_at = 0.0
            elif now - self.ping_at >= interval / 2:
                # aiohttp's way: no Close frame to a peer that answers nothing; the socket goes at once.
                self.timed_out = True
                self.close_code = ABNORMAL
                self._set_closed()
                t = self.transport
                t.close()
                if t.get_write_buffer_size():
                    t.abort()
                return
        if not self.ping_at and now - self.last_rx >= interval:
            self.ping_at = now
            self.transport.write(control_frame(OP_PING))

    # ------------------------------------------------------------------ internals

    def _set_closed(self) -> None:
        if not self.closed:
            self.closed = True
            if self.on_closed is not None:
                self.on_closed()
            if self._started:
                self._tell_closed()

    def _tell_closed(self) -> None:
        if not self._said_closed:
            self._said_closed = True
            self._tell(self.receiver.closed, "closing")

    def _tell(self, hook: Callable[[Peer], None], what: str) -> None:
        try:
            hook(self)
        except Exception:  # one connection's bookkeeping never takes the loop down
            log.exception("%s a WebSocket connection failed", what)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._inflater = None
            self._tell(self.receiver.ended, "ending")

    def _pause(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.pause_reading()

    def _resume(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.resume_reading()

    def _reply_close(self) -> None:
        """Answer the peer's Close (or bare FIN) with a Close(1000); the hub then closes the socket."""
        self._set_closed()
        t = self.transport
        if t is None or t.is_closing():
            return
        t.write(control_frame(OP_CLOSE, struct.pack("!H", 1000)))
        t.close()
        if t.get_write_buffer_size():  # a peer that stopped reading would hold its backlog forever
            t.abort()

    def _on_ping(self, payload: bytes) -> None:
        client = self.client
        if client is not None and client.can_send():
            client.send_prepared(control_frame(OP_PONG, payload))

    def _on_message(self, kind: int, message: bytes) -> None:
        if self.closed:
            return  # closing: data is read only to find the peer's Close
        if kind == OP_TEXT:
            try:
                text = message.decode("utf-8")
            except UnicodeDecodeError:
                return self.fail(INVALID_DATA, "Invalid UTF-8 text message")
            self.receiver.text(self, text)
        else:
            self.receiver.binary(self)

    def _on_close(self, code: int) -> None:
        self._peer_closed = self._halt = True
        if self.close_code is None:
            self.close_code = code
        if self.closed:  # the peer answered the hub's Close
            self._wake()
            return
        self._reply_close()
