"""Fan-out: each snapshot's pieces are compressed once per window (15, or 9 for any smaller offer),
every (topics, window) frame is assembled from them, and written to every client without a
per-client await; slow consumers are evicted, never waited for. Joins build their first message
outside the lock fan-out holds, and take it only to hand over the seq."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson

from hub.client import Client, CloseReason
from hub.feed import Entry, Feed
from hub.frames import Deflated, deflated_message, prepared_frame, text_frame
from hub.metrics import HubMetrics
from hub.tasks import spawn

log = logging.getLogger(__name__)

#: clients handled per slice before yielding to the event loop, so /health and pings stay prompt
SLICE = 500
#: each client socket's kernel send buffer is capped to this, so a backlog shows up in the
#: transport's buffer (free to read) instead of hiding in a ~4 MB kernel queue
SNDBUF_BYTES = 64 * 1024
#: how long a client the hub closes gets to read its Close frame before the socket is aborted
EVICT_GRACE = 5.0
#: at least this many bytes to compress and the work goes to a worker thread (zlib releases the
#: GIL), so a megabyte snapshot never stalls the event loop
THREAD_COMPRESS_BYTES = 64 * 1024
#: a join builds its first message outside the lock; when a snapshot lands meanwhile it builds
#: again, at most this many times in all, the last one under the lock
JOIN_ATTEMPTS = 3
#: first messages (history, points) kept for the joiners of the current snapshot, shared by them
JOIN_CACHE = 8

#: (topics or None for all, window: 0 without permessage-deflate, else 15 or 9)
FrameKey = tuple[tuple[str, ...] | None, int]
JoinKey = tuple[str, int, FrameKey, str, int]


class Broadcaster:
    """The set of clients and the one path by which frames reach them."""

    def __init__(self, *, feed: Feed, max_client_buffer_bytes: int, metrics: HubMetrics) -> None:
        self.feed = feed
        self.clients: set[Client] = set()
        self.max_buffer = max_client_buffer_bytes
        self.metrics = metrics
        # One delivery or hand-over at a time: a client joining mid-fan-out must neither miss
        # nor repeat a seq. Nothing awaits zlib or a worker thread while holding it.
        self._lock = asyncio.Lock()
        self._evictions: set[asyncio.Task[None]] = set()
        #: deflate clients per window (15 or 9): the windows each snapshot is compressed for
        self._windows: collections.Counter[int] = collections.Counter()
        self._joins: dict[JoinKey, asyncio.Task[tuple[bytes, int]]] = {}
        #: the yield between slices; a test replaces it to act in the middle of a fan-out
        self.pause: Callable[[], Awaitable[None]] = lambda: asyncio.sleep(0)

    # ------------------------------------------------------------------ frames

    async def prepare(self, entry: Entry, windows: Iterable[int]) -> None:
        """Compress `entry`'s pieces for `windows` (off the loop when large); idempotent."""
        missing = [w for w in windows if w not in entry.deflated]
        if not missing:
            return
        if entry.raw_size * len(missing) >= THREAD_COMPRESS_BYTES:
            done = await asyncio.get_running_loop().run_in_executor(None, _compress, entry, missing)
        else:
            done = _compress(entry, missing)
        for w, pieces in zip(missing, done, strict=True):
            self.feed.attach(entry, w, pieces)

    def frame(self, entry: Entry, key: FrameKey) -> bytes:
        """The frame of `entry` for clients with `key`, assembled from its pieces (cached while latest).

        Only assembly happens here, unless no client used the window when the entry was prepared:
        then its pieces are compressed here, once.
        """
        cached = entry.frames.get(key)
        if cached is not None:
            return cached
        topics, window = key
        sections = self.feed.source_sections
        if not window:
            frame = text_frame(entry.encode(topics, sections))
        else:
            if window not in entry.deflated:
                self.feed.attach(entry, window, entry.compress(window))
            frame = text_frame(deflated_message(entry.segments(topics, sections, window=window)), compressed=True)
        if entry is self.feed.latest:
            entry.frames[key] = frame
        return frame

    # ------------------------------------------------------------------ clients

    def add(self, client: Client) -> None:
        """Start fanning out to `client` (after it got its initial message)."""
        sock = client.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_BYTES)
            if client.transport.get_extra_info("sslcontext") is None:
                client.fd = sock.fileno()
        if client not in self.clients:
            self.clients.add(client)
            if client.key[1]:
                self._windows[client.key[1]] += 1
        self.metrics.connections.set(len(self.clients))

    def discard(self, client: Client) -> None:
        """Stop fanning out to `client`; safe to call twice."""
        if client in self.clients:
            self.clients.discard(client)
            if client.key[1]:
                self._windows[client.key[1]] -= 1
                if self._windows[client.key[1]] <= 0:
                    del self._windows[client.key[1]]
        self.metrics.connections.set(len(self.clients))

    def evict(self, client: Client, *, code: int, reason: CloseReason, message: bytes = b"") -> None:
        """Close `client` with `code` without awaiting it; its socket is aborted after the grace."""
        if client.close_reason is not None:
            return
        client.close_reason = reason
        client.close_code = code
        client.sending = False
        self.discard(client)
        task = spawn(self._close(client, code, message), name="hub-evict")
        client.closing = task
        self._evictions.add(task)
        task.add_done_callback(self._evictions.discard)

    @staticmethod
    async def _close(client: Client, code: int, message: bytes) -> None:
        t = client.transport
        try:
            # Peer.close sends the Close frame and aborts after its grace; the timeout guards the
            # rest.
            async with asyncio.timeout(EVICT_GRACE + 1.0):
                await client.ws.close(code=code, message=message, drain=False)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            if not t.is_closing() or t.get_write_buffer_size():
                t.abort()

    async def close_all(self, *, code: int = 1001, message: bytes = b"server shutdown") -> None:
        """Close every client with `code` (used at shutdown) and wait for the closes and join builds."""
        for client in list(self.clients):
            self.evict(client, code=code, reason=CloseReason.SHUTDOWN, message=message)
        pending: list[asyncio.Task[Any]] = [*self._evictions, *self._joins.values()]
        if pending:
            await asyncio.wait(pending, timeout=EVICT_GRACE + 1.0)

    # ------------------------------------------------------------------ delivery

    async def deliver(self, entry: Entry, data: Mapping[str, Any]) -> bool:
        """Keep `entry` in the feed and send it to every client; False when it was not newer."""
        latest = self.feed.latest
        if latest is not None and entry.epoch == latest.epoch and entry.seq <= latest.seq:
            log.debug("dropping snapshot seq=%s: not newer than %s", entry.seq, latest.seq)
            return False
        # Compression happens before the lock: joins are never held up by zlib.
        await self.prepare(entry, list(self._windows))
        async with self._lock:
            if not self.feed.append(entry, data):
                log.debug("dropping snapshot seq=%s: not newer than %s", entry.seq, self.feed.seq)
                return False
            self._joins.clear()  # built for the previous snapshot; their waiters keep them alive
            self.metrics.ticks.inc()
            self.metrics.seq.set(entry.seq)
            self.metrics.history_bytes.set(self.feed.bytes)
            self.metrics.history_entries.set(len(self.feed.backfill) + len(self.feed.history))
            await self._fan_out(entry)
            return True

    async def backfill(self, items: Sequence[tuple[str, Mapping[str, Any], dict[str, bytes]]]) -> int:
        """Put backfilled snapshots before the live ones (`Feed.add_backfill`); sends nothing, moves no seq.

        Under the delivery lock, like a delivery: joins built before it are dropped, so the next
        joiner's `history` or `points` holds them.
        """
        async with self._lock:
            kept = self.feed.add_backfill(items)
            if kept:
                self._joins.clear()
                self.metrics.history_bytes.set(self.feed.bytes)
                self.metrics.history_entries.set(len(self.feed.backfill) + len(self.feed.history))
            return kept

    async def _fan_out(self, entry: Entry) -> None:
        t0 = time.perf_counter()
        limit = self.max_buffer
        # Every client in the set has seen only older snapshots: `join` and `deliver` share the lock.
        clients = list(self.clients)
        frames: dict[FrameKey, bytes] = {}
        sent = 0
        slow: list[Client] = []
        last_key: FrameKey | None = None
        frame = b""
        write = os.write
        for start in range(0, len(clients), SLICE):
            for client in clients[start:start + SLICE]:
                # Client.can_send in one slot read (this loop runs per client per tick): never a data
                # frame after a Close frame, from either side. `sending` turns False when the hub
                # evicts the client or the WebSocket's close starts; is_closing covers a lost socket.
                if not client.sending:
                    continue
                transport = client.transport
                if transport.is_closing():
                    continue
                backlog = transport.get_write_buffer_size()
                if backlog > limit:
                    slow.append(client)
                    continue
                # The key is read at write time: a subscribe that landed while an earlier slice
                # yielded takes effect with this snapshot, and no client ever misses a seq. Keys are
                # interned (hub/client.py), so a run of clients with the same key costs no lookup.
                key = client.key
                if key is not last_key:
                    found = frames.get(key)
                    if found is None:
                        found = frames[key] = self.frame(entry, key)
                    frame, last_key = found, key
                fd = client.fd
                if backlog or fd < 0:
                    transport.write(frame)  # after what is queued, in order
                else:
                    # Nothing queued (transport and event loop both): one write() straight to the
                    # socket, as the floor does, skips the transport's buffer bookkeeping (about
                    # 1 µs per client under uvloop). The descriptor is still this client's: the
                    # transport is not closing, and nothing closes it between the check and here.
                    try:
                        n = write(fd, frame)
                    except (BlockingIOError, InterruptedError):
                        n = 0
                    except OSError:
                        transport.write(frame)  # the transport meets the error itself and closes
                        n = len(frame)
                    if n < len(frame):
                        transport.write(frame[n:])  # the kernel took part: the transport sends the rest
                sent += 1
            if start + SLICE < len(clients):
                await self.pause()
        for client in slow:
            log.info("closing slow consumer %s: more than %s bytes unsent", client.remote, limit)
            self.evict(client, code=1013, reason=CloseReason.SLOW_CONSUMER, message=b"slow consumer")
        self.metrics.messages_sent.inc(sent)
        self.metrics.frame_variants.set(len(frames))
        self.metrics.deflate_input_bytes.set(entry.raw_size * len(entry.deflated))
        self.metrics.broadcast_duration.observe(time.perf_counter() - t0)

    # ------------------------------------------------------------------ joining

    async def join(self, client: Client, *, history: int = -1, points: int = -1) -> None:
        """Send the initial message and add `client`, handing over the seq under the delivery lock.

        The message (latest snapshot, `?history=N` within the broadcast's byte budget, or
        `?points=N` and the latest) is built outside the lock, shared between joiners of the same
        snapshot, and written without awaiting the peer: a client that never reads holds no more
        than any slow consumer and is evicted like one.
        """
        feed = self.feed
        for attempt in range(1, JOIN_ATTEMPTS + 1):
            mark = (feed.epoch, feed.seq, len(feed.backfill_points))
            frames: list[bytes] = []
            if attempt < JOIN_ATTEMPTS:
                frames = await self._first(client, history, points)
            async with self._lock:
                if attempt == JOIN_ATTEMPTS:
                    frames = await self._first(client, history, points)  # ticks kept outrunning the build
                elif (feed.epoch, feed.seq, len(feed.backfill_points)) != mark:
                    continue  # a snapshot landed while building: build again for the new one
                for frame in frames:
                    client.send_prepared(frame)
                self.metrics.messages_sent.inc(len(frames))
                self.add(client)
                return

    async def _first(self, client: Client, history: int, points: int) -> list[bytes]:
        """The frames a joining client gets first, for the feed as it is now."""
        feed = self.feed
        latest = feed.latest
        key = client.key
        if latest is not None and key[1]:
            await self.prepare(latest, [key[1]])
        if points < 0 and history < 0:
            return [self.frame(latest, key)] if latest is not None else []
        kind, n = ("points", points) if points >= 0 else ("history", history)
        jkey: JoinKey = (kind, n, key, feed.epoch, feed.seq)
        task = self._joins.get(jkey)
        if task is None:
            # Inputs are taken now, synchronously, so the build matches the mark the joiner checks.
            if kind == "points":
                work = _prepared_frame(feed.encode_points(n, key[0]), key[1])
            else:
                entries = feed.within(feed.items(n), key[0], self.max_buffer)
                work = _history_frame(entries, key, feed.epoch, dict(feed.source_sections))
            task = spawn(work, name=f"hub-join-{kind}")
            while len(self._joins) >= JOIN_CACHE:
                self._joins.pop(next(iter(self._joins)))
            self._joins[jkey] = task
        # shield: a joiner that goes away must not cancel the build others wait for.
        first, last = await asyncio.shield(task)
        if latest is not None and last < latest.seq:
            return [first, self.frame(latest, key)]  # points, or a history without the latest
        return [first]


