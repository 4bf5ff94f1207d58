"""WebSocket frames on the wire: prepared server frames, messages assembled from pieces compressed
once, and a guard that checks (and rate-limits) every frame a client sends from its first byte."""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import WSCloseCode
from aiohttp.http_websocket import WebSocketError

#: the four bytes every Z_SYNC_FLUSH ends with; RFC 7692 7.2.1 has the sender drop them
DEFLATE_TAIL = b"\x00\x00\xff\xff"
#: every window size a client may negotiate is served by one of these two (see `snap_window`)
WINDOWS = (15, 9)
STORED_MAX = 0xFFFF
POLICY_VIOLATION = 1008
#: bytes a failed connection may still send (read and dropped) while its close lingers
DROP_LIMIT = 64 * 1024


def text_frame(payload: bytes, *, compressed: bool = False) -> bytes:
    """One unmasked, final WebSocket text frame (RFC 6455 5.2); RSV1 set when `compressed` (RFC 7692)."""
    return _frame(0xC1 if compressed else 0x81, payload)


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    """An unmasked control frame (PONG 0xA, CLOSE 0x8); never compressed (RFC 7692 6.1)."""
    return _frame(0x80 | opcode, payload[:125])


def _frame(first: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


def snap_window(bits: int) -> int:
    """The window a client negotiating `bits` is served with: 15, or 9 for any smaller offer.

    A message compressed with a window of w bits inflates with any window >= w, so two windows
    serve all seven sizes a client may ask for (9..15): compression work per snapshot is bounded
    by two passes over it, whatever the clients choose.
    """
    return 15 if bits >= 15 else 9


class Deflated(bytes):
    """A piece compressed on its own (no reference before its start) and ended by a sync flush.

    Such pieces, and stored blocks between them, concatenate into one valid DEFLATE stream: a
    message is assembled from pieces compressed once, never recompressed per topic set or join.
    """

    __slots__ = ()


def deflate_piece(*parts: bytes, window_bits: int = 15, level: int = 6) -> Deflated:
    """`parts`, concatenated, compressed with a fresh window and ended with Z_SYNC_FLUSH."""
    c = zlib.compressobj(level, zlib.DEFLATED, -window_bits)
    out = [c.compress(p) for p in parts]
    out.append(c.flush(zlib.Z_SYNC_FLUSH))
    return Deflated(b"".join(out))


def stored_blocks(data: bytes) -> bytes:
    """`data` as non-final stored DEFLATE blocks (RFC 1951 3.2.4), starting on a byte boundary."""
    out = []
    for i in range(0, len(data), STORED_MAX):
        chunk = data[i:i + STORED_MAX]
        out.append(b"\x00" + struct.pack("<HH", len(chunk), len(chunk) ^ 0xFFFF) + chunk)
    return b"".join(out)


def deflated_message(segments: Iterable[bytes]) -> bytes:
    """A permessage-deflate payload from `segments`: `Deflated` pieces as they are, other bytes as
    stored blocks; the trailing 00 00 ff ff dropped as RFC 7692 7.2.1 asks (the receiver adds it)."""
    out: list[bytes] = []
    glue: list[bytes] = []
    last_deflated = False
    for seg in segments:
        if type(seg) is Deflated:
            if glue:
                out.append(stored_blocks(b"".join(glue)))
                glue = []
            out.append(seg)
            last_deflated = True
        elif seg:
            glue.append(seg)
            last_deflated = False
    if glue:
        out.append(stored_blocks(b"".join(glue)))
    msg = b"".join(out)
    # Ending on a piece: its sync flush is the empty stored block to drop. Ending on stored data:
    # open an empty stored block (one 0 byte) whose LEN/NLEN the receiver's 00 00 ff ff completes.
    return msg[:-4] if last_deflated else msg + b"\x00"


def deflate_message(payload: bytes, *, window_bits: int = 15, level: int = 6) -> bytes:
    """`payload` compressed on its own, with an empty window (RFC 7692 7.2.1)."""
    return deflated_message([deflate_piece(payload, window_bits=window_bits, level=level)])


def prepared_frame(payload: bytes, window_bits: int) -> bytes:
    """The frame for a client that negotiated `window_bits` (0: no permessage-deflate)."""
    if not window_bits:
        return text_frame(payload)
    return text_frame(deflate_message(payload, window_bits=snap_window(window_bits)), compressed=True)


def valid_close_code(code: int) -> bool:
    """RFC 6455 7.4: codes a peer may send (1004-1006 and 1015 are reserved, 5000+ undefined)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class TokenBucket:
    """Client frame rate limit: `rate` per second with bursts up to `burst`."""

    __slots__ = ("burst", "clock", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, float(burst), clock
        self.tokens, self.stamp = float(burst), clock()

    def take(self) -> bool:
        """Spend one token; False when the bucket is empty."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class FrameGuard:
    """Sits in front of aiohttp's WebSocket reader, from the first byte after the upgrade, and fails
    the connection on a client frame aiohttp lets through (unmasked, RFC 6455 5.1; a reserved close
    code, 7.4: 1002) or one frame too many for the rate limit (every frame counts, control frames
    and continuations included: 1008).

    It reads only frame headers (and a close frame's first two bytes). Once failed it drops every
    later byte unparsed, so a flood costs nothing more than the receive itself.
    """

    def __init__(self, reader: Any, queue: Any, *, bucket: TokenBucket | None = None,
                 on_fail: Callable[[int, str], None] | None = None,
                 on_flood: Callable[[], None] | None = None) -> None:
        self.reader = reader
        self.queue = queue  # the response's message queue, which receive() reads
        self.bucket = bucket
        self.on_fail = on_fail
        #: called when more than DROP_LIMIT bytes arrived after the failure (stop reading them)
        self.on_flood = on_flood
        self.dropped = 0
        #: (close code, reason) once the guard failed the connection
        self.violation: tuple[int, str] | None = None
        self._buf = b""
        self._skip = 0  # payload bytes of the current frame still to pass over

    def feed_eof(self) -> None:
        self.reader.feed_eof()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self.violation is not None:
            # Read only to see the peer close: what it still sends is dropped unparsed, and past
            # DROP_LIMIT the connection stops reading for good.
            self.dropped += len(data)
            if self.dropped > DROP_LIMIT and self.on_flood is not None:
                self.on_flood()
            return False, b""
        data = bytes(data)
        found, ok = self._scan(data)
        if found is None:
            return self.reader.feed_data(data)
        self.violation = found
        self._buf = b""
        if ok:
            self.reader.feed_data(data[:ok])  # the frames before the offending one are answered
        if self.on_fail is not None:
            self.on_fail(*found)
        # aiohttp answers a WebSocketError from its reader by closing with its code
        # (HubWebSocket.close, which never waits on the peer for long).
        self.queue.set_exception(WebSocketError(*found))
        return False, b""

    def _scan(self, data: bytes) -> tuple[tuple[int, str] | None, int]:
        """Check every frame header in `data`: (the violation or None, bytes before the offending frame)."""
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            had = len(self._buf)
            # A header is at most 14 bytes, plus a close frame's 2-byte code: 16 bytes decide it.
            view = self._buf + data[pos:pos + 16]
            parsed = self._header(view)
            if parsed is None:  # the header continues in the next segment
                self._buf = view
                return None, end
            violation, head, length = parsed
            if violation is not None:
                return violation, max(0, pos - had)
            pos += head - had
            self._buf = b""
            self._skip = length
        return None, end

    def _header(self, view: bytes) -> tuple[tuple[int, str] | None, int, int] | None:
        """(violation, header length, payload length) of the frame starting `view`; None if incomplete."""
        if len(view) < 2:
            return None
        if not view[1] & 0x80:
            return (WSCloseCode.PROTOCOL_ERROR, "client frames must be masked"), 0, 0
        n = view[1] & 0x7F
        ext = 2 if n == 126 else 8 if n == 127 else 0
        head = 2 + ext + 4
        if len(view) < head:
            return None
        if ext:
            n = int.from_bytes(view[2:2 + ext], "big")
        if view[0] & 0x0F == 0x8 and n >= 2:
            if len(view) < head + 2:
                return None
            key = view[head - 4:head]
            code = ((view[head] ^ key[0]) << 8) | (view[head + 1] ^ key[1])
            if not valid_close_code(code):
                return (WSCloseCode.PROTOCOL_ERROR, f"invalid close code {code}"), 0, 0
        if self.bucket is not None and not self.bucket.take():
            return (POLICY_VIOLATION, "message rate limit exceeded"), 0, 0
        return None, head, n
