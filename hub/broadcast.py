"""Fan-out: the feed of snapshots (latest + history) and the prepared-frame broadcast to clients."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from hub.metrics import HubMetrics

log = logging.getLogger(__name__)

ALL_TOPICS: tuple[str, ...] = ("system", "application", "business", "alerts")
#: clients handled per slice before yielding to the event loop, so /health and pings stay prompt
SLICE = 500
#: each client socket's kernel send buffer is capped to this, so a backlog shows up in the
#: transport's buffer (free to read) instead of hiding in a ~4 MB kernel queue
SNDBUF_BYTES = 64 * 1024
#: how long an evicted client gets to read its close frame before the socket is aborted
EVICT_GRACE = 5.0

CloseCode = int


def text_frame(payload: bytes) -> bytes:
    """One unmasked, uncompressed, final WebSocket text frame (RFC 6455 5.2) holding `payload`."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


def filter_snapshot(snapshot: dict[str, Any], topics: tuple[str, ...] | None,
                    source_sections: dict[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """`snapshot` with `data` reduced to `topics` (None: unchanged).

    `sources` keeps only the sources that fill one of `topics` (and sources not in
    `source_sections`), so a topic-limited token never sees another source's error text.
    """
    if topics is None:
        return snapshot
    data = snapshot["data"]
    out = {**snapshot, "data": {k: data[k] for k in topics if k in data}}
    if source_sections and isinstance(snapshot.get("sources"), dict):
        out["sources"] = {name: entry for name, entry in snapshot["sources"].items()
                          if name not in source_sections or set(source_sections[name]) & set(topics)}
    return out


@dataclass(eq=False, slots=True)
class Client:
    """One connected WebSocket client as the broadcaster sees it."""

    ws: web.WebSocketResponse
    transport: asyncio.Transport
    remote: str = ""
    token_name: str | None = None
    #: topics this client's token may receive (None: all)
    allowed: tuple[str, ...] | None = None
    #: topics the client subscribed to (None: all it may receive)
    subscribed: tuple[str, ...] | None = None
    #: effective topics, derived from the two above; None means every section
    topics: tuple[str, ...] | None = None
    close_reason: str | None = None
    #: the close code the hub sent, when the hub ended the connection
    close_code: int | None = None
    last_seq: int = 0

    def set_topics(self, subscribed: tuple[str, ...] | None) -> tuple[str, ...]:
        """Set the subscription; return the effective topics (never outside `allowed`)."""
        self.subscribed = subscribed
        want = subscribed if subscribed is not None else ALL_TOPICS
        if self.allowed is not None:
            want = tuple(t for t in want if t in self.allowed)
        self.topics = None if want == ALL_TOPICS else tuple(t for t in ALL_TOPICS if t in want)
        return want if self.topics is None else self.topics


@dataclass(slots=True)
class Entry:
    """A snapshot kept in history, with its encoding cached (encode once, send many)."""

    seq: int
    snapshot: dict[str, Any]
    encoded: bytes


class Feed:
    """Latest snapshot, bounded history and the set of clients to fan out to."""

    def __init__(self, *, history_size: int, max_client_buffer_bytes: int, metrics: HubMetrics) -> None:
        self.history: collections.deque[Entry] = collections.deque(maxlen=history_size)
        self.clients: set[Client] = set()
        self.max_buffer = max_client_buffer_bytes
        self.metrics = metrics
        self._evictions: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        #: source name -> data sections it fills, for filtering `sources` per topic set
        self.source_sections: dict[str, tuple[str, ...]] = {}

    # ------------------------------------------------------------------ state

    @property
    def latest(self) -> Entry | None:
        """The newest snapshot, or None before the first tick."""
        return self.history[-1] if self.history else None

    @property
    def seq(self) -> int:
        """seq of the newest snapshot (0 before the first)."""
        return self.history[-1].seq if self.history else 0

    def items(self, limit: int, *, after: int = 0) -> list[Entry]:
        """Up to `limit` most recent entries with seq > `after`, oldest first."""
        if limit <= 0:
            return []
        out = [e for e in self.history if e.seq > after] if after else list(self.history)
        return out[-limit:]

    def encode_items(self, entries: Iterable[Entry], topics: tuple[str, ...] | None) -> bytes:
        """A JSON array of the entries' snapshots, filtered to `topics`, from cached encodings."""
        if topics is None:
            return b"[" + b",".join(e.encoded for e in entries) + b"]"
        return orjson.dumps([filter_snapshot(e.snapshot, topics, self.source_sections) for e in entries])

    def encode_one(self, entry: Entry, topics: tuple[str, ...] | None) -> bytes:
        """One snapshot as JSON, filtered to `topics`."""
        if topics is None:
            return entry.encoded
        return orjson.dumps(filter_snapshot(entry.snapshot, topics, self.source_sections))

    # ------------------------------------------------------------------ clients

    def add(self, client: Client) -> None:
        """Start fanning out to `client` (after it got its initial message)."""
        sock = client.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_BYTES)
        self.clients.add(client)
        self.metrics.connections.set(len(self.clients))

    def discard(self, client: Client) -> None:
        """Stop fanning out to `client`; safe to call twice."""
        self.clients.discard(client)
        self.metrics.connections.set(len(self.clients))

    def evict(self, client: Client, *, code: CloseCode, reason: str, message: bytes = b"") -> None:
        """Close `client` with `code` without awaiting it; abort the socket if it won't go quietly."""
        if client.close_reason is not None:
            return
        client.close_reason = reason
        client.close_code = code
        self.discard(client)
        task = asyncio.get_running_loop().create_task(self._close(client, code, message))
        self._evictions.add(task)
        task.add_done_callback(self._evictions.discard)

    async def _close(self, client: Client, code: CloseCode, message: bytes) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + EVICT_GRACE
        t = client.transport
        try:
            async with asyncio.timeout(EVICT_GRACE):
                # drain=False: a slow consumer's buffer may never drain; its close frame
                # is queued behind the backlog it still has to read.
                await client.ws.close(code=code, message=message, drain=False)
            # Give the peer until the deadline to read the backlog and see the close code;
            # the backlog is already bounded, so holding it a few seconds costs little.
            while t.get_write_buffer_size() and loop.time() < deadline:
                await asyncio.sleep(0.1)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            if not t.is_closing() or t.get_write_buffer_size():
                t.abort()

    # ------------------------------------------------------------------ fan-out

    async def deliver(self, snapshot: dict[str, Any], *, encoded: bytes | None = None) -> None:
        """Record `snapshot` as the latest and send it to every client (one frame per topic set)."""
        if encoded is None:
            encoded = orjson.dumps(snapshot)
        seq = int(snapshot["seq"])
        if self.history and seq <= self.history[-1].seq:
            log.debug("dropping snapshot seq=%s: not newer than %s", seq, self.history[-1].seq)
            return
        entry = Entry(seq=seq, snapshot=snapshot, encoded=encoded)
        self.history.append(entry)
        self.metrics.ticks.inc()
        self.metrics.seq.set(seq)
        # One delivery at a time: a slow slice loop must not interleave two snapshots.
        async with self._lock:
            await self._fan_out(entry)

    async def _fan_out(self, entry: Entry) -> None:
        t0 = time.perf_counter()
        frames: dict[tuple[str, ...] | None, bytes] = {}
        limit = self.max_buffer
        sent = 0
        slow: list[Client] = []
        clients = list(self.clients)
        seq = entry.seq
        for start in range(0, len(clients), SLICE):
            for client in clients[start:start + SLICE]:
                transport = client.transport
                if client.close_reason is not None or transport.is_closing() or client.last_seq >= seq:
                    continue
                if transport.get_write_buffer_size() > limit:
                    slow.append(client)
                    continue
                topics = client.topics
                frame = frames.get(topics)
                if frame is None:
                    frame = frames[topics] = text_frame(self.encode_one(entry, topics))
                transport.write(frame)
                client.last_seq = seq
                sent += 1
            if start + SLICE < len(clients):
                await asyncio.sleep(0)
        for client in slow:
            log.info("closing slow consumer %s: more than %s bytes unsent", client.remote, limit)
            self.evict(client, code=1013, reason="slow_consumer", message=b"slow consumer")
        self.metrics.messages_sent.inc(sent)
        self.metrics.broadcast_duration.observe(time.perf_counter() - t0)

    async def close_all(self, *, code: CloseCode = 1001, message: bytes = b"server shutdown") -> None:
        """Close every client with `code` (used at shutdown) and wait for the closes, briefly."""
        for client in list(self.clients):
            self.evict(client, code=code, reason="shutdown", message=message)
        if self._evictions:
            await asyncio.wait(list(self._evictions), timeout=EVICT_GRACE)
