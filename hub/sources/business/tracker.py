"""ChangeTracker: turns what the change stream finds into dirty hours of a BucketStore, or, where the
server has no change streams, picks the closed hours each call recomputes (reconcile mode)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from hub.config import BusinessFields
from hub.sources.business.buckets import BucketStore, hour_key, hour_of, monotonic
from hub.sources.business.changes import (
    ABSENT,
    MAX_IDS,
    ChangeFeed,
    ChangeStreamsUnavailable,
    collection_identity,
)

log = logging.getLogger(__name__)

Aggregate = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]
MODES = ("change_stream", "reconcile")
#: the reconcile recomputes every closed hour within this share of reconcile_interval (the rest is slack
#: for the interval between ticks)
RECONCILE_SHARE = 0.8


def hours_of_ids_pipeline(fields: BusinessFields, ids: Sequence[Any]) -> list[dict[str, Any]]:
    """The hours the documents `ids` are in now: only hours come back, never a document."""
    return [
        {"$match": {"_id": {"$in": list(ids)}, fields.created_at: {"$type": "date"}}},
        {"$group": {"_id": hour_key(fields)}},
    ]


class ChangeTracker:
    """Marks the hours of `store` that changed dirty from the change stream where the server has one;
    otherwise (mode "reconcile") it picks the closed hours each call recomputes (reconcile_slice)."""

    def __init__(self, coll: Any, fields: BusinessFields, store: BucketStore, *, aggregate: Aggregate,
                 reconcile_interval: float, metrics: Any = None) -> None:
        self.feed = ChangeFeed(coll, fields)
        self.fields = fields
        self.store = store
        self.aggregate = aggregate  # the source's read-only aggregate (counts its round-trips)
        self.reconcile_interval = reconcile_interval
        self.metrics = metrics  # HubMetrics or None
        self.lock = asyncio.Lock()
        #: change_stream or reconcile once known, and why
        self.mode: str | None = None
        self.mode_reason = "not connected yet"
        self._stream_retry_at = -math.inf
        self.pending_ids: list[Any] = []  # updated documents whose hour is still to be looked up
        self._unknown_pending = False  # a change of unknown hour (delete) waits for the next full recompute
        self._last_forced = -math.inf
        self._last_slice: float | None = None
        self._forgotten = False  # forget() closed the stream: its reopening starts a new generation
        self.behind = False  # the last drain stopped before the end of the backlog
        #: the latest created-at the stream's inserts carried (the last booking), and whether it is known to
        #: be the collection's latest: False until one indexed look-up seeded it after the stream opened
        self.latest: dt.datetime | None = None
        self.latest_known = False
        #: the collection's identity (collection_identity) when last checked; None before the first check
        self.identity: Any = None
        #: change events received, recomputes of every kept hour forced by a change of unknown hour,
        #: rebuilds after a lost resume point, rebuilds after the collection was replaced
        self.events_total = 0
        self.forced_total = 0
        self.resets_total = 0
        self.replaced_total = 0

    async def apply(self, *, wait: bool = True) -> bool:
        """Drain the change stream and mark the hours it touched dirty (or fall back to reconcile).

        With wait=False, return False at once, doing nothing, while another caller holds the stream:
        a lock wait is bounded by no pymongo.timeout, so a tick must never queue behind the background
        fill (whose deadline is minutes) or another window's drain."""
        if not wait and self.lock.locked():
            return False
        async with self.lock:
            await self._check_identity()
            if self.mode == "reconcile" and monotonic() < self._stream_retry_at:
                return True
            try:
                changes = await self.feed.drain()
            except ChangeStreamsUnavailable as exc:
                self._set_mode("reconcile", f"{exc}; closed hours are recomputed within "
                                            f"reconcile_interval = {self.reconcile_interval:g}s")
                self._stream_retry_at = monotonic() + self.reconcile_interval
                return True
            if self._forgotten or self.mode != "change_stream":
                self.latest_known = False  # inserts before this stream opened are in no stream
            if self._forgotten:
                # Changes between forget() and this reopening are in no stream: a computation started
                # in that gap must not store its hours (the store's generation moves on).
                self._forgotten = False
                self.store.clear()
            if self.mode != "change_stream":
                if self.mode == "reconcile":  # changes before the stream opened are not in it
                    self._count_dirty(self.store.mark_all())
                self._set_mode("change_stream", "the server supports change streams; changes show by the next tick")
            self.events_total += changes.events
            if changes.latest is not None and (self.latest is None or changes.latest > self.latest):
                self.latest = changes.latest
            self.behind = changes.truncated
            if changes.reset:
                self.latest_known = False
                self.store.clear()
                self.pending_ids.clear()
                self.resets_total += 1
            self._count_dirty(self.store.mark(changes.hours))
            # Updates name a document, not its hour: look the hours up. The ids stay pending until that
            # succeeds, because the stream has moved past their events.
            self.pending_ids += changes.ids
            if len(self.pending_ids) > MAX_IDS:  # with ids still pending from a failed look-up
                self.pending_ids.clear()
                changes.overflow = changes.unknown = True
            if changes.overflow and self.metrics is not None:
                self.metrics.business_change_overflow.inc()
            if changes.unknown:
                self._unknown_pending = True
            if self.pending_ids and not self.store.buckets and not self.store.inflight:
                self.pending_ids.clear()  # no hour kept or being computed: nothing for them to mark
            elif self.pending_ids:
                self._count_dirty(self.store.mark(await self._hours_of(self.pending_ids)))
                self.pending_ids.clear()
            # Deletes carry no created-at: recompute every kept hour, at most once per reconcile_interval.
            if self._unknown_pending and monotonic() - self._last_forced >= self.reconcile_interval:
                self._unknown_pending = False
                self._last_forced = monotonic()
                self.forced_total += 1
                self._count_dirty(self.store.mark_all())
            return True

    async def _check_identity(self) -> None:
        """Rebuild every kept hour if the collection is no longer the one they were computed from.

        A collection renamed into the watched name, or dropped and created again, has a new UUID. MongoDB
        also says so on the stream (rename, invalidate), but SecantusDB sends nothing for a rename into
        the name, and without change streams nothing is sent at all: this check covers both, every call.
        """
        identity = await collection_identity(self.feed.coll)
        if self.identity is None or identity == self.identity:
            self.identity = identity
            return
        what = ("created" if self.identity == ABSENT else "dropped" if identity == ABSENT
                else "replaced (a new collection UUID: renamed into the name, or dropped and created again)")
        log.info("business source: collection %s was %s; rebuilding all hours", self.feed.coll.full_name, what)
        self.identity = identity
        self.replaced_total += 1
        self.latest, self.latest_known = None, False
        # The stream's resume point belongs to the old collection's history: a fresh stream from now on,
        # and every hour recomputed after it opens (a computation started before never stores its hours).
        await self.feed.close()
        self.feed.token = None
        self.store.clear()
        self.pending_ids.clear()
        self._unknown_pending = False

    async def forget(self) -> None:
        """No hour is kept: close the stream and drop its resume point, pending ids and unknown changes.
        The next apply() opens a fresh stream before any hour is computed, so nothing is missed.
        Does nothing while another caller holds the stream (it keeps or computes hours: not forgotten)."""
        if self.lock.locked():
            return
        async with self.lock:
            await self.feed.close()
            self.feed.token = None
            self.pending_ids.clear()
            self._unknown_pending = False
            self._forgotten = True

    def reconcile_slice(self, first: int, end: int) -> set[int]:
        """Without change streams: the stalest closed hours in [first, end), so that each is recomputed
        within RECONCILE_SHARE * reconcile_interval, spread evenly over the calls."""
        now = monotonic()
        period = RECONCILE_SHARE * self.reconcile_interval
        elapsed = 0.0 if self._last_slice is None else now - self._last_slice
        self._last_slice = now
        k = math.ceil((end - first) * elapsed / period)
        overdue = {h for h in range(first, end) if now - self.store.computed_at.get(h, now) >= period}
        return set(self.store.stalest(first, end, k)) | overdue

    async def _hours_of(self, ids: Sequence[Any]) -> set[int]:
        rows = await self.aggregate(hours_of_ids_pipeline(self.fields, ids))
        return {hour_of(row["_id"]) for row in rows if isinstance(row.get("_id"), dt.datetime)}

    def _set_mode(self, mode: str, reason: str) -> None:
        if mode != self.mode:
            log.info("business source: mode %s: %s", mode, reason)
        self.mode, self.mode_reason = mode, reason
        if self.metrics is not None:
            for m in MODES:
                self.metrics.business_mode.labels(m).set(1 if m == mode else 0)

    def _count_dirty(self, n: int) -> None:
        if n and self.metrics is not None:
            self.metrics.business_dirty_hours.inc(n)

    async def close(self) -> None:
        """Close the change stream (its resume token is kept)."""
        await self.feed.close()
