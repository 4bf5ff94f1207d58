"""The anomaly detectors beside the business source: the hour's expectation, the verdict, the watch
that announces transitions, and the streak of ticks they had to skip."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pymongo
from pymongo.errors import ExecutionTimeout, PyMongoError

from hub.config import BusinessSourceConfig
from hub.secrets import Secrets
from hub.sources.business.anomaly import Schedule, evaluate
from hub.sources.business.buckets import BucketStore, hour_of, monotonic
from hub.sources.business.client import describe_error
from hub.sources.business.expected import Expected, Rate, expected_rate
from hub.sources.business.expected import elapsed as hour_elapsed
from hub.sources.business.recent import first_booking_hour, last_booking, recent_counts
from hub.sources.business.watch import AnomalyWatch
from hub.state import MemoryStore, Store

if TYPE_CHECKING:
    from hub.notify import Notifier
    from hub.sources.business.tracker import ChangeTracker

log = logging.getLogger("hub.sources.business.source")  # the source's own log lines, as before the split

#: the detectors' queries need at least this much of the tick's deadline left, or wait for the next tick
MIN_LEFT = 0.05
#: consecutive ticks without the detectors before it is a WARNING
SKIPS_TO_WARN = 3

Aggregate = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]
#: what `Detectors.expected` gives: (Expected, rate, bookings of the last 60 minutes, last booking, now)
Inputs = tuple[Expected, Rate, int, dt.datetime | None, dt.datetime]


class Detectors:
    """The detectors' state for one business source (its config, queries and kept hours)."""

    def __init__(self, cfg: BusinessSourceConfig, *, secrets: Secrets, aggregate: Aggregate, buckets: BucketStore,
                 now: Callable[[], dt.datetime], store: Store | None = None,
                 notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self._secrets = secrets
        self._aggregate = aggregate
        self._buckets = buckets
        self._now = now
        self.schedule = Schedule(cfg.anomaly)
        self.watch = AnomalyWatch(self.schedule, store=store if store is not None else MemoryStore(),
                                  notifier=notifier)
        self._skipped = 0  # consecutive ticks without the detectors (their queries failed or found no time)
        self._history_from: tuple[int, int | None] | None = None  # (open hour when looked up, first booking's hour)

    async def expected(self) -> Inputs:
        """The current hour's expectation from the kept hours and the recent bookings (hub.sources.business.recent)."""
        now = self._now()
        open_h = hour_of(now)
        if self._history_from is None or self._history_from[0] != open_h:  # once an hour
            self._history_from = (open_h, await first_booking_hour(self._aggregate, self.cfg.fields))
        counts = {h: b.total for h, b in self._buckets.buckets.items()}
        rate = expected_rate(counts, history_from=self._history_from[1])
        n60, this_hour, last = await recent_counts(self._aggregate, self.cfg.fields, now)
        hour, weeks = rate(open_h)
        return Expected(hour, this_hour, hour_elapsed(now), weeks), rate, n60, last, now

    async def judge(self, inputs: Inputs, *, ends: float, changes: ChangeTracker | None) -> dict[str, Any] | None:
        """`{"expected", "anomaly"}` for the tick from `inputs`, looking up the last booking within what is
        left until `ends` (monotonic) when none came in the last hour; None when that found no time."""
        exp, rate, observed_60, last, now = inputs
        if last is None:  # no booking in the last 60 minutes: the stream's inserts, or one look-up
            left = ends - monotonic()
            try:
                if left < MIN_LEFT:
                    raise ExecutionTimeout(f"no time left in the tick ({left:.3f} s)")
                with pymongo.timeout(left):
                    assert changes is not None
                    last = await last_booking(self._aggregate, self.cfg.fields, changes, now)
            except PyMongoError as exc:
                self.skipped("last booking", exc, left)
                return None
        self.ran()
        verdict = evaluate(now, p=self.cfg.anomaly.p, schedule=self.schedule, rate=rate,
                           observed_60=observed_60, last_booking=last)
        return {"expected": exp.to_dict(), "anomaly": await self.watch.update(verdict, exp, now)}

    def skipped(self, what: str, exc: BaseException, timeout: float) -> None:
        """A tick without the detectors: logged at INFO, and at WARNING once it happened SKIPS_TO_WARN
        times in a row (one slow query on a loaded machine is no operator's problem; a streak is)."""
        self._skipped += 1
        reason = describe_error(exc, uri=self.cfg.mongodb_uri, timeout=timeout, secrets=self._secrets)
        if self._skipped == SKIPS_TO_WARN:
            log.warning("business source: anomaly detectors skipped %d ticks in a row (%s: %s)",
                        self._skipped, what, reason)
        elif self._skipped < SKIPS_TO_WARN:
            log.info("business source: anomaly detectors skipped this tick (%s: %s)", what, reason)

    def ran(self) -> None:
        """The detectors ran this tick: a streak of skips ends (said once, when it had been warned of)."""
        if self._skipped >= SKIPS_TO_WARN:
            log.info("business source: anomaly detectors running again")
        self._skipped = 0
