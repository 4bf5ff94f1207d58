"""The fan-out floor: one `write` of one prepared frame to every socket, and nothing else.

    python -m bench.floor.server --port P [--interval-ms MS] [--payload FILE] [--host H]

No event loop, no per-client state beyond the file descriptor: a `selectors` poll (epoll) that
only accepts, answers each client's upgrade once and notices closes, and, every interval, one
`metrics_update` frame built once (the seed's fields: `type`, `seq`, `timestamp`, `data`,
`sources`; `data` and `sources` from FILE as the reference server takes them) and written with
`os.write` to every upgraded socket in turn. A connecting client gets the latest frame at once,
as from the seed and the hub. What this includes and leaves out: bench/README.md ("The floor").
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: an upgrade request longer than this is refused (the load client's is about 250 bytes)
MAX_REQUEST = 8192
BACKLOG = 2048


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final text frame (RFC 6455 5.2)."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def accept_response(request: bytes) -> bytes | None:
    """The 101 response to an upgrade request, or None when it has no Sec-WebSocket-Key."""
    for line in request.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            accept = base64.b64encode(hashlib.sha1(value.strip() + WS_GUID).digest())
            return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    return None


class Floor:
    """The listening socket, the upgraded clients' descriptors and the frame of the current seq."""

    def __init__(self, host: str, port: int, parts: dict[str, Any]) -> None:
        self.sel = selectors.DefaultSelector()
        self.listener = socket.create_server((host, port), backlog=BACKLOG)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.socks: dict[int, socket.socket] = {}  # fd -> socket, upgraded or not
        self.pending: dict[int, bytes] = {}  # fd -> request bytes so far, until upgraded
        self.fds: list[int] = []  # upgraded clients, in the order they are written to
        self.seq = 0
        # `data` and `sources` are encoded once; each tick only the seq and timestamp change.
        self.tail = (b',"data":' + json.dumps(parts["data"], separators=(",", ":")).encode()
                     + b',"sources":' + json.dumps(parts["sources"], separators=(",", ":")).encode() + b"}")
        self.frame = self.build()

    def build(self) -> bytes:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return text_frame(b'{"type":"metrics_update","seq":%d,"timestamp":"%s"' % (self.seq, stamp.encode())
                          + self.tail)

    def broadcast(self) -> None:
        """The measured path: the frame built once, then one write per client."""
        self.seq += 1
        frame = self.frame = self.build()
        size = len(frame)
        write = os.write
        lost = []
        for fd in self.fds:
            try:
                if write(fd, frame) != size:
                    lost.append(fd)  # never seen with the bench's clients: a short write ends the client
            except OSError:
                lost.append(fd)
        for fd in lost:
            self.drop(fd)

    def drop(self, fd: int) -> None:
        sock = self.socks.pop(fd, None)
        if sock is None:
            return
        self.pending.pop(fd, None)
        if fd in self.fds:
            self.fds.remove(fd)
        self.sel.unregister(sock)
        sock.close()

    def on_accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            self.socks[sock.fileno()] = sock
            self.pending[sock.fileno()] = b""
            self.sel.register(sock, selectors.EVENT_READ, None)

    def on_read(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.drop(fd)
            return
        if fd not in self.pending:
            return  # an upgraded client's frames (a Close) are read and dropped
        request = self.pending[fd] + data
        if b"\r\n\r\n" not in request:
            if len(request) > MAX_REQUEST:
                self.drop(fd)
            else:
                self.pending[fd] = request
            return
        del self.pending[fd]
        response = accept_response(request)
        if response is None:
            sock.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.drop(fd)
            return
        sock.send(response + self.frame)
        self.fds.append(fd)

    def serve(self, interval: float) -> None:
        """Accept and upgrade between ticks; broadcast every `interval` seconds until SIGTERM."""
        next_tick = time.monotonic() + interval
        while True:
            for key, _ in self.sel.select(max(0.0, next_tick - time.monotonic())):
                if key.fileobj is self.listener:
                    self.on_accept()
                else:
                    self.on_read(key.fileobj)  # type: ignore[arg-type]
            if time.monotonic() >= next_tick:
                self.broadcast()
                next_tick += interval


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.floor.server", description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--interval-ms", type=int, default=10000)
    ap.add_argument("--payload", default="", help='JSON file {"data": ..., "sources": ...}')
    args = ap.parse_args(argv)
    parts = (json.loads(Path(args.payload).read_text()) if args.payload
             else {"data": {"system": None, "application": {}, "business": None, "alerts": None}, "sources": {}})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    floor = Floor(args.host, args.port, parts)
    print(json.dumps({"event": "listening", "port": floor.listener.getsockname()[1], "pid": os.getpid()}),
          flush=True)
    try:
        floor.serve(args.interval_ms / 1000.0)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
