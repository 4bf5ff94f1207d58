"""The tick loop: collect every source concurrently, build one snapshot, hand it to a sink."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from hub.config import scrub
from hub.metrics import HubMetrics
from hub.sources.base import Source, SourceError, SourceResult

log = logging.getLogger(__name__)

#: a source's budget is capped at this fraction of the interval, so a tick never runs into the next
BUDGET_FRACTION = 0.8
#: the scheduler cancels a source this long after its budget (at most a tenth of the interval), so a
#: source that honours its budget reports its own readable reason and keeps what finished
GRACE = 0.25

Sink = Callable[[dict[str, Any]], Awaitable[None]]


def utc_iso(ts: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds and a Z, as JavaScript's Date.toISOString() prints it."""
    dt = datetime.fromtimestamp(time.time() if ts is None else ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def describe(exc: BaseException) -> str:
    """A readable one-line reason for a failed collection."""
    if isinstance(exc, SourceError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Scheduler:
    """Runs ticks on the monotonic clock: no drift, no overlap, first tick at start-up."""

    def __init__(self, *, sources: Sequence[Source], disabled: Sequence[tuple[str, tuple[str, ...]]] = (),
                 interval: float, metrics: HubMetrics, sink: Sink, secrets: Sequence[str] = (),
                 first_seq: Callable[[], Awaitable[int]] | None = None) -> None:
        self.sources = list(sources)
        self.disabled = list(disabled)
        self.interval = interval
        self.metrics = metrics
        self.sink = sink
        self.secrets = list(secrets)
        self.seq = 0
        self._first_seq = first_seq
        self._failures: dict[str, int] = {}
        self._last_error: dict[str, str | None] = {}
        for s in self.sources:
            metrics.source_up.labels(s.name).set(0)
            metrics.source_failures.labels(s.name).set(0)
            metrics.collect_errors.labels(s.name)

    def budget(self, source: Source) -> float:
        """The time `source` gets per tick."""
        return min(source.timeout, self.interval * BUDGET_FRACTION)

    async def _run_one(self, source: Source) -> tuple[SourceResult | None, dict[str, Any]]:
        budget = self.budget(source)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        result: SourceResult | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(budget + min(GRACE, self.interval * 0.1)):
                result = await source.collect(budget)
        except TimeoutError:
            error = f"timed out after {budget:g} s"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one source never breaks the tick
            error = describe(exc)
        elapsed = loop.time() - t0
        self.metrics.collect_duration.labels(source.name).observe(elapsed)
        if result is not None and result.error is None:
            status = "ok"
        elif result is not None:
            status, error = "partial", result.error
        else:
            status = "error"
        if error is not None:
            error = scrub(error, self.secrets)
        self._account(source.name, status, error)
        entry: dict[str, Any] = {"status": status, "latency_ms": round(elapsed * 1000, 1),
                                 "collected_at": utc_iso(), "error": error}
        if result is not None and result.warnings:
            entry["warnings"] = [scrub(w, self.secrets) for w in result.warnings]
        return result, entry

    def _account(self, name: str, status: str, error: str | None) -> None:
        m = self.metrics
        if status == "error":
            m.collect_errors.labels(name).inc()
            self._failures[name] = self._failures.get(name, 0) + 1
            m.source_up.labels(name).set(0)
        else:
            self._failures[name] = 0
            m.source_up.labels(name).set(1)
        m.source_failures.labels(name).set(self._failures[name])
        # Log a failure once when it starts or changes, and once when it recovers: a dead
        # dependency must not write a line per tick for hours.
        previous = self._last_error.get(name)
        if error != previous:
            if error is not None:
                log.warning("source %s: %s (%s)", name, status, error)
            elif previous is not None:
                log.info("source %s recovered", name)
        self._last_error[name] = error

    async def collect(self) -> dict[str, Any]:
        """Collect every source concurrently and return the next snapshot (seq assigned here)."""
        outcomes = await asyncio.gather(*(self._run_one(s) for s in self.sources))
        data: dict[str, Any] = {"system": None, "application": None, "business": None, "alerts": None}
        sources: dict[str, Any] = {}
        for source, (result, entry) in zip(self.sources, outcomes, strict=True):
            sources[source.name] = entry
            if result is not None:
                for section in source.sections:
                    data[section] = result.data.get(section)
        for name, _sections in self.disabled:
            if name in sources:  # an embedding replaced the configured source (e.g. the demo)
                continue
            sources[name] = {"status": "disabled", "latency_ms": None, "collected_at": None, "error": None}
        self.seq += 1
        return {"type": "metrics_update", "seq": self.seq, "timestamp": utc_iso(), "data": data,
                "sources": sources}

    async def tick(self) -> None:
        """One tick: collect, then hand the snapshot to the sink."""
        snapshot = await self.collect()
        await self.sink(snapshot)

    async def run(self, *, ready: Callable[[], None] | None = None) -> None:
        """Tick now, then every `interval` seconds on the monotonic clock until cancelled."""
        if self._first_seq is not None:
            self.seq = await self._first_seq()
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("tick %s failed", self.seq)
            if ready is not None:
                ready()
                ready = None
            n += 1
            # Next deadline on the fixed grid; if a tick overran, skip the missed slots
            # rather than firing a burst.
            now = loop.time()
            due = start + n * self.interval
            if due < now:
                n = int((now - start) // self.interval) + 1
                due = start + n * self.interval
            await asyncio.sleep(due - now)
