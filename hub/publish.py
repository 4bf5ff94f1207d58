"""Publishing: the one owner of `seq` and `epoch`. It numbers each collection and hands it to the
broadcaster; the local publisher does it in-process, the Redis one (hub.cluster) through a stream."""

from __future__ import annotations

import abc
import asyncio
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any

from hub.broadcast import Broadcaster
from hub.feed import Entry
from hub.metrics import HubMetrics
from hub.scheduler import Collected, Scheduler, run_every
from hub.vocab import describe

log = logging.getLogger(__name__)


def new_epoch() -> str:
    """A fresh stream epoch: sortable by creation time, unique across processes."""
    return f"{int(time.time()):x}-{secrets.token_hex(4)}"


class SourceStatuses:
    """hub_source_up / hub_source_consecutive_failures from the statuses of delivered snapshots.

    Fed by every snapshot a replica serves, whoever collected it, so all replicas agree and the
    counts continue across a leader fail-over.
    """

    def __init__(self, metrics: HubMetrics) -> None:
        self.metrics = metrics
        self._failures: dict[str, int] = {}

    def observe(self, statuses: Mapping[str, Any]) -> None:
        """Account one snapshot's `sources` statuses (name -> "ok" | "partial" | "error" | "disabled")."""
        for name, status in statuses.items():
            if not isinstance(status, str) or status == "disabled":
                continue
            ok = status in ("ok", "partial")
            self._failures[name] = 0 if ok else self._failures.get(name, 0) + 1
            self.metrics.source_up.labels(name).set(1 if ok else 0)
            self.metrics.source_failures.labels(name).set(self._failures[name])


class Publisher(abc.ABC):
    """Drives ticks until cancelled and delivers numbered snapshots to the broadcaster."""

    def __init__(self, *, scheduler: Scheduler | None, broadcaster: Broadcaster, metrics: HubMetrics) -> None:
        self.scheduler = scheduler
        self.broadcaster = broadcaster
        self.metrics = metrics
        self.statuses = SourceStatuses(metrics)
        # A stalled replica's last snapshot may be outdated: it exports no check state meanwhile.
        metrics.health_check_up.fresh = lambda: not self.stalled()
        metrics.business_export.fresh = lambda: not self.stalled()
        #: error of the last tick that failed as a whole (None after a good one)
        self.tick_error: str | None = None
        #: True once a snapshot has been delivered and the latest tick did not fail
        self.ready = False

    @abc.abstractmethod
    async def run(self) -> None:
        """Tick (or follow) until cancelled."""

    def status(self) -> dict[str, Any] | None:
        """Extra readiness detail for /ready (cluster state), or None."""
        return None

    def degraded(self) -> bool:
        """True while the hub serves but cannot publish normally (e.g. Redis down)."""
        return False

    def stalled(self) -> bool:
        """True while snapshots should arrive but none has for a while (cluster: Redis up, feed silent)."""
        return False

    async def deliver(self, entry: Entry, data: Mapping[str, Any], statuses: Mapping[str, Any]) -> None:
        """Hand a numbered snapshot to the broadcaster; account its source statuses and the health
        checks' states it carries (hub_health_check_up follows what a replica serves)."""
        if await self.broadcaster.deliver(entry, data):
            self.statuses.observe(statuses)
            self.metrics.health_check_up.observe(data)
            self.metrics.business_export.observe(data)

    def tick_failed(self, exc: BaseException) -> None:
        """Count and report a tick that failed as a whole (logged once per distinct reason)."""
        error = describe(exc)
        self.metrics.tick_failures.inc()
        if error != self.tick_error:
            log.error("tick failed: %s", error, exc_info=exc)
        self.tick_error = error
        self.ready = False

    def tick_ok(self) -> None:
        """Record a delivered tick."""
        if self.tick_error is not None:
            log.info("ticks recovered")
        self.tick_error = None
        self.ready = True


class LocalPublisher(Publisher):
    """Single-process mode: seq starts at 1 in a fresh epoch at every start."""

    def __init__(self, *, scheduler: Scheduler, broadcaster: Broadcaster, metrics: HubMetrics,
                 interval: float, epoch: str | None = None) -> None:
        super().__init__(scheduler=scheduler, broadcaster=broadcaster, metrics=metrics)
        self.interval = interval
        self.epoch = epoch or new_epoch()
        self.seq = 0
        broadcaster.feed.default_epoch = self.epoch

    async def tick(self) -> None:
        """Collect, number and deliver one snapshot; a failure is counted, and the next tick still comes."""
        assert self.scheduler is not None
        try:
            collected = await self.scheduler.collect()
            entry = self.number(collected, self.seq + 1, self.epoch)
            await self.deliver(entry, collected.data, collected.statuses)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.tick_failed(exc)
        else:
            self.tick_ok()
        finally:
            # A number is used only once a snapshot carrying it reached the feed: a failed tick
            # leaves no gap for connected clients.
            feed = self.broadcaster.feed
            if feed.epoch == self.epoch:
                self.seq = max(self.seq, feed.seq)

    @staticmethod
    def number(collected: Collected, seq: int, epoch: str) -> Entry:
        """The snapshot entry for `collected` with `seq` and `epoch`."""
        return Entry(seq=seq, epoch=epoch, timestamp=collected.timestamp, sections=collected.sections,
                     sources=collected.sources)

    async def run(self) -> None:
        await run_every(self.interval, self.tick)
