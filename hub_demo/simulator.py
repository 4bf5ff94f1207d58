"""Demo traffic: a healthcare backend's appointments (written to MongoDB) and its Prometheus metrics.

The simulator is the demo's only writer; the hub itself never writes to MongoDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from bson import ObjectId
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

log = logging.getLogger(__name__)

UTC = dt.timezone.utc
DEFAULT_DATABASE = "healthcare"
SPECIALTIES: tuple[tuple[str, float], ...] = (
    ("General Practice", 30), ("Pediatrics", 14), ("Dermatology", 10), ("Cardiology", 9), ("Orthopedics", 9),
    ("Gynecology", 8), ("Psychiatry", 7), ("Ophthalmology", 6), ("Neurology", 4), ("Oncology", 3),
)
FIRST = ("Ana", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Liam",
         "Maya", "Noah", "Olga", "Pedro", "Quinn", "Rosa", "Sami", "Tara")
LAST = ("Adams", "Becker", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Haddad", "Ivanova", "Jensen",
        "Kowalski", "Lopez", "Moreau", "Nakamura", "Okafor", "Petrov")
# (method, route, share of traffic, median latency in seconds)
ROUTES: tuple[tuple[str, str, float, float], ...] = (
    ("GET", "/api/appointments", 22, 0.045), ("GET", "/api/doctors", 18, 0.030),
    ("GET", "/api/patients/:id", 12, 0.035), ("POST", "/api/auth/login", 6, 0.120),
    ("GET", "/api/doctors/:id/availability", 14, 0.060), ("GET", "/health", 20, 0.002),
    ("PUT", "/api/patients/:id", 3, 0.070),
)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TRAFFIC_TICK = 0.25  # seconds between HTTP traffic batches
MAX_TRACKED = 5000  # ids remembered for later cancel / complete / review events
#: bookings per hour the seeded history holds around this time of day (weeks 1-4 back, and the last
#: 75 minutes): what the hub's detector then expects, so a stop of under 2 minutes is improbable
BUSY_PER_HOUR = 240.0
#: the demo's bookings outage: first after this many seconds (well after `make run`'s first 20 ticks),
#: lasting this long, then again every 15-25 minutes
BOOKINGS_STOP_AFTER = (150.0, 200.0)
BOOKINGS_STOP_FOR = 180.0


def _name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _specialty(rng: random.Random) -> str | None:
    if rng.random() < 0.01:
        return None  # legacy records without a specialty: the hub counts them as "unknown"
    names, weights = zip(*SPECIALTIES, strict=True)
    return rng.choices(names, weights)[0]


def _booking_seconds(rng: random.Random) -> float:
    """Time a patient spends in the booking flow: log-normal, median ~75 s, long tail."""
    return min(1800.0, rng.lognormvariate(math.log(75), 0.6))


def _rating(rng: random.Random) -> int:
    return rng.choices((1, 2, 3, 4, 5), (3, 5, 12, 35, 45))[0]


def _ms(t: dt.datetime) -> dt.datetime:
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def _diurnal(t: dt.datetime) -> float:
    """Relative booking activity by hour of day (UTC): quiet nights, busy mornings."""
    h = t.hour + t.minute / 60
    return 0.15 + math.exp(-((h - 10.5) ** 2) / 8) + 0.7 * math.exp(-((h - 16) ** 2) / 6)


def make_appointment(rng: random.Random, created: dt.datetime, *, now: dt.datetime) -> dict[str, Any]:
    """One plausible appointment created at `created`, with its fate as of `now`."""
    created = _ms(created)
    spec = _specialty(rng)
    doc: dict[str, Any] = {
        "createdAt": created,
        "patient": {"id": f"P-{rng.randrange(10**6):06d}", "name": _name(rng)},
        "doctor": {"id": f"D-{rng.randrange(400):03d}", "name": "Dr " + _name(rng)},
        # A quarter are same-day slots (so recent windows have completed, reviewed visits).
        "appointmentDate": _ms(created + (dt.timedelta(hours=rng.uniform(1, 8)) if rng.random() < 0.25
                                          else dt.timedelta(days=rng.uniform(0.5, 21)))),
        "status": "booked",
    }
    if spec is not None:
        doc["doctor"]["specialty"] = spec
    if rng.random() < 0.93:  # the rest abandoned the booking flow's last step
        done = created + dt.timedelta(seconds=_booking_seconds(rng))
        if done <= now:
            doc["bookingCompletedAt"] = _ms(done)
    if rng.random() < 0.11:
        doc["status"] = "cancelled"
    elif doc["appointmentDate"] <= now:
        doc["status"] = "completed"
        if rng.random() < 0.6:
            doc["review"] = {"rating": _rating(rng)}
    return doc


def history(rng: random.Random, *, now: dt.datetime, days: int, per_day: float) -> list[dict[str, Any]]:
    """Appointments for the last `days` days, `per_day` on average, following a daily rhythm."""
    docs: list[dict[str, Any]] = []
    step = dt.timedelta(minutes=10)
    mean_weight = 0.15 + math.sqrt(8 * math.pi) / 24 + 0.7 * math.sqrt(6 * math.pi) / 24
    per_slot = per_day / (24 * 6) / mean_weight
    t = now - dt.timedelta(days=days)
    while t < now:
        lam = per_slot * _diurnal(t) * (1.15 if t.weekday() < 5 else 0.6)
        for _ in range(_poisson(rng, lam)):
            docs.append(make_appointment(rng, t + step * rng.random(), now=now))
        t += step
    return [d for d in docs if d["createdAt"] <= now]


def busy_history(rng: random.Random, *, now: dt.datetime, per_hour: float = BUSY_PER_HOUR,
                 weeks: int = 4, recent_minutes: int = 75) -> list[dict[str, Any]]:
    """Extra appointments at `per_hour` around this time of day: from 1 hour before to 2 hours after
    it, 1 to `weeks` weeks back, and over the last `recent_minutes`. The hub expects the median of the
    same weekday and hour over 4 weeks, so a live demo's hours look busy to it."""
    spans = [(now - dt.timedelta(weeks=w, hours=1), now - dt.timedelta(weeks=w) + dt.timedelta(hours=2))
             for w in range(1, weeks + 1)]
    spans.append((now - dt.timedelta(minutes=recent_minutes), now))
    docs: list[dict[str, Any]] = []
    for start, end in spans:
        n = _poisson(rng, per_hour * (end - start).total_seconds() / 3600)
        docs += [make_appointment(rng, start + (end - start) * rng.random(), now=now) for _ in range(n)]
    return docs


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:  # normal approximation keeps big batches cheap
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


