"""Backfill on start: the history (and the page's charts) filled from Prometheus's past.

At start the feed is empty (in cluster mode: the stream is new, `hub.cluster_backfill`, which stores
the snapshots in Redis for every replica instead of this feed), so every configured query is read with
`query_range` over `history_size x interval` at step `interval` (within `max_series` and
`max_response_bytes`, like live data), and, with `sources.prometheus.self_job`, the hub's own
process series as Prometheus scraped them. The snapshots built from them go before the live ones
(`Feed.add_backfill`, bounded by `history_size` and `history_max_bytes`), without `seq`, marked
`"backfill": true`; they never move `seq` or `epoch`. It runs in the background with its own
deadline (`backfill_timeout`) and never delays a tick; a failure is logged once and leaves the
charts empty, as they were before.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson

from hub.broadcast import Broadcaster
from hub.config import PrometheusSourceConfig
from hub.secrets import Secrets
from hub.sources.prometheus.fetch import Failure
from hub.sources.prometheus.history import MAX_STEPS, RangeReader, Series, self_queries
from hub.vocab import describe, safe_text, utc_iso

log = logging.getLogger(__name__)

#: one backfilled snapshot: (timestamp, parsed data, encoded sections)
Item = tuple[str, dict[str, Any], dict[str, bytes]]


class BackfillError(Exception):
    """Nothing could be backfilled; the message is readable and free of secrets."""


def build_items(system: Mapping[str, Series], own: Mapping[str, Series],
                sections: Sequence[str], business: Mapping[float, dict[str, Any]] | None = None) -> list[Item]:
    """Snapshots, oldest first, one per evaluation time present in any answer.

    `data.system` holds each query's series with a sample at that time, in the instant shape
    (`{"metric", "value": [t, "v"]}`); `data.application` the hub's own `memoryUsage.rss`,
    `cpuPercent` and `activeConnections` when `own` has them; `data.business` the hourly series of
    `business` at that time (`hub.sources.business.backfill`); every other section is null.
    (CPU only: run it in a worker thread.)
    """
    at: dict[float, dict[str, list[dict[str, Any]]]] = {}
    for name, rows in system.items():
        for row in rows:
            for ts, v in row["values"]:
                at.setdefault(ts, {}).setdefault(name, []).append({"metric": row["metric"], "value": [ts, v]})
    mine: dict[float, dict[str, float]] = {}
    for key, rows in own.items():
        for row in rows[:1]:  # max(...) answers one series
            for ts, v in row["values"]:
                f = float(v)
                if f == f and abs(f) != float("inf"):
                    mine.setdefault(ts, {})[key] = f
    items: list[Item] = []
    business = business or {}
    for ts in sorted(at.keys() | mine.keys() | business.keys()):
        data: dict[str, Any] = dict.fromkeys(sections)
        if "business" in data:
            data["business"] = business.get(ts)
        if "system" in data:
            data["system"] = {name: at.get(ts, {}).get(name, []) for name in system}
        if "application" in data and ts in mine:
            m = mine[ts]
            app: dict[str, Any] = {}
            if "rss" in m:
                app["memoryUsage"] = {"rss": int(m["rss"])}
            if "cpu" in m:
                app["cpuPercent"] = round(m["cpu"], 3)
            if "conns" in m:
                app["activeConnections"] = int(m["conns"])
            data["application"] = app
        items.append((utc_iso(ts), data, {k: orjson.dumps(v) for k, v in data.items()}))
    return items


class Backfill:
    """One backfill of `broadcaster`'s feed from the Prometheus of `cfg`."""

    def __init__(self, cfg: PrometheusSourceConfig, *, interval: float, history_size: int,
                 broadcaster: Broadcaster, secrets: Secrets,
                 sink: Callable[[list[Item]], Awaitable[int]] | None = None, business: Any = None) -> None:
        self.cfg = cfg
        self.interval = interval
        self.steps = min(history_size, MAX_STEPS)
        self.broadcaster = broadcaster
        self.reader = RangeReader(cfg, secrets=secrets)
        #: where the snapshots go: this process's feed, or (cluster mode) Redis for every replica
        self.sink = sink or broadcaster.backfill
        #: the BusinessSource whose hour buckets give the bookings chart's series, or None
        self.business = business
        self.secrets = secrets
        #: the longest wait for a live tick before a heavy step (bounded by the backfill's own deadline)
        self.tick_wait = min(2 * interval, 0.1 * cfg.backfill_timeout)

    async def run(self) -> int:
        """Backfill within `backfill_timeout`; the number of snapshots kept (0 after a failure, logged once)."""
        try:
            async with asyncio.timeout(self.cfg.backfill_timeout):
                kept = await self._fill()
        except TimeoutError:
            log.warning("backfill from Prometheus gave up after %g s (sources.prometheus.backfill_timeout); "
                        "the charts start empty", self.cfg.backfill_timeout)
            return 0
        except BackfillError as exc:
            log.warning("backfill from Prometheus failed, the charts start empty: %s", exc)
            return 0
        except Exception as exc:  # a bug must not take the hub down: it only loses the backfill
            log.error("backfill from Prometheus failed: %s", describe(exc), exc_info=exc)
            return 0
        log.info("backfill: %d snapshots from Prometheus before the first live one", kept)
        return kept

    async def _fill(self) -> int:
        end = time.time()
        # A whole second: Prometheus reads a fractional start through a float and truncates it to the
        # millisecond below about half the time (".542" evaluates at .541), so its answers would miss
        # the grid below by 1 ms and the business series would land in snapshots of their own.
        start = float(math.floor(end - self.steps * self.interval))
        step_ms = round(self.interval * 1000)
        grid = [(round(start * 1000) + k * step_ms) / 1000 for k in range(self.steps + 1)]
        own_q = self_queries(self.cfg.self_job, self.interval) if self.cfg.self_job else {}
        system, own, business = await asyncio.gather(
            self.reader.read_all(dict(self.cfg.queries), start=start, end=end, step=self.interval),
            self.reader.read_all(own_q, start=start, end=end, step=self.interval) if own_q else _nothing(),
            self._business([t for t in grid if t <= end]))
        failed = {f"query {n!r}": r.message for n, r in system.items() if isinstance(r, Failure)}
        failed |= {f"own {n} series": r.message for n, r in own.items() if isinstance(r, Failure)}
        good_system = {n: r for n, r in system.items() if not isinstance(r, Failure)}
        good_own = {n: r for n, r in own.items() if not isinstance(r, Failure)}
        if failed:
            reasons = set(failed.values())
            text = reasons.pop() if len(reasons) == 1 else "; ".join(f"{k}: {m}" for k, m in failed.items())
            if not good_system and not good_own and not business:
                raise BackfillError(safe_text(text, limit=1000))
            log.warning("backfill from Prometheus is partial: %s", safe_text(text, limit=1000))
        sections = [s for secs in self.broadcaster.feed.source_sections.values() for s in secs]
        # Building thousands of snapshots holds the GIL for a good part of a second: right after a
        # tick, not across one (beside the demo's first ticks it timed their MongoDB queries out).
        await self.after_a_tick(self.tick_wait)
        items = await asyncio.to_thread(build_items, good_system, good_own, list(dict.fromkeys(sections)),
                                        business)
        return await self.sink(items)

    async def after_a_tick(self, limit: float) -> None:
        """Return just after the feed takes its next snapshot, or after `limit` seconds: a query of the
        backfill then has most of an interval before the next tick's (beside a tick's, on a database
        answering one query at a time, it timed the demo's first ticks out)."""
        feed = self.broadcaster.feed
        seq, end = feed.seq, time.monotonic() + limit
        while feed.seq == seq and time.monotonic() < end:
            await asyncio.sleep(min(0.05, self.interval / 10))

    async def _business(self, grid: list[float]) -> dict[float, dict[str, Any]]:
        """The bookings chart's series at the grid's times, or {} (none configured, or failed: logged once)."""
        if self.business is None:
            return {}
        from hub.sources.business.backfill import hourly_series

        try:
            # Within most of the deadline: what Prometheus answered is kept when this takes too long.
            return await hourly_series(self.business, grid, timeout=0.8 * self.cfg.backfill_timeout,
                                       between=lambda: self.after_a_tick(self.tick_wait))
        except TimeoutError:
            log.warning("backfill of the bookings chart gave up after %g s (MongoDB, or the hour buckets, too slow); "
                        "it starts empty", 0.8 * self.cfg.backfill_timeout)
        except Exception as exc:  # MongoDB's errors, or a bug: only this chart loses its backfill
            log.warning("backfill of the bookings chart failed, it starts empty: %s",
                        safe_text(self.secrets.scrub(describe(exc)), limit=1000))
        return {}


async def _nothing() -> dict[str, Series | Failure]:
    return {}
