"""WebSocket frames on the wire: prepared (and compressed) server frames, and a guard on what clients send."""

from __future__ import annotations

import struct
import zlib
from typing import Any

from aiohttp import WSCloseCode
from aiohttp.http_websocket import WebSocketError

#: the four bytes every Z_SYNC_FLUSH ends with; RFC 7692 7.2.1 has the sender drop them
DEFLATE_TAIL = b"\x00\x00\xff\xff"


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


def valid_close_code(code: int) -> bool:
    """RFC 6455 7.4: codes a peer may send (1004-1006 and 1015 are reserved, 5000+ undefined)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class FrameGuard:
    """Sits in front of aiohttp's WebSocket reader and fails the connection with 1002 on a client
    frame aiohttp lets through: an unmasked frame (RFC 6455 5.1) or a reserved close code (7.4).

    It only reads frame headers (and a close frame's first two bytes), so it costs next to nothing.
    """

    def __init__(self, reader: Any, queue: Any) -> None:
        self.reader = reader
        self.queue = queue  # the response's message queue, which receive() reads
        self._buf = b""
        self._skip = 0  # payload bytes of the current frame still to pass over
        self._failed = False

    def feed_eof(self) -> None:
        self.reader.feed_eof()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._failed:
            return False, b""
        error = self._scan(bytes(data))
        if error is not None:
            self._failed = True
            # aiohttp answers a WebSocketError from its reader with a Close frame carrying its code.
            self.queue.set_exception(WebSocketError(WSCloseCode.PROTOCOL_ERROR, error))
            return False, b""
        return self.reader.feed_data(data)

    def _scan(self, data: bytes) -> str | None:
        while data:
            if self._skip:
                step = min(self._skip, len(data))
                self._skip -= step
                data = data[step:]
                continue
            self._buf += data
            data = b""
            buf = self._buf
            if len(buf) < 2:
                return None
            masked, n = buf[1] & 0x80, buf[1] & 0x7F
            ext = 2 if n == 126 else 8 if n == 127 else 0
            head = 2 + ext + 4
            if not masked:
                return "client frames must be masked"
            opcode = buf[0] & 0x0F
            if len(buf) < head:
                return None
            if ext:
                n = int.from_bytes(buf[2:2 + ext], "big")
            if opcode == 0x8 and n >= 2:
                if len(buf) < head + 2:
                    return None
                key = buf[head - 4:head]
                code = ((buf[head] ^ key[0]) << 8) | (buf[head + 1] ^ key[1])
                if not valid_close_code(code):
                    return f"invalid close code {code}"
            self._buf = b""
            rest = buf[head:]
            self._skip = n
            data = rest
        return None
