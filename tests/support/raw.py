"""Raw-socket WebSocket clients and small test sources, shared by the in-process and system tests."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

from hub.sources.base import Source, SourceResult


class BulkySource(Source):
    """Fills data.business with ~`size` bytes per tick, so a backlog builds quickly."""

    name = "bulky"
    sections = ("business",)
    timeout = 1.0

    def __init__(self, size: int) -> None:
        self.size = size

    async def collect(self, budget: float) -> SourceResult:
        return SourceResult(data={"business": {"pad": "x" * self.size}})


class GateSource(Source):
    """Blocks every collection until `gate` is set (to observe the hub before its first tick)."""

    name = "gate"
    sections = ()
    timeout = 30.0

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def collect(self, budget: float) -> SourceResult:
        await self.gate.wait()
        return SourceResult(data={})


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    """One client frame (RFC 6455 5.2), masked as clients must unless `masked` is False."""
    head = bytes([(0x80 if fin else 0) | (rsv & 7) << 4 | opcode & 0xF])
    n = len(payload)
    mbit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 1 << 16:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def upgrade_request(port: int, path: str = "/ws") -> bytes:
    """The bytes of a minimal WebSocket upgrade request (no extensions, no token)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def raw_ws_connect(port: int, *, rcvbuf: int | None = None, path: str = "/ws", with_request: bytes = b"") -> socket.socket:
    """A WebSocket client on a bare socket: it never answers pings and reads only when told to.

    `with_request` is sent in the same write as the upgrade request (frames that arrive before the 101).
    """
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(upgrade_request(port, path) + with_request)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "server closed during handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def read_frames_until_close(sock: socket.socket, *, timeout: float) -> tuple[int | None, int]:
    """Read frames off `sock` until a close frame: (its code or None if the socket just ended, bytes read)."""
    sock.settimeout(timeout)
    buf = b""
    total = 0

    def need(n: int) -> bool:
        nonlocal buf, total
        while len(buf) < n:
            chunk = sock.recv(1 << 16)
            if not chunk:
                return False
            buf += chunk
            total += len(chunk)
        return True

    while True:
        if not need(2):
            return None, total
        opcode, length = buf[0] & 0x0F, buf[1] & 0x7F
        hdr = 2
        if length == 126:
            if not need(4):
                return None, total
            length, hdr = struct.unpack("!H", buf[2:4])[0], 4
        elif length == 127:
            if not need(10):
                return None, total
            length, hdr = struct.unpack("!Q", buf[2:10])[0], 10
        if not need(hdr + length):
            return None, total
        payload, buf = buf[hdr:hdr + length], buf[hdr + length:]
        if opcode == 0x8:
            return (struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None), total


class FakeTransport(asyncio.Transport):
    """An in-memory transport for measuring the broadcast loop alone (no sockets involved)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


class RecordingTransport(FakeTransport):
    """A FakeTransport that keeps what was written, for decoding the frames a client was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def write(self, data: bytes) -> None:  # type: ignore[override]
        super().write(data)
        self.data += data


def server_messages(data: bytes, *, window_bits: int = 15) -> list[dict[str, object]]:
    """Every text message in a stream of server frames, inflated when RSV1 is set (RFC 7692)."""
    import zlib

    import orjson

    out: list[dict[str, object]] = []
    i = 0
    while i < len(data):
        first, n = data[i], data[i + 1] & 0x7F
        hdr = 2
        if n == 126:
            n, hdr = struct.unpack("!H", data[i + 2:i + 4])[0], 4
        elif n == 127:
            n, hdr = struct.unpack("!Q", data[i + 2:i + 10])[0], 10
        payload = bytes(data[i + hdr:i + hdr + n])
        i += hdr + n
        if first & 0x0F != 0x1:
            continue
        if first & 0x40:
            payload = zlib.decompressobj(-window_bits).decompress(payload + b"\x00\x00\xff\xff")
        out.append(orjson.loads(payload))
    return out

def raw_http_get(port: int, path: str, *, rcvbuf: int | None = None,
                 headers: dict[str, str] | None = None) -> socket.socket:
    """Send `GET path` on a bare socket (with a small receive buffer: a slow reader); read nothing yet."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode())
    return sock


def read_head(sock: socket.socket, *, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """The response's status, headers (lower-case names) and the body bytes read along with them."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        assert chunk, f"server closed before the end of the headers: {buf[:200]!r}"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(":", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.strip().lower(): v.strip() for k, v in fields.items()}, rest


def read_body(sock: socket.socket, headers: dict[str, str], rest: bytes, *, timeout: float) -> bytes:
    """The rest of the body (Content-Length, chunked, or until the server closes), not decompressed."""
    sock.settimeout(timeout)
    buf = bytearray(rest)

    def fill(n: int) -> bool:
        while len(buf) < n:
            chunk = sock.recv(1 << 16)
            if not chunk:
                return False
            buf.extend(chunk)
        return True

    if "content-length" in headers:
        n = int(headers["content-length"])
        assert fill(n), f"short body: {len(buf)} of {n} bytes"
        return bytes(buf[:n])
    if headers.get("transfer-encoding") == "chunked":
        out = bytearray()
        while True:
            while b"\r\n" not in buf:
                assert fill(len(buf) + 1), "the chunked body ended early"
            size_line = bytes(buf).split(b"\r\n", 1)[0]
            size = int(size_line.split(b";")[0], 16)
            del buf[:len(size_line) + 2]
            assert fill(size + 2), "the chunked body ended early"
            out += buf[:size]
            del buf[:size + 2]
            if size == 0:
                return bytes(out)
    while fill(len(buf) + 1):
        pass
    return bytes(buf)