def _compress(entry: Entry, windows: Sequence[int]) -> list[dict[str, Deflated]]:
    return [entry.compress(w) for w in windows]


async def _prepared_frame(payload: bytes, window: int) -> tuple[bytes, int]:
    """The `points` frame (-1: it carries no snapshot, the latest follows)."""
    if window and len(payload) >= THREAD_COMPRESS_BYTES:
        return await asyncio.get_running_loop().run_in_executor(None, prepared_frame, payload, window), -1
    return prepared_frame(payload, window), -1


async def _history_frame(entries: list[Entry], key: FrameKey, epoch: str,
                         source_sections: Mapping[str, tuple[str, ...]]) -> tuple[bytes, int]:
    """The `history` frame of `entries` and the last seq it carries (0: none)."""
    work = sum(e.raw_size for e in entries if key[1] and key[1] not in e.deflated)
    if work >= THREAD_COMPRESS_BYTES:
        frame = await asyncio.get_running_loop().run_in_executor(
            None, _build_history, entries, key, epoch, source_sections)
    else:
        frame = _build_history(entries, key, epoch, source_sections)
    return frame, entries[-1].seq if entries else 0


def _build_history(entries: list[Entry], key: FrameKey, epoch: str,
                   source_sections: Mapping[str, tuple[str, ...]]) -> bytes:
    """The `history` frame of `entries` (CPU only: safe in a worker thread)."""
    topics, window = key
    segments = [b'{"type":"history","epoch":' + orjson.dumps(epoch) + b',"items":[']
    for i, e in enumerate(entries):
        if i:
            segments.append(b",")
        # An older entry may lack this window's pieces; they are compressed here and not kept.
        pieces = (e.deflated.get(window) or e.compress(window)) if window else None
        segments += e.segments(topics, source_sections, window=window, pieces=pieces)
    segments.append(b"]}")
    if window:
        return text_frame(deflated_message(segments), compressed=True)
    return text_frame(b"".join(segments))