@dataclass
class _Backend:
    """Prometheus metrics of a simulated Node.js healthcare backend."""

    rng: random.Random
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        self.requests = Counter("http_requests_total", "HTTP requests served",
                                ["method", "route", "status_code"], registry=self.registry)
        self.duration = Histogram("http_request_duration_seconds", "HTTP request latency",
                                  ["method", "route", "status_code"], buckets=BUCKETS, registry=self.registry)
        self.incident_until = 0.0
        # The first slow spell comes a few minutes in, so a demo shows alerts firing early.
        self.next_incident = time.monotonic() + self.rng.uniform(120, 240)
        # A short frontend outage comes first (its /health answers 503), so the demo's Health
        # panel shows a check going down and recovering within the first two minutes.
        self.outage_until = 0.0
        self.next_outage = time.monotonic() + self.rng.uniform(45, 75)
        # The platform's own failure: every service answers, yet nobody can book (a hidden button).
        self.bookings_stopped_until = 0.0
        self.next_bookings_stop = time.monotonic() + self.rng.uniform(*BOOKINGS_STOP_AFTER)

    @property
    def bookings_stopped(self) -> bool:
        """True during a bookings outage: health checks pass, but no appointment is booked."""
        return time.monotonic() < self.bookings_stopped_until

    @property
    def frontend_down(self) -> bool:
        """True during a frontend outage: the simulated frontend's /health answers 503."""
        return time.monotonic() < self.outage_until

    @property
    def backend_down(self) -> bool:
        """True during a latency incident: the simulated backend's /api/health answers 503."""
        return time.monotonic() < self.incident_until

    def request(self, method: str, route: str, median: float, *, status: int | None = None) -> None:
        slow = time.monotonic() < self.incident_until
        if status is None:
            r = self.rng.random()
            err = 0.06 if slow else 0.004
            status = 500 if r < err else 503 if r < err * 1.3 else 404 if r < 0.03 else 401 if r < 0.04 else 200
        latency = self.rng.lognormvariate(math.log(median * (6 if slow else 1)), 0.5)
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route, str(status)).observe(latency)

    def traffic(self, elapsed: float, dt_s: float) -> None:
        # A slow wave (10 min), a faster ripple and noise: the request-rate graph never looks flat.
        rps = 25 * (1 + 0.45 * math.sin(2 * math.pi * elapsed / 600) + 0.15 * math.sin(2 * math.pi * elapsed / 47))
        rps *= self.rng.uniform(0.8, 1.2)
        now = time.monotonic()
        if now >= self.next_incident:
            # A slow spell: latency x6 and ~8% 5xx for 45-120 s, then another in 10-20 min.
            self.incident_until = now + self.rng.uniform(45, 120)
            self.next_incident = self.incident_until + self.rng.uniform(600, 1200)
            log.info("simulator: latency incident for %.0f s", self.incident_until - now)
        if now >= self.next_outage:
            # The frontend's /health fails for 20-35 s, then again in 8-15 min.
            self.outage_until = now + self.rng.uniform(20, 35)
            self.next_outage = self.outage_until + self.rng.uniform(480, 900)
            log.info("simulator: frontend outage for %.0f s", self.outage_until - now)
        if now >= self.next_bookings_stop:
            self.bookings_stopped_until = now + BOOKINGS_STOP_FOR
            self.next_bookings_stop = self.bookings_stopped_until + self.rng.uniform(900, 1500)
            log.info("simulator: bookings stop for %.0f s (every health check stays green)", BOOKINGS_STOP_FOR)
        weights = [w for _m, _r, w, _l in ROUTES]
        for _ in range(_poisson(self.rng, rps * dt_s)):
            method, route, _w, median = self.rng.choices(ROUTES, weights)[0]
            self.request(method, route, median)


