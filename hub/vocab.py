"""The shared vocabulary: topics, time ranges, the snapshot's shape and time formatting, defined once."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, TypedDict

#: the sections of `data` in every metrics_update, in their wire order; also the subscribable topics
TOPICS: tuple[str, ...] = ("system", "application", "business", "alerts")

#: the seed's business windows, for `sources.business.time_range` and `?timeRange=`
WINDOWS: dict[str, dt.timedelta] = {
    "1h": dt.timedelta(hours=1),
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
    "30d": dt.timedelta(days=30),
}
TIME_RANGES: tuple[str, ...] = tuple(WINDOWS)


class SourceStatus(TypedDict):
    """One entry of a snapshot's `sources` object."""

    status: str  # ok | partial | error | disabled
    latency_ms: float | None
    collected_at: str | None
    error: str | None


class Snapshot(TypedDict, total=False):
    """A metrics_update message as sent to clients (docs/protocol.md)."""

    type: str
    seq: int
    epoch: str
    timestamp: str
    data: dict[str, Any]
    sources: dict[str, SourceStatus]


def utc_iso(ts: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds and a Z, as JavaScript's Date.toISOString() prints it."""
    d = dt.datetime.fromtimestamp(time.time() if ts is None else ts, tz=dt.timezone.utc)
    return iso_of(d)


def iso_of(d: dt.datetime) -> str:
    """`d` (timezone-aware) as ISO 8601 UTC with milliseconds and a Z."""
    d = d.astimezone(dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


#: how much of a dependency's error text reaches logs, snapshots and /metrics
MAX_REASON_CHARS = 300


def safe_text(text: str, *, limit: int = MAX_REASON_CHARS) -> str:
    """`text` on one line, control characters escaped, at most `limit` characters (with an ellipsis).

    Every error text that comes from a dependency goes through this before it is logged or sent,
    so a 3 MB or multi-line answer can neither bloat snapshots nor forge log lines.
    """
    if text.isprintable() and len(text) <= limit:
        return text
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text[: limit * 4])
    return out if len(out) <= limit else out[: limit - 1] + "…"
