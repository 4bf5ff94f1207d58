"""BusinessSource: the seed's appointment metrics from hour buckets kept current by change streams
(or by a background reconcile), so a tick's database work does not grow with the window."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pymongo
from pymongo import AsyncMongoClient
from pymongo.errors import ExecutionTimeout, NetworkTimeout, PyMongoError

from hub.config import BusinessSourceConfig
from hub.secrets import Secrets
from hub.sources.base import Source, SourceError, SourceResult
from hub.sources.business.buckets import (
    BucketStore,
    HourStats,
    Span,
    hour_of,
    hour_pipeline,
    hour_start,
    joined,
    monotonic,
    now_ms,
    parse_rows,
    runs,
    shape,
)
from hub.sources.business.client import (
    DEFAULT_DATABASE,
    client_options,
    describe_error,
    driver_deadline,
)
from hub.sources.business.detectors import MIN_LEFT, Detectors
from hub.sources.business.pipeline import QUERY_COMMENT, build_pipeline, shape_result
from hub.sources.business.tracker import ChangeTracker
from hub.state import Store
from hub.tasks import cancel_and_wait, spawn
from hub.vocab import TIME_RANGES, WINDOWS

if TYPE_CHECKING:
    from hub.notify import Notifier

log = logging.getLogger(__name__)

#: an endpoint window stays "in use" (its hours kept) this long after its last request
WINDOW_IDLE = 3600.0
#: with more closed hours than this to (re)compute, a call answers with the full pipeline and the hours
#: are filled in the background (warm-up, rebuilds), so a short tick budget never blocks filling them
COLD_HOURS = 3
#: the deadline of one background fill, in seconds (at least ten times sources.business.timeout)
FILL_TIMEOUT = 120.0
#: the window whose hours are kept for the expected bookings (4 weeks back from any hour of the last
#: day), whatever time_range is shown, while sources.business.anomaly is enabled
KEEP_WINDOW = "30d"


class BusinessSource(Source):
    """Fills `data.business` with the seed's appointment metrics for `cfg.time_range`, read-only.

    Closed hours are kept as aggregates in memory; each call queries only the open hour, the window's
    partial oldest hour and the closed hours that changed, then sums the hours. The answer equals the
    full pipeline's (build_pipeline) over the same window: by the next call after a change with change
    streams, within `reconcile_interval` seconds without.
    """

    name = "business"
    sections = ("business",)

    def __init__(self, cfg: BusinessSourceConfig, *, secrets: Secrets,
                 client_options: Mapping[str, Any] | None = None, metrics: Any = None,
                 notifier: Notifier | None = None, store: Store | None = None,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        # `cfg` was validated by hub/config, the one place that does; it is used as given.
        self.cfg = cfg
        self.timeout = cfg.timeout
        self.reconcile_interval = cfg.reconcile_interval
        self.metrics = metrics  # HubMetrics or None
        self._secrets = secrets
        self._extra_options = dict(client_options or {})  # tests: event_listeners
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._coll: Any = None
        self._init_error: str | None = None
        self.store = BucketStore()
        #: change detection (mode, change events, forced recomputes, rebuilds); set by start()
        self.changes: ChangeTracker | None = None
        self._inflight: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self._fill: asyncio.Task[None] | None = None
        self._used: dict[str, float] = {}  # endpoint window -> monotonic time of its last request
        self.queries_total = 0  # aggregate round-trips sent
        #: the wall clock of windows and detectors (tests drive it; UTC, aware, milliseconds)
        self.now: Callable[[], dt.datetime] = clock or now_ms
        self.anomaly = cfg.anomaly.enabled
        self.detectors = Detectors(cfg, secrets=secrets, aggregate=self._aggregate, buckets=self.store,
                                   now=lambda: self.now(), store=store, notifier=notifier)

    @property
    def mode(self) -> str | None:
        """change_stream or reconcile once known (`mode_reason` says why); None before the first call."""
        return self.changes.mode if self.changes is not None else None

    @property
    def mode_reason(self) -> str:
        """Why the source is in its mode (for `hub doctor` and logs)."""
        return self.changes.mode_reason if self.changes is not None else "not connected yet"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Create the one client for the process; never fails because the server is down."""
        if self._client is not None:
            return
        try:
            opts = {**client_options(self.timeout), **self._extra_options}
            self._client = AsyncMongoClient(self.cfg.mongodb_uri, **opts)
            await self._client.aconnect()  # starts background monitoring only; does not wait for a server
        except PyMongoError as exc:  # invalid URI options, unresolvable SRV record, ...
            self._init_error = "invalid MongoDB configuration: " + describe_error(
                exc, uri=self.cfg.mongodb_uri, timeout=self.timeout, secrets=self._secrets)
            log.error("business source: %s", self._init_error)
            if self._client is not None:
                await self._client.close()
            self._client = None
            return
        self._coll = self._client.get_default_database(DEFAULT_DATABASE)[self.cfg.collection]
        self.changes = ChangeTracker(self._coll, self.cfg.fields, self.store, aggregate=self._aggregate,
                                     reconcile_interval=self.reconcile_interval, metrics=self.metrics)

    async def ping(self) -> None:
        """Ping MongoDB with this source's client (the health source's `database` check)."""
        if self._client is None:
            raise SourceError(self._init_error or "business source not started")
        await self._client.admin.command("ping")

    async def close(self) -> None:
        """Cancel in-flight calls and the fill and wait until they have stopped, then close the change
        stream and the client."""
        tasks = [*self._inflight.values(), *([self._fill] if self._fill else [])]
        self._inflight.clear()
        # Awaited before the client closes: none is left pending, none runs on a closed client.
        await cancel_and_wait(tasks)
        if self.changes is not None:
            await self.changes.close()
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    # ------------------------------------------------------------------ the two entry points

    async def collect(self, budget: float) -> SourceResult:
        """The tick: `cfg.time_range`'s metrics, the database work kept inside `budget` seconds; with
        the anomaly detectors on, also `expected` and `anomaly` (announcing a transition)."""
        deadline = driver_deadline(budget)
        ends = monotonic() + deadline  # one deadline for all of the tick's queries, the detectors' too
        data, inputs = await self._with_expected(self.cfg.time_range, deadline, ends=ends)
        if inputs is not None:
            data.update(await self.detectors.judge(inputs, ends=ends, changes=self.changes) or {})
        return SourceResult(data={"business": data})

    async def metrics_for(self, time_range: str) -> dict[str, Any]:
        """The seed's metrics object for `time_range` from the same buckets, within cfg.timeout, with
        `expected` while the detectors are on; SourceError when unavailable."""
        if time_range not in WINDOWS:
            raise ValueError(f"unknown timeRange {time_range!r}; allowed: {', '.join(TIME_RANGES)}")
        self._used[time_range] = monotonic()
        data, expected = await self._with_expected(time_range, driver_deadline(self.timeout))
        if expected is not None:
            data["expected"] = expected[0].to_dict()
        return data

    # ------------------------------------------------------------------ expected bookings

    async def _with_expected(self, time_range: str, deadline: float, *,
                             ends: float | None = None) -> tuple[dict[str, Any], Any]:
        """`time_range`'s answer, and with the detectors on (Expected, rate, bookings of the last 60
        minutes, now), or None when those could not be had this time (logged; the answer stands)."""
        if not self.anomaly:
            return dict(await self._get(time_range, deadline=deadline)), None
        # The kept window's hours feed the expectation: kept current before the shown window is answered,
        # one after the other (a call finding the stream busy would answer with the full pipeline), each
        # within half the deadline; one computation when they are the same window.
        first, open_h = self._closed_hours(KEEP_WINDOW)
        if self.changes is not None and (
                (self._fill is not None and not self._fill.done())
                or len(self.store.needed(first, open_h)) > COLD_HOURS):
            # Warming up (start, rebuild): the kept hours fill in the background with their own deadline,
            # and the shown window keeps the whole one meanwhile. Computing the kept window within half a
            # tick would be its full pipeline over 28 days, which the demo's 1 s tick cannot fit.
            self._start_fill(KEEP_WINDOW)
            return dict(await self._get(time_range, deadline=deadline)), None
        half = round(deadline / 2, 3)
        try:
            await self._get(KEEP_WINDOW, deadline=half)
        except SourceError:
            main = await self._get(time_range, deadline=half)
            return dict(main), None
        main = await self._get(time_range, deadline=half)
        left = (monotonic() + deadline if ends is None else ends) - monotonic()
        try:
            if left < MIN_LEFT:
                raise ExecutionTimeout(f"no time left in the tick ({left:.3f} s)")
            with pymongo.timeout(left):
                return dict(main), await self.detectors.expected()
        except PyMongoError as exc:
            self.detectors.skipped("expected bookings", exc, left)
            return dict(main), None

    async def _get(self, time_range: str, *, deadline: float) -> dict[str, Any]:
        task = self._inflight.get(time_range)
        if task is None:
            # Concurrent callers for one window (ticks and API requests) share one computation, so
            # it must not inherit the context (a pymongo.timeout) of whichever caller started it.
            task = spawn(self._compute(time_range, deadline), name=f"hub-business-{time_range}")
            self._inflight[time_range] = task
            task.add_done_callback(lambda t: self._finished(time_range, t))
        # shield: one caller's cancellation must not cancel the computation the others wait for.
        return await asyncio.shield(task)

    def _finished(self, time_range: str, task: asyncio.Task[dict[str, Any]]) -> None:
        if self._inflight.get(time_range) is task:
            del self._inflight[time_range]
        if not task.cancelled():
            task.exception()  # mark retrieved when every waiter gave up

    async def _compute(self, time_range: str, deadline: float) -> dict[str, Any]:
        if self._client is None or self.changes is None:
            raise SourceError(self._init_error or "business source not started")
        applied = deadline  # the deadline in force, named in the log if it expires
        try:
            with pymongo.timeout(deadline):
                first, open_h = self._closed_hours(time_range)
                if first >= open_h:
                    # No closed hour in the window (1h): no bucket to read or fill, so answer with the
                    # full pipeline's one $facet, which the server evaluates faster than the per-hour
                    # $group over the same documents (query $match, not per-document expressions).
                    await self._changes_without_closed_hours(time_range, open_h)
                    return await self._full(time_range)
                if self._fill is not None and not self._fill.done():
                    return await self._full(time_range)  # the background fill owns the stream meanwhile
                # The stream gets half the budget: a backlog it cannot drain in time (a bulk load, a
                # long outage) is caught up in the background, and the full pipeline answers meanwhile.
                applied = deadline / 2
                try:
                    with pymongo.timeout(applied):
                        if not await self.changes.apply(wait=False):
                            # Another window's call is draining the stream: never queue behind it
                            # (a lock wait knows no deadline); the full pipeline is exact too.
                            return await self._full(time_range)
                    behind = self.changes.behind
                except (ExecutionTimeout, NetworkTimeout):
                    # Not even one batch of the stream came within the half budget (a backlog on a
                    # loaded server: the demo's seed, a bulk load beside a start). Failing the tick
                    # would fail every next one alike, on the same first batch: it is a backlog too.
                    behind = True
                applied = deadline
                if behind:
                    self._start_fill(time_range)
                    return await self._full(time_range)
                if len(self.store.needed(first, open_h)) > COLD_HOURS:
                    # Warming up (start, rebuild, a forced recompute): filling many hours may not fit
                    # in a tick. Fill them in the background with a longer deadline, and answer this
                    # call with the one full pipeline, which is exact too.
                    self._start_fill(time_range)
                    return await self._full(time_range)
                return await self._window(time_range)
        except PyMongoError as exc:
            reason = describe_error(exc, uri=self.cfg.mongodb_uri, timeout=applied, secrets=self._secrets)
            log.warning("business source: %s", reason)
            raise SourceError(reason) from None

    async def _changes_without_closed_hours(self, time_range: str, open_h: int) -> None:
        """Change detection for a call that reads no kept hour: only what keeps the stream sound."""
        assert self.changes is not None
        if self._largest_window() <= WINDOWS[time_range]:  # no window in use keeps hours
            self.store.drop_outside(open_h, open_h)
            if self.metrics is not None:
                self.metrics.business_buckets.set(0)
        if self.mode is None:
            await self.changes.apply(wait=False)  # learn the mode (hub_business_mode), unless a drain runs
        elif (self.mode == "change_stream" and not self.anomaly  # the anomaly's kept window owns the stream
              and not self.store.buckets and not self.store.inflight):
            await self.changes.forget()  # nothing kept, nothing to track until hours are computed again
        # Otherwise the stream's events wait for the next call that reads closed hours: a window in
        # use within WINDOW_IDLE, or its hours are dropped and the stream closed as above.

    def _closed_hours(self, time_range: str) -> tuple[int, int]:
        """The closed hours wholly inside `time_range`'s window now, as [first, open hour)."""
        now = self.now()
        first = hour_of(now - WINDOWS[time_range])
        if hour_start(first) < now - WINDOWS[time_range]:
            first += 1
        return first, hour_of(now)

    def _start_fill(self, time_range: str) -> None:
        """Recompute the needed hours of the largest window in use, in the background, once at a time."""
        if self._fill is not None and not self._fill.done():
            return
        kept = (KEEP_WINDOW,) if self.anomaly else ()
        largest = max((time_range, *self._used, *kept), key=lambda w: WINDOWS[w])
        deadline = max(FILL_TIMEOUT, 10 * self.timeout)  # its own, never a call's

        async def fill() -> None:
            try:
                with pymongo.timeout(deadline):
                    assert self.changes is not None
                    await self.changes.apply()
                    while self.changes.behind:  # each drain resumes after the last event it read
                        await self.changes.apply()
                    await self._window(largest)
            except (PyMongoError, SourceError) as exc:
                log.warning("business source: filling hour buckets failed (retried next tick): %s",
                            describe_error(exc, uri=self.cfg.mongodb_uri, timeout=deadline,
                                           secrets=self._secrets))

        # Started from inside a call's pymongo.timeout: a fresh context, or the fill would inherit
        # the call's deadline (a fraction of a second) instead of its own.
        self._fill = spawn(fill(), name="hub-business-fill")

    async def filled(self) -> None:
        """Wait until the background fill of hour buckets, if one runs, has finished (benchmarks, tests)."""
        if self._fill is not None:
            await asyncio.wait([self._fill])

    async def _full(self, time_range: str) -> dict[str, Any]:
        """The window by today's single full pipeline (the oracle), while the buckets fill."""
        now = self.now()
        docs = await self._aggregate(build_pipeline(self.cfg.fields, now - WINDOWS[time_range]))
        return shape_result(docs[0] if docs else None, time_range=time_range, timestamp=now,
                            min_cell_size=self.cfg.min_cell_size, max_specialties=self.cfg.max_specialties)

    async def _aggregate(self, pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.queries_total += 1
        cursor = await self._coll.aggregate(pipeline, comment=QUERY_COMMENT)
        return await cursor.to_list(None)

    # ------------------------------------------------------------------ one window

    def _largest_window(self) -> dt.timedelta:
        now = monotonic()
        in_use = [self.cfg.time_range, *(w for w, t in self._used.items() if now - t < WINDOW_IDLE),
                  *((KEEP_WINDOW,) if self.anomaly else ())]
        return max(WINDOWS[w] for w in in_use)

    async def _window(self, time_range: str) -> dict[str, Any]:
        now = self.now()
        start = now - WINDOWS[time_range]
        open_h = hour_of(now)
        first = hour_of(start)
        partial = hour_start(first) < start  # the oldest hour is only partly in the window
        if partial:
            first += 1
        self.store.drop_outside(hour_of(now - self._largest_window()), open_h)
        needed = self.store.needed(first, open_h)
        if self.changes is not None and self.changes.mode == "reconcile":
            needed |= self.changes.reconcile_slice(first, open_h)
        spans: list[Span] = []
        if partial:
            spans.append((start, hour_start(first)))
        spans += [(hour_start(a), hour_start(b)) for a, b in runs(needed)]
        spans.append((max(start, hour_start(open_h)), None))  # the open hour (and any future-dated)
        spans = joined(spans)
        started, generation = monotonic(), self.store.generation
        self.store.begin(needed)
        ok = False
        try:
            # One aggregation per span, concurrently: a $or of ranges (or $unionWith) makes some servers
            # (SecantusDB) scan the collection, while a single range always uses the created-at index.
            # Parts of this call: they inherit its deadline (create_task), and none outlives it.
            parts = [asyncio.create_task(self._aggregate(hour_pipeline(self.cfg.fields, [span])),
                                         name="hub-business-span") for span in spans]
            try:
                batches = await asyncio.gather(*parts)
            finally:  # gather leaves the others running when one fails or the call is cancelled
                await cancel_and_wait(parts)
            found = parse_rows(row for rows in batches for row in rows)
            self.store.store(needed, found, started=started, generation=generation)
            ok = True
        finally:
            self.store.end(needed, ok=ok)
        if self.metrics is not None:
            self.metrics.business_buckets.set(len(self.store))
        extra: list[HourStats] = [s for h, s in found.items() if h >= open_h]
        if partial and first - 1 in found:
            extra.append(found[first - 1])
        fresh = {h: found.get(h) or HourStats() for h in needed}
        stats = self.store.merged(first, open_h, fresh=fresh, extra=extra)
        return shape(stats, time_range=time_range, timestamp=now, min_cell_size=self.cfg.min_cell_size,
                     max_specialties=self.cfg.max_specialties)