async def _serve_metrics(backend: _Backend, host: str, port: int) -> web.AppRunner:
    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(backend.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # The guide's AlertingService probes the frontend's /health and the backend's /api/health;
    # one simulator plays both, and each fails (503) during its own kind of incident.
    async def health(_request: web.Request) -> web.Response:
        if backend.frontend_down:
            return web.json_response({"status": "unavailable", "reason": "simulated frontend outage"}, status=503)
        return web.json_response({"status": "ok"})

    async def api_health(_request: web.Request) -> web.Response:
        if backend.backend_down:
            return web.json_response({"status": "degraded", "reason": "simulated latency incident"}, status=503)
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_get("/api/health", api_health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


class _Appointments:
    """Books, completes booking flows, cancels, completes and reviews appointments."""

    def __init__(self, coll: Any, rng: random.Random, backend: _Backend) -> None:
        self.coll = coll
        self.rng = rng
        self.backend = backend
        self.booked: list[ObjectId] = []
        self.completed: list[ObjectId] = []  # completed, not yet reviewed
        self.flows: list[tuple[float, ObjectId]] = []  # (monotonic due time, id): booking flows in progress

    def remember(self, docs: list[dict[str, Any]]) -> None:
        for d in docs[-MAX_TRACKED:]:
            if d["status"] == "booked":
                self.booked.append(d["_id"])
            elif d["status"] == "completed" and "review" not in d:
                self.completed.append(d["_id"])

    @staticmethod
    def _take(ids: list[ObjectId], rng: random.Random) -> ObjectId | None:
        if not ids:
            return None
        # Mostly recent appointments (the live window moves), sometimes any remembered one.
        i = rng.randrange(max(0, len(ids) - 30), len(ids)) if rng.random() < 0.6 else rng.randrange(len(ids))
        ids[i], ids[-1] = ids[-1], ids[i]
        return ids.pop()

    async def finish_flows(self) -> None:
        now = time.monotonic()
        while self.flows and self.flows[0][0] <= now:
            _due, oid = heapq.heappop(self.flows)
            await self.coll.update_one({"_id": oid}, {"$set": {"bookingCompletedAt": _ms(dt.datetime.now(UTC))}})
            self.backend.request("POST", "/api/appointments/:id/confirm", 0.08, status=200)

    async def event(self) -> None:
        kind = self.rng.choices(("book", "cancel", "complete", "review"), (60, 9, 20, 11))[0]
        if kind == "book" and self.backend.bookings_stopped:
            return  # the booking never reaches the backend: nothing is written, nothing fails
        if kind == "book":
            now = dt.datetime.now(UTC)
            doc = make_appointment(self.rng, now, now=now)  # created now: no booking time, no review yet
            doc["status"] = "booked"
            res = await self.coll.insert_one(doc)
            self.backend.request("POST", "/api/appointments", 0.09, status=201)
            if self.rng.random() < 0.93:  # the rest abandon the flow: no bookingCompletedAt, ever
                heapq.heappush(self.flows, (time.monotonic() + _booking_seconds(self.rng), res.inserted_id))
            self.booked.append(res.inserted_id)
            del self.booked[:-MAX_TRACKED]
        elif kind == "cancel" and (oid := self._take(self.booked, self.rng)) is not None:
            await self.coll.update_one({"_id": oid}, {"$set": {"status": "cancelled",
                                                              "cancelledAt": dt.datetime.now(UTC)}})
            self.backend.request("DELETE", "/api/appointments/:id", 0.05, status=200)
        elif kind == "complete" and (oid := self._take(self.booked, self.rng)) is not None:
            await self.coll.update_one({"_id": oid}, {"$set": {"status": "completed"}})
            self.backend.request("PATCH", "/api/appointments/:id", 0.05, status=200)
            self.completed.append(oid)
            del self.completed[:-MAX_TRACKED]
        elif kind == "review" and (oid := self._take(self.completed, self.rng)) is not None:
            await self.coll.update_one({"_id": oid}, {"$set": {"review": {"rating": _rating(self.rng),
                                                                          "at": dt.datetime.now(UTC)}}})
            self.backend.request("POST", "/api/appointments/:id/review", 0.06, status=201)


async def _seed(coll: Any, rng: random.Random, *, days: int, per_day: float, create_index: bool,
                busy_per_hour: float = BUSY_PER_HOUR) -> list[dict[str, Any]]:
    if create_index:
        await coll.create_index([("createdAt", 1)])
    if await coll.find_one({}, projection={"_id": 1}) is not None:
        log.info("simulator: %s already holds appointments; not seeding", coll.full_name)
        return []
    now = dt.datetime.now(UTC)
    docs = history(rng, now=now, days=days, per_day=per_day)
    if busy_per_hour:
        docs += busy_history(rng, now=now, per_hour=busy_per_hour)
    docs.sort(key=lambda d: d["createdAt"])
    for i in range(0, len(docs), 2000):
        await coll.insert_many(docs[i:i + 2000], ordered=False)
    log.info("simulator: seeded %d appointments over %d days into %s", len(docs), days, coll.full_name)
    return docs


async def run_simulator(*, mongodb_uri: str, metrics_port: int, stop: asyncio.Event, rate: float = 0.5,
                        history_days: int = 30, history_per_day: float = 200.0, collection: str = "appointments",
                        metrics_host: str = "127.0.0.1", create_index: bool = True, seed: int | None = None,
                        ready: asyncio.Event | None = None, busy_per_hour: float = BUSY_PER_HOUR) -> None:
    """Seed history (and `busy_per_hour` around this time of day: busy_history; 0 = none), then write appointment events (~`rate`/s, varying) and serve /metrics, /health and
    /api/health (503 during outages and incidents) until `stop` is set."""
    rng = random.Random(seed)
    backend = _Backend(rng)
    runner = await _serve_metrics(backend, metrics_host, metrics_port)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, serverSelectionTimeoutMS=5000,
                                                                timeoutMS=30000, appname="hub-simulator")
    coll = client.get_default_database(DEFAULT_DATABASE)[collection]
    appts = _Appointments(coll, rng, backend)
    loop = asyncio.get_running_loop()
    started = loop.time()
    seeded = False
    last_error = 0.0
    next_traffic = loop.time()
    next_event = loop.time()
    try:
        while not stop.is_set():
            now = loop.time()
            if now >= next_traffic:
                backend.traffic(now - started, TRAFFIC_TICK)
                next_traffic = now + TRAFFIC_TICK
            try:
                if not seeded:
                    appts.remember(await _seed(coll, rng, days=history_days, per_day=history_per_day,
                                               create_index=create_index, busy_per_hour=busy_per_hour))
                    seeded = True
                    if ready is not None:
                        ready.set()
                    next_event = loop.time()
                await appts.finish_flows()
                if loop.time() >= next_event:
                    await appts.event()
                    # Booking activity swings over ~5 min around `rate` events per second.
                    current = max(rate * 0.05, rate * (1 + 0.6 * math.sin(2 * math.pi * (now - started) / 300)))
                    next_event = loop.time() + rng.expovariate(current)
            except PyMongoError as exc:
                # The demo may stop the database on purpose: keep serving metrics, retry quietly.
                if now - last_error > 30:
                    log.warning("simulator: MongoDB write failed (%s); retrying", type(exc).__name__)
                    last_error = now
                next_event = loop.time() + 1.0
            wait = max(0.0, min(next_traffic, next_event) - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(wait, 1.0))
    finally:
        await runner.cleanup()
        await client.close()
