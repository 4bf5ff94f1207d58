"""Every WebSocket connection the hub owns after its handshake: one heartbeat sweep for all of them,
the closes they start themselves, and what is left at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from hub.peer import Peer
from hub.tasks import cancel_and_wait, spawn


class Peers:
    """Every connection the hub owns after its handshake: the heartbeat sweep and the closes' tasks."""

    def __init__(self, *, heartbeat: float | None) -> None:
        self.heartbeat = heartbeat
        self._live: set[Peer] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return len(self._live)

    def now(self) -> float:
        """The loop's clock."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop.time()

    def add(self, peer: Peer) -> None:
        """Track `peer` (its heartbeat, and its abort at shutdown)."""
        self._live.add(peer)

    def discard(self, peer: Peer) -> None:
        """Forget `peer` (its socket is gone)."""
        self._live.discard(peer)

    def spawn(self, coro: Any) -> None:
        """Run a close without awaiting it; shutdown waits for it (its grace bounds it)."""
        task = spawn(coro, name="hub-ws-close")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def sweep(self) -> None:
        """One heartbeat round over every connection."""
        if not self.heartbeat:
            return
        now = self.now()
        for peer in list(self._live):
            peer.heartbeat(now, self.heartbeat)

    async def run(self) -> None:
        """Sweep four times per heartbeat interval, until cancelled: a dead peer goes within 1.5 to 2
        intervals (each of its two deadlines is seen up to a quarter interval late)."""
        if not self.heartbeat:
            return
        step = self.heartbeat / 4
        while True:
            await asyncio.sleep(step)
            self.sweep()

    async def heartbeat_ctx(self, app: object) -> AsyncIterator[None]:
        """The app's cleanup context for the sweep: started and stopped with the app."""
        task = spawn(self.run(), name="hub-heartbeat")
        yield
        await cancel_and_wait([task])

    async def close(self) -> None:
        """At shutdown, after the hub closed its clients: wait for the closes under way (their grace
        bounds them), then abort whatever socket is left."""
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        for peer in list(self._live):
            if peer.transport is not None:
                peer.transport.abort()
