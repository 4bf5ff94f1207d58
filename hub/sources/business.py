"""Business source: appointment metrics from MongoDB in one aggregation round-trip (the seed's
BusinessMetricsService, without its five queries and without pulling documents into the hub)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from pymongo import AsyncMongoClient
from pymongo.errors import (
    ConnectionFailure,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WTimeoutError,
)

from hub.config import TIME_RANGES, BusinessFields, BusinessSourceConfig, scrub
from hub.secrets import passwords_of  # re-exported: the one copy lives in hub.secrets
from hub.sources.base import Source, SourceError, SourceResult

log = logging.getLogger(__name__)

ALLOWED_RANGES: tuple[str, ...] = TIME_RANGES
WINDOWS: dict[str, dt.timedelta] = {
    "1h": dt.timedelta(hours=1),
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
    "30d": dt.timedelta(days=30),
}
DEFAULT_DATABASE = "healthcare"
UNKNOWN_SPECIALTY = "unknown"
OTHER_SPECIALTY = "other"
MAX_REASON_CHARS = 300
QUERY_COMMENT = "hub: business metrics (read-only aggregate)"


def _field(path: str) -> str:
    """Aggregation-expression reference to a (possibly dotted) document field."""
    return "$" + path


def build_pipeline(fields: BusinessFields, start: dt.datetime) -> list[dict[str, Any]]:
    """The one aggregation pipeline: $match on the window, then $facet computing every metric in the DB."""
    created, completed = _field(fields.created_at), _field(fields.booking_completed_at)

    def count_where(cond: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"$match": cond}, {"$count": "n"}]

    return [
        # The only stage that can use an index: keep it first and a plain range on the created-at field.
        # A $gte on a date matches dates only, so every document below has a date `created`.
        {"$match": {fields.created_at: {"$gte": start}}},
        # Sub-pipelines filter with query $match (the seed's own predicates) rather than per-document
        # $cond expressions: same answers, and cheaper for the server to evaluate.
        {"$facet": {
            # $avg skips missing, null and non-numeric ratings by itself.
            "totals": [{"$group": {"_id": None, "n": {"$sum": 1}, "rating": {"$avg": _field(fields.rating)}}}],
            "cancelled": count_where({fields.status: fields.cancelled_value}),
            "booking": [
                # $subtract would fail on a string; only date-to-date differences count.
                {"$match": {fields.booking_completed_at: {"$type": "date"}}},
                {"$group": {"_id": None, "avgMs": {"$avg": {"$subtract": [completed, created]}}}},
            ],
            "bySpecialty": [
                {"$group": {"_id": {"$ifNull": [_field(fields.specialty), UNKNOWN_SPECIALTY]},
                            "count": {"$sum": 1}}},
                # _id breaks ties so the order is deterministic from tick to tick.
                {"$sort": {"count": -1, "_id": 1}},
            ],
        }},
    ]


def _first(doc: Mapping[str, Any] | None, facet: str, key: str) -> Any:
    rows = (doc or {}).get(facet) or []
    return rows[0].get(key) if rows else None


def _number(value: Any) -> float | None:
    """A BSON numeric (int, float, Int64, Decimal128) as float; None for anything else."""
    if value is None or isinstance(value, bool):
        return None
    if hasattr(value, "to_decimal"):  # Decimal128
        value = value.to_decimal()
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _round2(x: float) -> float:
    """Round to 2 decimals like the seed's Math.round(x * 100) / 100 (half up, not half even)."""
    return math.floor(x * 100 + 0.5) / 100


