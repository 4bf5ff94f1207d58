"""The one module that reaches into aiohttp's WebSocket internals.

Four things aiohttp has no public hook for: answering permessage-deflate with
server_no_context_takeover, checking every client frame from the first byte after the upgrade
(bytes that arrived with the upgrade request included), one bounded way to close, and a callback
when `closed` turns True. The private
names used here are listed in `PRIVATE`; pyproject.toml pins aiohttp below the next minor release,
and tests/integration/test_aiohttp_ws.py fails when any of them changes underneath.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

from aiohttp import WSCloseCode, web
from aiohttp.web_protocol import RequestHandler

from hub.frames import FrameGuard, TokenBucket

#: what this module relies on: (owner, attribute)
PRIVATE = ((RequestHandler, "_message_tail"), (RequestHandler, "_payload_parser"), (RequestHandler, "_parser"),
           (RequestHandler, "_messages"),
           (web.WebSocketResponse, "_handshake"), (web.WebSocketResponse, "_post_start"),
           (web.WebSocketResponse, "_reader"), (web.WebSocketResponse, "_close_transport"),
           (web.WebSocketResponse, "_set_closed"))
#: WebSocketResponse's attributes with class-level defaults that it assigns after __init__ (heartbeat,
#: reader, close state): kept in HubWebSocket's slots (see there)
LAZY = ("_ws_protocol", "_writer", "_reader", "_parser", "_closed", "_closing", "_conn_lost", "_close_code", "_loop",
        "_waiting", "_close_wait", "_exception", "_heartbeat_when", "_heartbeat_cb", "_pong_response_cb",
        "_ping_task", "_need_heartbeat_reset", "_heartbeat_reset_handle")
#: how often a closing socket's unsent bytes are checked while its peer has the grace to read them
FLUSH_POLL = 0.05
#: the HTTP message queue every upgraded connection shares: always empty (maxlen 0), because once
#: the upgrade is accepted nothing parses HTTP on that connection again
_NO_MESSAGES: collections.deque[Any] = collections.deque(maxlen=0)


def _without_duplicated_parameters(offers: str) -> str:
    """`offers` (a Sec-WebSocket-Extensions value) without the permessage-deflate offers that repeat
    a parameter: RFC 7692 7.1 makes such an offer invalid, and the server must decline it."""
    kept = []
    for offer in offers.split(","):  # aiohttp splits offers at every comma too
        name, *params = (p.strip() for p in offer.split(";"))
        names = [p.split("=", 1)[0].strip() for p in params]
        if name == "permessage-deflate" and len(set(names)) != len(names):
            continue
        kept.append(offer)
    return ",".join(kept)


class HubWebSocket(web.WebSocketResponse):
    """aiohttp's WebSocketResponse with the hub's three rules.

    - Always answers permessage-deflate with server_no_context_takeover: broadcast frames are
      compressed once and written raw to every client, so no message may depend on an earlier one
      (RFC 7692 7.1.1.1 lets a server add this parameter on its own). An offer that repeats a
      parameter is declined (RFC 7692 7.1); a later valid offer may still be accepted.
    - A `FrameGuard` sees every byte the client sends after the upgrade, including bytes that came
      in the same segment as the upgrade request, and rate-limits frames before they are parsed.
    - Every close goes one way, whoever starts it (the hub's evictions and violations, aiohttp's
      own 1002/1007/1009, a peer's Close): send the Close frame, give the peer `close_grace`
      seconds to read it (and answer), then abort the transport. Nothing waits on a peer that
      stopped reading, so its slot, its unsent bytes and the gauge are released in bounded time.
    """

    # Memory per connection: CPython (3.11) shares an instance dict's keys between instances up to
    # 29 keys; past that each connection's dict is a private table of 1.6 KB instead of 0.3 KB.
    # aiohttp alone reaches 29 once upgraded and more after a heartbeat or a close, so the hub's own
    # attributes and those aiohttp assigns after __init__ over class-level defaults live in slots,
    # each starting at that default (the same value reading the class gave).
    __slots__ = ("_rate", "_transport", "close_grace", "guard", "on_closed", *LAZY)

    def __init__(self, *, close_grace: float, rate: tuple[float, int] | None = None, **kwargs: Any) -> None:
        for name in LAZY:
            setattr(self, name, getattr(web.WebSocketResponse, name))
        super().__init__(timeout=close_grace, **kwargs)
        self.close_grace = close_grace
        self._rate = rate
        self.guard: FrameGuard | None = None
        self._transport: asyncio.Transport | None = None
        #: called once when the close starts (`closed` turns True), whoever starts it
        self.on_closed: Callable[[], None] | None = None

    def _set_closed(self) -> None:
        # aiohttp's one place that turns `closed` True (its close, a reader error, a ping failure):
        # the client's `sending` flag follows it, so fan-out reads a slot instead of a property.
        super()._set_closed()
        if self.on_closed is not None:
            self.on_closed()

    def _handshake(self, request):  # type: ignore[no-untyped-def]
        headers, protocol, compress, notakeover = super()._handshake(request)
        if compress:
            from aiohttp.http_websocket import ws_ext_gen, ws_ext_parse

            offers = request.headers.get("Sec-WebSocket-Extensions", "")
            valid = _without_duplicated_parameters(offers)
            if valid != offers:  # aiohttp took the first offer it could parse, duplicates or not
                compress, _ = ws_ext_parse(valid, isserver=True)
        if compress:
            headers["Sec-WebSocket-Extensions"] = ws_ext_gen(compress=compress, isserver=True,
                                                             server_notakeover=True)
            notakeover = True
        else:
            headers.popall("Sec-WebSocket-Extensions", None)
            notakeover = False
        return headers, protocol, compress, notakeover

    def _post_start(self, request, protocol, writer):  # type: ignore[no-untyped-def]
        handler = request.protocol
        # Bytes that arrived with the upgrade request wait in `_message_tail`; aiohttp feeds them to
        # its parser inside _post_start. Take them first, so the guard sees them as it sees the rest.
        tail, handler._message_tail = handler._message_tail, b""
        super()._post_start(request, protocol, writer)
        self._transport = request.transport
        # Memory per connection: an accepted upgrade never parses HTTP again, so its HTTP parser
        # goes now instead of at connection_lost (where aiohttp drops it too) and its message queue
        # (a deque block each) becomes one shared empty queue; the 101's headers were written and
        # nothing reads them again.
        handler._parser = None
        if not handler._messages:  # a pipelined request after the upgrade would wait here: keep it
            handler._messages = _NO_MESSAGES
        self.headers.clear()
        bucket = TokenBucket(*self._rate) if self._rate is not None else None
        self.guard = FrameGuard(handler._payload_parser, self._reader, bucket=bucket, on_fail=self._violated,
                                on_flood=self._stop_reading)
        handler._payload_parser = self.guard
        if tail:
            self.guard.feed_data(tail)

    def _violated(self, code: int, reason: str) -> None:
        # Nothing more from this peer is read until the close: a flood stops costing the loop at once.
        self._stop_reading()

    def _stop_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def _close_transport(self) -> None:
        # aiohttp's last step of every close. After a violation the input is unread (a flood the
        # guard stopped reading), and closing such a socket makes the kernel send RST, which can
        # discard the Close frame before the peer reads it: then a lingering close instead, FIN
        # after the queued bytes and the socket kept, until the peer closes or `close()`'s grace
        # ends (the handler's end aborts it too).
        t = self._transport
        if t is None or t.is_closing():
            return
        if self.lingering and t.can_write_eof():
            t.write_eof()
            # Read again, to see the peer's FIN; the guard drops what comes, and a peer still
            # flooding is stopped again after DROP_LIMIT bytes (the grace then ends it).
            t.resume_reading()
        else:
            t.close()

    @property
    def lingering(self) -> bool:
        """True once the guard failed the connection: its close waits for the peer's FIN."""
        return self.guard is not None and self.guard.violation is not None

    @property
    def transport(self) -> asyncio.Transport | None:
        """The connection's transport once upgraded (None before)."""
        return self._transport

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        """Send a Close frame; within `close_grace` seconds let the peer read it (and, unless the
        guard failed the connection, answer it); then abort whatever is left. `drain` is ignored:
        waiting for a peer that stopped reading is what this replaces."""
        if self.closed:
            return False  # another close runs (or ran) this path; its grace is not cut short
        if not message and self.guard is not None and self.guard.violation is not None:
            message = self.guard.violation[1].encode()[:120]
        t = self._transport
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.close_grace
        result = True
        try:
            async with asyncio.timeout_at(deadline):
                result = await super().close(code=code, message=message, drain=False)
                # The transport flushes what is queued, then closes (or, lingering, sends FIN and
                # waits for the peer's): the peer gets until the grace to read it.
                while t is not None and (t.get_write_buffer_size() or (self.lingering and not t.is_closing())):
                    await asyncio.sleep(FLUSH_POLL)
        except TimeoutError:
            pass
        finally:
            if t is not None and (not t.is_closing() or t.get_write_buffer_size()):
                t.abort()
        return result
