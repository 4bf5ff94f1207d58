"""Streamed JSON bodies of the REST API: written in chunks that await the peer, compressed for clients
that accept it, and at most MAX_STREAMS large ones at once (BodySlots), each within a deadline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiohttp import web

from hub.context import HUB
from hub.errors import json_error

log = logging.getLogger("hub.views")  # the REST API's log lines, as before the split

#: bodies are written in pieces of this size, each awaiting the peer, so a slow reader holds about one
CHUNK = 64 * 1024
#: bodies over one CHUNK streaming at once; more wait SLOT_WAIT seconds for a turn, then get 503 busy
MAX_STREAMS = 8
SLOT_WAIT = 1.0
#: a body not delivered within this many seconds is cut (the connection is closed), freeing its turn
STREAM_DEADLINE = 60.0


class BodySlots:
    """How many large bodies stream at once, how long a request waits for a turn, how long one may take."""

    def __init__(self, *, limit: int = MAX_STREAMS, wait: float = SLOT_WAIT,
                 deadline: float = STREAM_DEADLINE) -> None:
        self.limit, self.wait, self.deadline = limit, wait, deadline
        self.active = 0
        self._sem = asyncio.Semaphore(limit)

    async def acquire(self) -> bool:
        """Take a turn, waiting up to `wait` seconds; False when none came free."""
        if self._sem.locked():
            if self.wait <= 0:
                return False
            try:
                async with asyncio.timeout(self.wait):
                    await self._sem.acquire()
            except TimeoutError:
                return False
        else:
            await self._sem.acquire()
        self.active += 1
        return True

    def release(self) -> None:
        """Give the turn back."""
        self.active -= 1
        self._sem.release()


BODY_SLOTS = web.AppKey("body_slots", BodySlots)


async def send_json(request: web.Request, pieces: Iterable[bytes], length: int) -> web.StreamResponse:
    """Stream `pieces` (JSON, `length` bytes in all) in CHUNK-sized writes that await the peer.

    gzip/deflate for clients that accept it (snapshots compress about 10x), Content-Length otherwise.
    A body over one CHUNK needs a turn (BodySlots): concurrent large requests cannot multiply memory.
    """
    hub = request.app[HUB]
    slots = request.app[BODY_SLOTS]
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    resp.content_length = length
    if length >= 1024:
        resp.enable_compression()
    if request.method == "HEAD":  # headers only; aiohttp would send what is written, even here
        await resp.prepare(request)
        return resp
    large = length > CHUNK
    if large and not await slots.acquire():
        hub.metrics.http_rejected.labels("busy").inc()
        return json_error(503, f"busy: {slots.limit} large responses are being sent; try again later")
    if large:
        hub.metrics.body_streams.set(slots.active)
    try:
        async with asyncio.timeout(slots.deadline):
            await resp.prepare(request)
            await _write_chunks(resp, pieces)
            await resp.write_eof()
    except TimeoutError:
        # Too slow a reader would hold its turn forever: cut it (the client sees a short body).
        log.debug("cut a response to %s after %.0f s", request.remote, slots.deadline)
        if request.transport is not None:
            request.transport.abort()
    except ConnectionError:
        pass  # the client went away
    finally:
        if large:
            slots.release()
            hub.metrics.body_streams.set(slots.active)
    return resp


async def _write_chunks(resp: web.StreamResponse, pieces: Iterable[bytes]) -> None:
    pending = bytearray()  # small pieces (a comma, the head) are gathered into one write
    for piece in pieces:
        view = memoryview(piece)
        if pending:
            take = min(len(view), CHUNK - len(pending))
            pending += view[:take]
            view = view[take:]
            if len(pending) < CHUNK:
                continue
            await resp.write(bytes(pending))
            pending.clear()
        while len(view) >= CHUNK:
            await resp.write(view[:CHUNK])
            view = view[CHUNK:]
        pending += view
    if pending:
        await resp.write(bytes(pending))