def _json_id(value: Any) -> Any:
    """A specialty key that JSON can carry (odd BSON types become strings)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _id_sort_key(value: Any) -> tuple[int, str]:
    return (0, value) if isinstance(value, str) else (1, repr(value))


def _row_key(row: Mapping[str, Any]) -> tuple[int, tuple[int, str]]:
    return (-row["count"], _id_sort_key(row["_id"]))


def fold_small_cells(rows: Sequence[Mapping[str, Any]], min_cell_size: int) -> list[dict[str, Any]]:
    """Merge specialties with a count below `min_cell_size` into one "other" row, sorted count desc.

    If "other" itself stays below `min_cell_size`, the smallest remaining rows join it until it
    does not (otherwise `total` minus the shown rows would give the small count away).
    """
    if min_cell_size <= 0:
        return [dict(r) for r in rows]
    kept: list[dict[str, Any]] = []
    other = 0
    for row in rows:
        if row["count"] < min_cell_size or row["_id"] == OTHER_SPECIALTY:
            other += row["count"]  # a real specialty called "other" joins the folded ones
        else:
            kept.append(dict(row))
    kept.sort(key=_row_key)
    while 0 < other < min_cell_size and kept:
        other += kept.pop()["count"]
    if other:
        kept.append({"_id": OTHER_SPECIALTY, "count": other})
    kept.sort(key=_row_key)
    return kept


def shape_result(doc: Mapping[str, Any] | None, *, time_range: str, timestamp: dt.datetime,
                 min_cell_size: int = 0) -> dict[str, Any]:
    """The seed's response object from the pipeline's single output document."""
    total = int(_first(doc, "totals", "n") or 0)
    cancelled = int(_first(doc, "cancelled", "n") or 0)
    booking_ms = _number(_first(doc, "booking", "avgMs"))
    rating = _number(_first(doc, "totals", "rating"))
    rows = [{"_id": _json_id(r.get("_id")), "count": int(r.get("count") or 0)}
            for r in (doc or {}).get("bySpecialty") or []]
    return {
        "timestamp": timestamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{timestamp.microsecond // 1000:03d}Z",
        "timeRange": time_range,
        "appointments": {
            "total": total,
            "bySpecialty": fold_small_cells(rows, min_cell_size),
            "cancellationRate": (cancelled / total) * 100 if total > 0 else 0,
            "averageBookingTime": booking_ms / 1000 if booking_ms is not None else 0,
            "patientSatisfaction": _round2(rating) if rating is not None else None,
        },
    }


def hosts_of(uri: str) -> str:
    """The host list of a MongoDB URI, without user info (safe to show)."""
    try:
        netloc = urlsplit(uri).netloc
    except ValueError:
        return "<unparseable URI>"
    return netloc.rpartition("@")[2] or "<no host>"


def password_of(uri: str) -> str | None:
    """The (percent-decoded) password in a MongoDB URI, if any."""
    found = passwords_of(uri)
    return found[-1] if found else None


def client_options(timeout: float) -> dict[str, Any]:
    """AsyncMongoClient options derived from the source timeout (never the driver's 30 s defaults)."""
    ms = max(1, int(timeout * 1000))
    return {
        "serverSelectionTimeoutMS": ms,
        "timeoutMS": ms,  # client-side operation timeout: also sets maxTimeMS on the server
        "connectTimeoutMS": ms,
        "appname": "hub",
        "retryReads": True,
    }


def _cause(exc: BaseException) -> str:
    """The driver's message without its timeout settings and topology dump, and without a leading "host:port: "."""
    # The driver's text is "<host>: <cause> (configured timeouts: ...), Timeout: ..., Topology Description: ..."
    text = str(exc).split(", Timeout:", 1)[0].split(" (configured timeouts", 1)[0]
    head, sep, rest = text.partition(": ")
    if sep and " " not in head and ":" in head:
        text = rest
    return text


# PyMongo re-checks a pending server selection every 0.5 s (minHeartbeatFrequencyMS), so with the
# server down its timeout fires on that grid: 1.2 s really means 1.5 s.
SELECTION_STEP = 0.5


def query_deadline(timeout: float, interval: float) -> float:
    """Seconds the driver may spend on one query: inside the scheduler's per-collect budget
    min(timeout, 0.8 * interval), on the driver's 0.5 s server-selection grid."""
    budget = min(timeout, 0.8 * interval) if interval > 0 else timeout
    usable = 0.9 * budget
    stepped = math.floor(usable / SELECTION_STEP) * SELECTION_STEP
    return round(stepped if stepped >= SELECTION_STEP else max(0.05, usable), 3)


def describe_error(exc: BaseException, *, uri: str, timeout: float, secrets: Sequence[str]) -> str:
    """A short, readable, secret-free reason for a driver error."""
    hosts = hosts_of(uri)
    if isinstance(exc, ServerSelectionTimeoutError):
        reason = f"MongoDB not reachable at {hosts} within {timeout:g}s: {_cause(exc)}"
    elif isinstance(exc, (ExecutionTimeout, NetworkTimeout, WTimeoutError)):
        reason = f"MongoDB query timed out after {timeout:g}s ({hosts})"
    elif isinstance(exc, OperationFailure):
        details = exc.details or {}
        msg = str(details.get("errmsg") or str(exc).split(", full error:", 1)[0])
        if exc.code == 18:
            reason = f"MongoDB authentication failed at {hosts}: check the user and password in mongodb_uri"
        elif exc.code == 13:
            reason = f"MongoDB refused the query (not authorized): {msg}"
        elif exc.code == 50:
            reason = f"MongoDB query timed out after {timeout:g}s ({hosts})"
        else:
            reason = f"MongoDB error {exc.code}: {msg}"
    elif isinstance(exc, ConnectionFailure):
        reason = f"lost connection to MongoDB at {hosts}: {_cause(exc)}"
    else:
        reason = f"MongoDB error: {type(exc).__name__}: {exc}"
    reason = scrub(reason, [s for s in secrets if s])
    if uri and uri in reason:  # paranoia: never echo the full URI
        reason = reason.replace(uri, "<mongodb_uri>")
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 3] + "..."
    return reason


