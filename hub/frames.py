"""WebSocket frames on the wire: prepared server frames, messages assembled from pieces compressed
once, and the client frame rate limit."""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Callable, Iterable

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
