"""Collection: one grid loop (`run_every`) and the Scheduler, which owns each source's time budget,
runs every source concurrently inside its own failure isolation and encodes what it returned."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from hub.metrics import HubMetrics
from hub.secrets import Secrets
from hub.sources.base import Source, SourceError, SourceResult
from hub.vocab import TOPICS, describe, utc_iso

log = logging.getLogger(__name__)

#: a source's budget is capped at this fraction of the interval, so a tick never runs into the next
BUDGET_FRACTION = 0.8
#: the scheduler cancels a source this long after its budget (at most a tenth of the interval), so a
#: source that honours its budget reports its own readable reason and keeps what finished
GRACE = 0.25


async def run_every(interval: float, fn: Callable[[], Awaitable[None]], *,
                    clock: Callable[[], float] | None = None,
                    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
    """Await `fn()` now, then every `interval` seconds on a fixed grid, until cancelled.

    No drift (the grid is computed from the start), no overlap (the next call waits for this one),
    and no burst after an overrun: missed slots are skipped.
    """
    now = clock or asyncio.get_running_loop().time
    start = now()
    n = 0
    while True:
        await fn()
        n += 1
        t = now()
        due = start + n * interval
        if due < t:
            n = int((t - start) // interval) + 1
            due = start + n * interval
        await sleep(due - t)


@dataclass(slots=True)
class Collected:
    """One tick's collection, not yet numbered: encoded pieces plus the parsed data they came from."""

    timestamp: str
    data: dict[str, Any]
    sections: dict[str, bytes]
    sources: dict[str, bytes]
    statuses: dict[str, str]


DISABLED = orjson.dumps({"status": "disabled", "latency_ms": None, "collected_at": None, "error": None})


class Scheduler:
    """Collects every source concurrently, each within the budget this class grants it."""

    def __init__(self, *, sources: Sequence[Source], disabled: Sequence[tuple[str, tuple[str, ...]]] = (),
                 interval: float, metrics: HubMetrics, secrets: Secrets | None = None) -> None:
        self.sources = list(sources)
        self.disabled = list(disabled)
        self.interval = interval
        self.metrics = metrics
        self.secrets = secrets if secrets is not None else Secrets()
        self._last_error: dict[str, str | None] = {}
        names = [s.name for s in self.sources]
        self.section_names = tuple(dict.fromkeys([*TOPICS, *(x for s in self.sources for x in s.sections),
                                                  *(x for _n, secs in self.disabled for x in secs)]))
        for name in names:
            metrics.collect_errors.labels(name)

    def budget(self, source: Source) -> float:
        """The seconds `source` may use per tick: what it asks for, within its share of the interval."""
        return min(source.timeout, self.interval * BUDGET_FRACTION)

    async def _run_one(self, source: Source) -> tuple[dict[str, bytes], dict[str, Any], dict[str, Any]]:
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
            if not isinstance(exc, SourceError) and error != self._last_error.get(source.name):
                log.warning("source %s raised", source.name, exc_info=exc)
        elapsed = loop.time() - t0
        self.metrics.collect_duration.labels(source.name).observe(elapsed)
        encoded: dict[str, bytes] = {}
        parsed: dict[str, Any] = {}
        if result is not None:
            # Encoded here, inside this source's isolation: a value JSON cannot carry fails this
            # source, never the tick (docs/security.md).
            try:
                for section in source.sections:
                    value = result.data.get(section)
                    encoded[section] = orjson.dumps(value)
                    parsed[section] = value
            except (orjson.JSONEncodeError, TypeError) as exc:
                encoded, parsed, result = {}, {}, None
                error = f"returned data that cannot be encoded as JSON: {exc}"
        if result is not None and result.error is None:
            status = "ok"
        elif result is not None:
            status, error = "partial", result.error
        else:
            status = "error"
        if error is not None:
            error = self.secrets.clean(error)
        self._account(source.name, status, error)
        entry: dict[str, Any] = {"status": status, "latency_ms": round(elapsed * 1000, 1),
                                 "collected_at": utc_iso(), "error": error}
        if result is not None and result.warnings:
            entry["warnings"] = [self.secrets.clean(str(w)) for w in result.warnings]
        return encoded, parsed, entry

    def _account(self, name: str, status: str, error: str | None) -> None:
        if status == "error":
            self.metrics.collect_errors.labels(name).inc()
        # Log a failure once when it starts or changes, and once when it recovers: a dead
        # dependency must not write a line per tick for hours.
        previous = self._last_error.get(name)
        if error != previous:
            if error is not None:
                log.warning("source %s: %s (%s)", name, status, error)
            elif previous is not None:
                log.info("source %s recovered", name)
        self._last_error[name] = error

    async def collect(self) -> Collected:
        """Collect every source concurrently; sections of failed or disabled sources are null."""
        outcomes = await asyncio.gather(*(self._run_one(s) for s in self.sources))
        sections: dict[str, bytes] = dict.fromkeys(self.section_names, b"null")
        data: dict[str, Any] = dict.fromkeys(self.section_names)
        sources: dict[str, bytes] = {}
        statuses: dict[str, str] = {}
        for source, (encoded, parsed, entry) in zip(self.sources, outcomes, strict=True):
            sections.update(encoded)
            data.update(parsed)
            sources[source.name] = orjson.dumps(entry)
            statuses[source.name] = entry["status"]
        for name, _secs in self.disabled:
            sources[name] = DISABLED
            statuses[name] = "disabled"
        return Collected(timestamp=utc_iso(), data=data, sections=sections, sources=sources, statuses=statuses)