class BusinessSource(Source):
    """Fills `data.business` with the seed's appointment metrics for `cfg.time_range`, read-only.

    `cache_ttl` is the broadcast interval: API answers are cached that long per window, and each
    query's driver deadline stays inside the scheduler's min(timeout, 0.8 * interval) budget.
    """

    name = "business"
    sections = ("business",)

    def __init__(self, cfg: BusinessSourceConfig, *, cache_ttl: float, secrets: Sequence[str] = (),
                 client_options: Mapping[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.timeout = cfg.timeout
        self.cache_ttl = cache_ttl
        #: driver deadline per query: inside the scheduler's budget, min(timeout, 0.8 * interval)
        #: (cache_ttl is the broadcast interval), so an outage reads "MongoDB not reachable at ..."
        #: rather than the scheduler's bare "timed out".
        self.query_timeout = query_deadline(cfg.timeout, cache_ttl)
        self._secrets = [s for s in (*secrets, *passwords_of(cfg.mongodb_uri)) if s]
        self._extra_options = dict(client_options or {})  # tests: event_listeners
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._init_error: str | None = None
        # window -> (monotonic time the query started, result)
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._inflight: dict[str, asyncio.Task[dict[str, Any]]] = {}
        #: number of aggregate round-trips sent (for tests and self-metrics)
        self.queries_total = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Create the one client for the process; never fails because the server is down."""
        if self._client is not None:
            return
        try:
            opts = {**client_options(self.query_timeout), **self._extra_options}
            self._client = AsyncMongoClient(self.cfg.mongodb_uri, **opts)
            # Starts background monitoring only; does not wait for a server.
            await self._client.aconnect()
        except PyMongoError as exc:  # invalid URI options, unresolvable SRV record, ...
            self._init_error = "invalid MongoDB configuration: " + describe_error(
                exc, uri=self.cfg.mongodb_uri, timeout=self.query_timeout, secrets=self._secrets)
            log.error("business source: %s", self._init_error)
            if self._client is not None:
                await self._client.close()
            self._client = None

    async def ping(self) -> None:
        """Ping MongoDB with this source's client (the health source's `database` check)."""
        if self._client is None:
            raise SourceError(self._init_error or "business source not started")
        await self._client.admin.command("ping")

    async def close(self) -> None:
        """Cancel in-flight queries and close the client."""
        for task in list(self._inflight.values()):
            task.cancel()
        self._inflight.clear()
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    # ------------------------------------------------------------------ collection

    async def collect(self, budget: float) -> SourceResult:
        """One fresh query per tick (its result also feeds the API cache)."""
        data = await self._get(self.cfg.time_range, max_age=0.0)
        return SourceResult(data={"business": data})

    async def metrics_for(self, time_range: str) -> dict[str, Any]:
        """The seed's metrics object for `time_range`, cached for `cache_ttl`; SourceError when unavailable."""
        return await self._get(time_range, max_age=self.cache_ttl)

    async def _get(self, time_range: str, *, max_age: float) -> dict[str, Any]:
        if time_range not in WINDOWS:
            raise ValueError(f"unknown timeRange {time_range!r}; allowed: {', '.join(ALLOWED_RANGES)}")
        if max_age > 0:
            hit = self._cache.get(time_range)
            if hit is not None and time.monotonic() - hit[0] < max_age:
                return hit[1]
        task = self._inflight.get(time_range)
        if task is None:
            # Concurrent callers (ticks and API requests) share one in-flight query.
            started = time.monotonic()
            task = asyncio.get_running_loop().create_task(self._query(time_range), name=f"hub-business-{time_range}")
            self._inflight[time_range] = task
            task.add_done_callback(lambda t: self._finished(time_range, started, t))
        # shield: a caller's timeout or cancellation must not cancel the query the others wait for.
        return await asyncio.shield(task)

    def _finished(self, time_range: str, started: float, task: asyncio.Task[dict[str, Any]]) -> None:
        if self._inflight.get(time_range) is task:
            del self._inflight[time_range]
        if task.cancelled():
            return
        exc = task.exception()  # also marks it retrieved when every waiter gave up
        if exc is None:
            self._cache[time_range] = (started, task.result())
        else:
            # Outage: stop serving the old answer, so API and ticks agree the source is down.
            self._cache.pop(time_range, None)

    async def _query(self, time_range: str) -> dict[str, Any]:
        if self._client is None:
            raise SourceError(self._init_error or "business source not started")
        now = dt.datetime.now(dt.timezone.utc)
        pipeline = build_pipeline(self.cfg.fields, now - WINDOWS[time_range])
        coll = self._client.get_default_database(DEFAULT_DATABASE)[self.cfg.collection]
        self.queries_total += 1
        try:
            cursor = await coll.aggregate(pipeline, comment=QUERY_COMMENT)
            docs = await cursor.to_list(None)
        except PyMongoError as exc:
            reason = describe_error(exc, uri=self.cfg.mongodb_uri, timeout=self.query_timeout,
                                    secrets=self._secrets)
            log.warning("business source: %s", reason)
            raise SourceError(reason) from None
        return shape_result(docs[0] if docs else None, time_range=time_range, timestamp=now,
                            min_cell_size=self.cfg.min_cell_size)
