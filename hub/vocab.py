"""The shared vocabulary: topics, time ranges, the snapshot's shape and time formatting, defined once."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, TypedDict

#: the sections of `data` in every metrics_update, in their wire order; also the subscribable topics
TOPICS: tuple[str, ...] = ("system", "application", "business", "alerts", "health")

#: sections of `data` that are not topics themselves, and the topic each belongs to: a client receives
#: one exactly when it receives that topic (filtering happens in one place, `hub.feed.Entry`)
SECTION_TOPIC: dict[str, str] = {"silences": "alerts", "slo": "system"}


def topic_of(section: str) -> str:
    """The topic that carries `section`."""
    return SECTION_TOPIC.get(section, section)


def sections_of(topic: str) -> tuple[str, ...]:
    """The sections `topic` carries: itself, then those that belong to it."""
    return (topic, *(s for s, t in SECTION_TOPIC.items() if t == topic))


#: what a token may do beyond reading, for `[auth] tokens[].actions`: "silence" silences alerts in
#: Alertmanager (with topic alerts) and mutes health checks (with topic health)
ACTIONS: tuple[str, ...] = ("silence",)

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
    d = dt.datetime.fromtimestamp(time.time() if ts is None else ts, tz=dt.UTC)
    return iso_of(d)


def iso_of(d: dt.datetime) -> str:
    """`d` (timezone-aware) as ISO 8601 UTC with milliseconds and a Z."""
    d = d.astimezone(dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


#: how much of a dependency's error text reaches logs, snapshots and /metrics
MAX_REASON_CHARS = 300


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(c: str) -> str:
    if c.isprintable() or c == " ":
        return c
    # Not printable: C0/C1 controls (a \n forges log lines), zero-width and bidi controls (text that
    # reads differently than it is), separators, unassigned code points and lone surrogates (not
    # encodable as UTF-8, so they would break JSON). Python's own definition, so nothing is missed.
    n = ord(c)
    return _NAMED.get(c) or (f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")


def safe_text(text: str, *, limit: int = MAX_REASON_CHARS) -> str:
    """`text` as one printable line of at most `limit` characters: controls escaped (\\n, \\x1b), long
    text cut with '…'."""
    # Only the first `limit` characters can survive (escaping never shortens), so a 3 MB error
    # string costs no more than a short one.
    head = text[: limit + 1]
    if not head.isprintable():
        head = "".join(map(_escape, head))
    return head if len(head) <= limit else head[: max(limit - 1, 0)] + "…"


class ReadableError(Exception):
    """An error whose message is already readable and free of secrets (shown as it is)."""


def describe(exc: BaseException) -> str:
    """A readable one-line reason for a failure."""
    if isinstance(exc, ReadableError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
