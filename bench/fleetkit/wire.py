"""A byte-counting TCP proxy: what the hub writes to one client, as the network carries it.

Between a client (Chromium, aiohttp) and the hub it forwards bytes unchanged and records, per
connection, the request line, every chunk the hub wrote (time, size) and, after a WebSocket
upgrade, every frame's wire size, payload size and RSV1 (permessage-deflate) bit. Counting
here, outside both processes, sees compressed bytes exactly as sent, which a browser's own
DevTools events (decompressed payloads) cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class Frame:
    """One server-to-client WebSocket frame as it crossed the wire."""

    at: float
    wire: int
    payload: int
    opcode: int
    compressed: bool


@dataclass
class Conn:
    """One proxied connection: its first request line and everything the hub sent on it."""

    opened: float
    request: str = ""
    head_bytes: int = 0
    upgraded: bool = False
    chunks: list[tuple[float, int]] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    _buf: bytearray = field(default_factory=bytearray)
    _in_head: bool = True

    @property
    def is_ws(self) -> bool:
        """True when this connection became a WebSocket."""
        return self.upgraded

    def bytes_until(self, t: float) -> int:
        """Bytes the hub wrote on this connection up to monotonic time `t`."""
        return sum(n for at, n in self.chunks if at <= t)

    def feed(self, data: bytes, now: float) -> None:
        """Account one chunk from the hub; parse the upgrade answer, then frames."""
        self.chunks.append((now, len(data)))
        if not self._in_head and not self.upgraded:
            return  # plain HTTP: bytes are enough
        self._buf += data
        if self._in_head:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buf[:end])
            self.head_bytes = end + 4
            self._in_head = False
            self.upgraded = head.startswith(b"HTTP/1.1 101")
            del self._buf[:end + 4]
            if not self.upgraded:
                self._buf.clear()
                return
        self._frames(now)

    def _frames(self, now: float) -> None:
        buf = self._buf
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n, hdr = b1 & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, hdr = struct.unpack_from("!H", buf, 2)[0], 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, hdr = struct.unpack_from("!Q", buf, 2)[0], 10
            if b1 & 0x80:
                hdr += 4
            if len(buf) < hdr + n:
                return
            self.frames.append(Frame(at=now, wire=hdr + n, payload=n, opcode=b0 & 0x0F, compressed=bool(b0 & 0x40)))
            del buf[:hdr + n]


class CountingProxy:
    """Listen on 127.0.0.1:<free port> and forward every connection to `upstream_port`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.conns: list[Conn] = []
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def reset(self) -> None:
        """Forget connections recorded so far (open ones keep being counted in their own record)."""
        self.conns = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn(opened=time.monotonic())
        self.conns.append(conn)
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return

        async def up() -> None:  # client -> hub; note the request line
            first = True
            while data := await reader.read(65536):
                if first:
                    conn.request = data.split(b"\r\n", 1)[0].decode("latin-1")[:300]
                    first = False
                up_w.write(data)
                await up_w.drain()
            with contextlib.suppress(OSError):
                up_w.write_eof()

        async def down() -> None:  # hub -> client; count
            while data := await up_r.read(262144):
                conn.feed(data, time.monotonic())
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()

        tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for t in tasks:
                t.cancel()
            for w in (writer, up_w):
                w.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
