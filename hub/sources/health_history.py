"""Uptime and p95 latency of each health check over 24 h, 7 d and 30 d, from a compact record the hub keeps.

Each collection adds one sample per check: whether the check counted as up (state up or degraded,
as `up` in the snapshot) and, when the attempt got an answer, its latency. Samples are summed into
buckets, never kept one by one:

- 5-minute buckets for the 24 h window (the last 288, the current one included);
- hourly buckets for the 7 d and 30 d windows (the last 168 and 720).

A bucket is `[index, up, total, bin, count, bin, count, ...]`: `index` = floor(epoch / width), the
count of samples up and in all, and the non-empty bins of a fixed latency histogram (`BOUNDS_MS`,
plus one bin above the last bound). A window is its last N buckets; its uptime is up / total (None
without samples) and its p95 is interpolated within the histogram bin holding the 95th percentile
(as Prometheus' `histogram_quantile` does), so it is exact to within that bin.

Bound: per check at most 288 + 720 buckets of at most 3 + 2 x 18 integers, which is at most
`MAX_RECORD_BYTES` (256 KiB) encoded, whatever the tick rate; a steady check (one latency bin) takes
about 23 KB. The record lives in the `hub.state` store (scope `health_history`, one entry per check):
the `[state] dir` file of a single process, or Redis in cluster mode, so it survives restarts and
fail-overs. It is written every `FLUSH_S` seconds and at close (a crash loses at most that much), merged
into what is stored (per bucket, the one with more samples wins: a replica never erases another's
buckets), and read again when the collector resumes after a pause (another replica may have collected
meanwhile). A replica that recorded nothing since its last write writes nothing.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable
from typing import Any

from hub.state import Store, StoreUnavailable
from hub.vocab import utc_iso

logger = logging.getLogger("hub.sources.health")

SCOPE = "health_history"
FINE, COARSE = 300, 3600
FINE_KEEP, COARSE_KEEP = 288, 720
#: window name -> (seconds, bucket width)
WINDOWS: dict[str, tuple[int, int]] = {"24h": (86400, FINE), "7d": (7 * 86400, COARSE), "30d": (30 * 86400, COARSE)}
#: upper bounds of the latency bins, in ms; one more bin holds everything slower
BOUNDS_MS = (5, 10, 25, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000)
NBINS = len(BOUNDS_MS) + 1
MAX_RECORD_BYTES = 256 * 1024
FLUSH_S = 60.0
VERSION = 1

Bucket = list[int]  # [index, up, total, bin, count, ...]


def _add(buckets: dict[int, Bucket], index: int, up: bool, latency_bin: int | None) -> None:
    b = buckets.get(index)
    if b is None:
        b = buckets[index] = [index, 0, 0]
    b[1] += up
    b[2] += 1
    if latency_bin is not None:
        for i in range(3, len(b), 2):
            if b[i] == latency_bin:
                b[i + 1] += 1
                break
        else:
            b += [latency_bin, 1]


def _prune(buckets: dict[int, Bucket], newest: int, keep: int) -> None:
    for index in [i for i in buckets if i <= newest - keep]:
        del buckets[index]


def p95(bins: list[int]) -> float | None:
    """The 95th percentile of a histogram (counts per bin), interpolated within its bin, in ms."""
    n = sum(bins)
    if not n:
        return None
    rank, seen = 0.95 * n, 0
    for i, count in enumerate(bins):
        if count and seen + count >= rank:
            if i >= len(BOUNDS_MS):  # slower than every bound: the last bound, as histogram_quantile does
                return float(BOUNDS_MS[-1])
            lo, hi = (BOUNDS_MS[i - 1] if i else 0), BOUNDS_MS[i]
            return round(lo + (hi - lo) * (rank - seen) / count, 1)
        seen += count
    return float(BOUNDS_MS[-1])  # pragma: no cover - the loop always reaches the rank


class CheckRecord:
    """One check's buckets at both widths."""

    def __init__(self) -> None:
        self.fine: dict[int, Bucket] = {}
        self.coarse: dict[int, Bucket] = {}

    def add(self, up: bool, latency_s: float | None, now: float) -> None:
        latency_bin = None if latency_s is None else bisect.bisect_left(BOUNDS_MS, latency_s * 1000)
        for buckets, width, keep in ((self.fine, FINE, FINE_KEEP), (self.coarse, COARSE, COARSE_KEEP)):
            newest = int(now // width)
            if newest not in buckets:  # a new bucket: the oldest may fall out of the record
                _prune(buckets, newest, keep)
            _add(buckets, newest, up, latency_bin)

    def window(self, name: str, now: float) -> tuple[float | None, float | None]:
        """(uptime, p95 ms) over window `name` ending at `now`; None for each without samples."""
        seconds, width = WINDOWS[name]
        newest = int(now // width)
        first = newest - seconds // width + 1
        up = total = 0
        bins = [0] * NBINS
        for index, b in (self.fine if width == FINE else self.coarse).items():
            if first <= index <= newest:
                up, total = up + b[1], total + b[2]
                for i in range(3, len(b), 2):
                    bins[b[i]] += b[i + 1]
        return (None if not total else round(up / total, 6)), p95(bins)

    def oldest(self) -> float | None:
        """Start of the oldest bucket kept (epoch seconds), or None while empty."""
        starts = [min(self.fine) * FINE] if self.fine else []
        starts += [min(self.coarse) * COARSE] if self.coarse else []
        return float(min(starts)) if starts else None

    def to_dict(self) -> dict[str, Any]:
        return {"v": VERSION, "fine": sorted(self.fine.values()), "coarse": sorted(self.coarse.values())}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckRecord:
        """The record stored as `d`; ValueError when it is not one."""
        rec = cls()
        try:
            if d.get("v") != VERSION:
                raise ValueError(f"version {d.get('v')!r}")
            for key, target in (("fine", rec.fine), ("coarse", rec.coarse)):
                for raw in d[key]:
                    b = [int(x) for x in raw]
                    if len(b) < 3 or len(b) % 2 == 0 or not 0 <= b[1] <= b[2] or \
                            any(not 0 <= i < NBINS for i in b[3::2]) or any(c < 0 for c in b[4::2]):
                        raise ValueError("a malformed bucket")
                    target[b[0]] = b
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a health history record: {exc}") from None
        _prune(rec.fine, max(rec.fine, default=0), FINE_KEEP)
        _prune(rec.coarse, max(rec.coarse, default=0), COARSE_KEEP)
        return rec

    def merge(self, other: CheckRecord) -> None:
        """Take `other`'s buckets where it has more samples (another collector's time, or ours stored)."""
        for mine, theirs, keep in ((self.fine, other.fine, FINE_KEEP), (self.coarse, other.coarse, COARSE_KEEP)):
            for index, b in theirs.items():
                if index not in mine or b[2] > mine[index][2]:
                    mine[index] = b
            _prune(mine, max(mine, default=0), keep)  # buckets ours already let go of stay gone


class HealthHistory:
    """The records of the named checks, kept in `store` (see the module docstring)."""

    def __init__(self, names: Iterable[str], *, store: Store) -> None:
        self.records = {n: CheckRecord() for n in names}
        self.store = store
        self._loaded_at: float | None = None
        self._last_seen = 0.0
        self._flushed_at = 0.0
        self._error: str | None = None
        self._dirty = False

    def record(self, name: str, up: bool, latency_s: float | None, now: float) -> None:
        self.records[name].add(up, latency_s, now)
        self._dirty = True

    def shown(self, name: str, now: float) -> dict[str, Any]:
        """{"uptime": {"24h", "7d", "30d", "source": "hub", "since"}, "p95_ms": {"24h", "7d", "30d"}}."""
        rec = self.records[name]
        uptime: dict[str, Any] = {}
        p95_ms: dict[str, Any] = {}
        for window in WINDOWS:
            uptime[window], p95_ms[window] = rec.window(window, now)
        oldest = rec.oldest()
        uptime["source"] = "hub"
        uptime["since"] = None if oldest is None else utc_iso(oldest)
        return {"uptime": uptime, "p95_ms": p95_ms}

    async def resume(self, now: float) -> None:
        """Before a collection: read the stored records at the first one, and again after a pause longer
        than FLUSH_S (another collector may have recorded meanwhile); merge them into ours."""
        paused = self._loaded_at is None or now - self._last_seen > FLUSH_S
        self._last_seen = now
        if not paused:
            return
        try:
            await self._merge_stored()
        except StoreUnavailable as exc:
            self._failed(exc)
            self._loaded_at = self._loaded_at or now  # go on recording; the next pause tries again
            return
        self._loaded_at = self._flushed_at = now

    async def _merge_stored(self) -> None:
        for name, raw in (await self.store.load(SCOPE)).items():
            if name not in self.records:
                continue
            try:
                self.records[name].merge(CheckRecord.from_dict(raw))
            except ValueError as exc:
                logger.warning("health check %s: ignoring its stored history (%s)", name, exc)

    async def flush(self, now: float, *, force: bool = False) -> None:
        """Write the records when FLUSH_S passed since the last write (or `force`); a failure is logged once."""
        if not self._dirty or (not force and now - self._flushed_at < FLUSH_S):
            return
        self._flushed_at = now
        try:
            await self._merge_stored()
            await self.store.save(SCOPE, {n: r.to_dict() for n, r in self.records.items()})
        except StoreUnavailable as exc:
            self._failed(exc)
            return
        self._dirty = False
        if self._error is not None:
            logger.info("health: history written to the state store again")
            self._error = None

    def _failed(self, exc: StoreUnavailable) -> None:
        if self._error is None:
            logger.warning("health: cannot keep the uptime history in the state store (%s); kept in memory", exc)
        self._error = str(exc)
