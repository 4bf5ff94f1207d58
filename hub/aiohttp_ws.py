"""The one module that reaches into aiohttp's WebSocket internals: the handshake, then the hand-over.

aiohttp answers the upgrade (its checks, its 101, the app's response signals). Two things it has no
public hook for: answering permessage-deflate with server_no_context_takeover, and letting the
socket go once the 101 is written, so that a connection costs the hub's own `Peer` and nothing of
aiohttp's (request, handler task, reader queue, parser, heartbeat timer). The private names used
here are listed in `PRIVATE`; pyproject.toml pins aiohttp below the next minor release, and
tests/integration/test_aiohttp_ws.py fails when any of them, or the hand-over, changes underneath.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from hub.peer import Peer

#: what this module relies on: (owner, attribute)
PRIVATE = ((RequestHandler, "_message_tail"),
           (web.WebSocketResponse, "_handshake"), (web.WebSocketResponse, "_post_start"))


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


class Handshake(web.WebSocketResponse):
    """aiohttp's WebSocket handshake with the hub's rule for permessage-deflate, and nothing after it.

    - Always answers permessage-deflate with server_no_context_takeover: broadcast frames are
      compressed once and written raw to every client, so no message may depend on an earlier one
      (RFC 7692 7.1.1.1 lets a server add this parameter on its own). An offer that repeats a
      parameter is declined (RFC 7692 7.1); a later valid offer may still be accepted.
    - Once the 101 is written it installs no reader, writer or heartbeat: `hand_over` gives the
      socket to a `Peer`. Bytes that arrive meanwhile stay in aiohttp's upgrade tail, which
      `hand_over` takes, so the peer sees every byte the client sent after its request.
    """

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
        # No reader, no writer, no heartbeat: the socket is handed over. Reading pauses until the
        # peer starts (after the first message is sent), so a flood waits in the kernel meanwhile.
        transport = request.transport
        if transport is not None:
            transport.pause_reading()

    @property
    def window_bits(self) -> int:
        """The negotiated permessage-deflate window bits; 0 without it."""
        return int(self.compress or 0)


def hand_over(request: web.BaseRequest, peer: Peer) -> bytes | None:
    """Give the upgraded connection of `request` to `peer`: the bytes the client sent after its
    upgrade request (for `peer.start`), or None when the connection was lost already.

    From here every byte and the connection's end go to `peer`, and aiohttp can no longer write to
    or close the socket. The handler must call `let_go` before it returns.
    """
    handler = request.protocol
    transport = request.transport
    assert isinstance(handler, RequestHandler)
    if transport is None or transport.is_closing():
        return None
    peer.transport = transport
    transport.set_protocol(peer)
    # What came before the hand-over waits in aiohttp's upgrade tail.
    tail = bytes(handler._message_tail)
    handler._message_tail = b""
    handler.transport = None  # aiohttp's force_close would close the socket it no longer owns
    return tail


def let_go(request: web.BaseRequest) -> None:
    """Have aiohttp release a handed-over connection (its manager's entry, parser, keep-alive timer,
    request): its `connection_lost`. Call it last: the handler's response is then never written
    (return one not yet prepared), and with handler_cancellation (aiohttp's test server) the
    handler's task is cancelled, which is harmless once it returns."""
    handler = request.protocol
    assert isinstance(handler, RequestHandler)
    handler.connection_lost(None)
