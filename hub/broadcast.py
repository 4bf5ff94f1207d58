"""Fan-out: each snapshot is encoded (and compressed) once per topic set and window, then written
to every client without a per-client await; slow consumers are evicted, never waited for."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Mapping
from typing import Any

import orjson

from hub.client import Client, CloseReason
from hub.frames import prepared_frame
from hub.feed import Entry, Feed
from hub.metrics import HubMetrics

log = logging.getLogger(__name__)

#: clients handled per slice before yielding to the event loop, so /health and pings stay prompt
SLICE = 500
#: each client socket's kernel send buffer is capped to this, so a backlog shows up in the
#: transport's buffer (free to read) instead of hiding in a ~4 MB kernel queue
SNDBUF_BYTES = 64 * 1024
#: how long an evicted client gets to read its close frame before the socket is aborted
EVICT_GRACE = 5.0
#: payloads at least this big are compressed in a worker thread (zlib releases the GIL), so a
#: megabyte snapshot never stalls the event loop
THREAD_COMPRESS_BYTES = 64 * 1024

FrameKey = tuple[tuple[str, ...] | None, int]


class Broadcaster:
    """The set of clients and the one path by which frames reach them."""

    def __init__(self, *, feed: Feed, max_client_buffer_bytes: int, metrics: HubMetrics) -> None:
        self.feed = feed
        self.clients: set[Client] = set()
        self.max_buffer = max_client_buffer_bytes
        self.metrics = metrics
        # One delivery or initial send at a time: a client joining mid-fan-out must neither miss
        # nor repeat a seq.
        self._lock = asyncio.Lock()
        self._evictions: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ frames

    async def frame(self, entry: Entry, key: FrameKey) -> bytes:
        """The frame of `entry` for clients with `key`, cached on the entry while it is the latest."""
        cached = entry.frames.get(key)
        if cached is None:
            topics, bits = key
            cached = await self.prepare(entry.encode(topics, self.feed.source_sections), bits)
            entry.frames[key] = cached
        return cached

    @staticmethod
    async def prepare(payload: bytes, window_bits: int) -> bytes:
        """`payload` as a ready frame; big compressed ones are built off the event loop."""
        if window_bits and len(payload) >= THREAD_COMPRESS_BYTES:
            return await asyncio.get_running_loop().run_in_executor(None, prepared_frame, payload, window_bits)
        return prepared_frame(payload, window_bits)

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

    def evict(self, client: Client, *, code: int, reason: CloseReason, message: bytes = b"") -> None:
        """Close `client` with `code` without awaiting it; abort the socket if it won't go quietly."""
        if client.close_reason is not None:
            return
        client.close_reason = reason
        client.close_code = code
        self.discard(client)
        task = asyncio.get_running_loop().create_task(self._close(client, code, message))
        client.closing = task
        self._evictions.add(task)
        task.add_done_callback(self._evictions.discard)

    async def _close(self, client: Client, code: int, message: bytes) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + EVICT_GRACE
        t = client.transport
        try:
            async with asyncio.timeout(EVICT_GRACE):
                # drain=False: a slow consumer's buffer may never drain; its close frame
                # is queued behind the backlog it still has to read.
                await client.ws.close(code=code, message=message, drain=False)
            # Give the peer until the deadline to read the backlog and see the close code.
            while t.get_write_buffer_size() and loop.time() < deadline:
                await asyncio.sleep(0.1)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            if not t.is_closing() or t.get_write_buffer_size():
                t.abort()

    async def close_all(self, *, code: int = 1001, message: bytes = b"server shutdown") -> None:
        """Close every client with `code` (used at shutdown) and wait for the closes, briefly."""
        for client in list(self.clients):
            self.evict(client, code=code, reason=CloseReason.SHUTDOWN, message=message)
        if self._evictions:
            await asyncio.wait(list(self._evictions), timeout=EVICT_GRACE)

    # ------------------------------------------------------------------ delivery

    async def deliver(self, entry: Entry, data: Mapping[str, Any]) -> bool:
        """Keep `entry` in the feed and send it to every client; False when it was not newer."""
        async with self._lock:
            if not self.feed.append(entry, data):
                log.debug("dropping snapshot seq=%s: not newer than %s", entry.seq, self.feed.seq)
                return False
            self.metrics.ticks.inc()
            self.metrics.seq.set(entry.seq)
            self.metrics.history_bytes.set(self.feed.bytes)
            self.metrics.history_entries.set(len(self.feed.history))
            await self._fan_out(entry)
            return True

    async def _fan_out(self, entry: Entry) -> None:
        t0 = time.perf_counter()
        limit = self.max_buffer
        seq = entry.seq
        # Every client in the set has seen only older snapshots: `join` and `deliver` share the lock.
        clients = list(self.clients)
        # Encode and compress once per distinct (topics, window) before the loop; inside it, only
        # writes, and a yield between slices.
        frames = {key: await self.frame(entry, key) for key in {c.key for c in clients}}
        sent = 0
        slow: list[Client] = []
        for start in range(0, len(clients), SLICE):
            for client in clients[start:start + SLICE]:
                transport = client.transport
                # Inlined Client.can_send (this loop runs per client per tick): never a data frame
                # after a Close frame, from either side.
                if client.close_reason is not None or client.ws.closed or transport.is_closing():
                    continue
                if transport.get_write_buffer_size() > limit:
                    slow.append(client)
                    continue
                transport.write(frames[client.key])
                client.last_seq = seq
                sent += 1
            if start + SLICE < len(clients):
                await asyncio.sleep(0)
        for client in slow:
            log.info("closing slow consumer %s: more than %s bytes unsent", client.remote, limit)
            self.evict(client, code=1013, reason=CloseReason.SLOW_CONSUMER, message=b"slow consumer")
        self.metrics.messages_sent.inc(sent)
        self.metrics.broadcast_duration.observe(time.perf_counter() - t0)

    # ------------------------------------------------------------------ joining

    async def join(self, client: Client, *, history: int = -1, points: int = -1) -> None:
        """Send the initial message and add `client`, under the delivery lock so no seq is missed.

        The initial message obeys the broadcast's byte budget (`max_client_buffer_bytes`) and is
        written without awaiting the peer, so a client that never reads holds no more than any
        slow consumer and is evicted like one.
        """
        async with self._lock:
            feed = self.feed
            latest = feed.latest
            frames: list[bytes] = []
            if points >= 0:
                payload = feed.encode_points(points, client.topics)
                frames.append(await self.prepare(payload, client.window_bits))
                if latest is not None:
                    frames.append(await self.frame(latest, client.key))
            elif history >= 0:
                items, last = feed.encode_items(feed.items(history), client.topics, max_bytes=self.max_buffer)
                body = b'{"type":"history","epoch":' + orjson.dumps(feed.epoch) + b',"items":' + items + b"}"
                frames.append(await self.prepare(body, client.window_bits))
                if latest is not None and last < latest.seq:
                    frames.append(await self.frame(latest, client.key))
            elif latest is not None:
                frames.append(await self.frame(latest, client.key))
            for frame in frames:
                client.send_prepared(frame)
            if latest is not None:
                client.last_seq = latest.seq
            self.metrics.messages_sent.inc(len(frames))
            self.add(client)
