"""Client WebSocket frames in: parsed and checked as they arrive (RFC 6455 5-7, RFC 7692 inflation).

`FrameReader` is the receiving half of `hub.peer.Peer`: it turns bytes into whole messages, PINGs
and a Close, and fails the connection on the first frame the RFCs (or the hub's limits) forbid,
with aiohttp's codes and messages. What happens next is the peer's.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

from hub.frames import DEFLATE_TAIL, POLICY_VIOLATION, TokenBucket, valid_close_code

PROTOCOL_ERROR = 1002
UNSUPPORTED_DATA = 1003
ABNORMAL = 1006
INVALID_DATA = 1007
TOO_LARGE = 1009

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_OPCODES = frozenset((OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))


def unmask(data: bytes, key: bytes) -> bytes:
    """`data` XOR the repeated 4-byte `key` (RFC 6455 5.3), in one big-integer operation."""
    n = len(data)
    if not n:
        return b""
    pad = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(pad, "little")).to_bytes(n, "little")


class FrameReader(asyncio.Protocol):
    """Parses client frames; subclasses act on them (`_on_ping`, `_on_message`, `_on_close`, `fail`).

    Every frame counts against the rate limit once, as its header arrives and before its payload is
    read. Once `_halt` is set (a failure, the peer's Close) nothing more is parsed.
    """

    __slots__ = ("_bucket", "_buf", "_counted", "_deflate", "_frag", "_frag_deflated", "_frag_size", "_halt",
                 "_inflater", "_limit", "_op")

    def __init__(self, *, deflate: bool, limit: int, bucket: TokenBucket | None) -> None:
        self._deflate = deflate
        self._limit = limit
        self._bucket = bucket
        self._halt = False
        self._buf = b""
        self._counted = False  # the frame at the buffer's start passed the header checks (and the rate limit)
        self._op = -1  # opcode of the fragmented message in progress (-1: none)
        self._frag: list[bytes] = []
        self._frag_size = 0
        self._frag_deflated = False
        self._inflater: Any = None  # created at the first compressed message (as aiohttp does)

    # ------------------------------------------------------------------ what a subclass does

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection with `code`; must set `_halt`."""
        raise NotImplementedError

    def _on_ping(self, payload: bytes) -> None:
        raise NotImplementedError

    def _on_message(self, kind: int, message: bytes) -> None:
        """A whole message: OP_TEXT (bytes not yet decoded) or OP_BINARY, inflated, within the limit."""
        raise NotImplementedError

    def _on_close(self, code: int) -> None:
        """The peer's valid Close frame (`code` 0 when it had none); must set `_halt`."""
        raise NotImplementedError

    # ------------------------------------------------------------------ parsing

    def _parse(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        self._buf = b""
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            if not b1 & 0x80:
                return self.fail(PROTOCOL_ERROR, "client frames must be masked")
            n = b1 & 0x7F
            head = 14 if n == 127 else 8 if n == 126 else 6
            if end - pos < head:
                break
            if n == 126:
                n = int.from_bytes(buf[pos + 2:pos + 4], "big")
            elif n == 127:
                n = int.from_bytes(buf[pos + 2:pos + 10], "big")
            if not self._counted:
                # Every frame counts against the rate limit once, control frames and continuations too.
                if self._bucket is not None and not self._bucket.take():
                    return self.fail(POLICY_VIOLATION, "message rate limit exceeded")
                problem = self._check(b0, n)
                if problem is not None:
                    return self.fail(*problem)
                self._counted = True
            if end - pos < head + n:
                break
            self._counted = False
            payload = unmask(buf[pos + head:pos + head + n], buf[pos + head - 4:pos + head])
            pos += head + n
            self._frame(b0, payload)
            if self._halt:
                return
        if pos < end:
            self._buf = buf[pos:]

    def _check(self, b0: int, n: int) -> tuple[int, str] | None:
        """What is wrong with a frame header (aiohttp's checks and messages), or None."""
        fin, rsv1, opcode = b0 & 0x80, b0 & 0x40, b0 & 0x0F
        if b0 & 0x30 or (rsv1 and not self._deflate):
            return PROTOCOL_ERROR, "Received frame with non-zero reserved bits"
        if opcode not in _OPCODES:
            return PROTOCOL_ERROR, f"Unexpected opcode={opcode!r}"
        if opcode >= OP_CLOSE:
            if not fin:
                return PROTOCOL_ERROR, "Received fragmented control frame"
            if n > 125:
                return PROTOCOL_ERROR, "Control frame payload cannot be larger than 125 bytes"
            return None
        if opcode == OP_CONT:
            if self._op < 0:
                return PROTOCOL_ERROR, "Continuation frame for non started message"
            if rsv1:  # RFC 7692 6.1: only the first frame of a message carries RSV1
                return PROTOCOL_ERROR, "Received frame with non-zero reserved bits"
        elif self._op >= 0:
            return PROTOCOL_ERROR, f"The opcode in non-fin frame is expected to be zero, got {opcode!r}"
        if self._frag_size + n > self._limit:
            return TOO_LARGE, f"Message size {self._frag_size + n} exceeds limit {self._limit}"
        return None

    def _frame(self, b0: int, payload: bytes) -> None:
        opcode = b0 & 0x0F
        if opcode == OP_PING:
            self._on_ping(payload)
            return
        if opcode == OP_PONG:
            return  # a heartbeat reply: the peer noted the bytes when they arrived
        if opcode == OP_CLOSE:
            self._close_frame(payload)
            return
        if opcode != OP_CONT:
            self._op, self._frag_deflated = opcode, bool(b0 & 0x40)
        self._frag_size += len(payload)
        if not b0 & 0x80:
            self._frag.append(payload)
            return
        parts, self._frag = self._frag, []
        kind, deflated = self._op, self._frag_deflated
        self._op, self._frag_size = -1, 0
        message = b"".join((*parts, payload)) if parts else payload
        if deflated:
            inflated = self._inflate(message)
            if inflated is None:
                return
            message = inflated
        self._on_message(kind, message)

    def _inflate(self, message: bytes) -> bytes | None:
        if self._inflater is None:
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            out = self._inflater.decompress(message + DEFLATE_TAIL, self._limit + 1)
        except zlib.error:
            self.fail(PROTOCOL_ERROR, "Invalid compressed message")
            return None
        if len(out) > self._limit or self._inflater.unconsumed_tail:
            self.fail(TOO_LARGE, f"Decompressed message exceeds size limit {self._limit}")
            return None
        return out

    def _close_frame(self, payload: bytes) -> None:
        if len(payload) == 1:
            return self.fail(PROTOCOL_ERROR, f"Invalid close frame: {payload!r}")
        code = 0
        if payload:
            code = int.from_bytes(payload[:2], "big")
            if not valid_close_code(code):
                return self.fail(PROTOCOL_ERROR, f"invalid close code {code}")
            try:
                payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                return self.fail(INVALID_DATA, "Invalid UTF-8 text message")
        self._on_close(code)
