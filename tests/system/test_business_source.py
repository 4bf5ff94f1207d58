"""Business source against a real MongoDB-wire-protocol server (SecantusDB child process)."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import math
import random
import socket
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient, monitoring

from hub.app import create_app
from hub.context import HUB
from hub.config import BusinessFields, build_config
from hub.doctor import run_doctor
from hub_demo.simulator import run_simulator
from hub.sources.base import SourceError
from hub.sources.business import WINDOWS, BusinessSource, driver_deadline, fold_small_cells
from tests.support.components import make_business_source
from tests.support.aio import wait_for
from tests.support import free_port
from tests.support.mongo import MongoServer, mongo_server, mongo_server_fn  # noqa: F401

UTC = dt.timezone.utc
MARGIN = 2.0  # seconds of slack for a loaded 2-core CI machine
SPECIALTIES = ["cardiology", "dermatology", "pediatrics", "neurology", "oncology", "radiology", "urology"]


# ----------------------------------------------------------------------------- helpers


def ms(t: dt.datetime) -> dt.datetime:
    """`t` truncated to milliseconds (BSON dates carry no more)."""
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def get_path(doc: dict[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def expected_metrics(docs: list[dict[str, Any]], start: dt.datetime, *, k: int = 0) -> dict[str, Any]:
    """Plain-Python computation of the seed's metrics over `docs` (independent of the pipeline)."""
    sel = [d for d in docs if isinstance(d.get("createdAt"), dt.datetime) and d["createdAt"] >= start]
    total = len(sel)
    counts = Counter(get_path(d, "doctor.specialty") if get_path(d, "doctor.specialty") is not None else "unknown"
                     for d in sel)
    if k:
        small = {s for s, c in counts.items() if c < k or s == "other"}
        other = sum(counts.pop(s) for s in small)
        while 0 < other < k and counts:  # "other" must not be a small cell either
            smallest = max(counts, key=lambda s: (-counts[s], s))
            other += counts.pop(smallest)
        if other:
            counts["other"] = other
    by = [{"_id": s, "count": c} for s, c in sorted(counts.items(), key=lambda sc: (-sc[1], sc[0]))]
    cancelled = sum(1 for d in sel if d.get("status") == "cancelled")
    waits = [(d["bookingCompletedAt"] - d["createdAt"]).total_seconds() for d in sel
             if isinstance(d.get("bookingCompletedAt"), dt.datetime)]
    ratings = [get_path(d, "review.rating") for d in sel if is_number(get_path(d, "review.rating"))]
    mean = sum(ratings) / len(ratings) if ratings else None
    return {
        "total": total,
        "bySpecialty": by,
        "cancellationRate": cancelled / total * 100 if total else 0,
        "averageBookingTime": sum(waits) / len(waits) if waits else 0,
        "patientSatisfaction": math.floor(mean * 100 + 0.5) / 100 if mean is not None else None,
    }


def make_docs(now: dt.datetime, *, seed: int = 7) -> list[dict[str, Any]]:
    """Appointments across every window, with the edge cases the metrics must survive.

    Window layout (age = now - createdAt), kept >= 3 minutes away from every window edge:
      < 1 h   : all cancelled, no ratings, a missing specialty, a null specialty, missing booking times
      1-24 h  : mixed statuses, ratings (incl. a null and a string rating that must not count)
      24 h-7 d, 7-30 d : bulk history; > 30 d : must never count
    """
    rng = random.Random(seed)
    docs: list[dict[str, Any]] = []

    def add(age_s: float, *, status: str, specialty: Any = "keep", wait: float | None = None,
            rating: Any = "none") -> None:
        created = ms(now - dt.timedelta(seconds=age_s))
        doc: dict[str, Any] = {"createdAt": created, "status": status,
                               "patient": {"name": f"Patient {len(docs)}", "email": f"p{len(docs)}@example.org"}}
        if specialty == "keep":
            specialty = rng.choice(SPECIALTIES)
        if specialty != "missing":
            doc["doctor"] = {"name": "Dr X", "specialty": specialty}
        if wait is not None:
            doc["bookingCompletedAt"] = ms(created + dt.timedelta(seconds=wait))
        if rating != "none":
            doc["review"] = {"rating": rating, "comment": "fine"}
        docs.append(doc)

    hour, day = 3600.0, 86400.0
    for _ in range(9):  # last hour: everything cancelled, no ratings
        add(rng.uniform(200, hour - 200), status="cancelled", wait=rng.uniform(20, 400))
    add(600, status="cancelled", specialty="missing")  # no specialty, no booking time
    add(900, status="cancelled", specialty=None, wait=33.5)
    for _ in range(150):
        status = rng.choices(["booked", "completed", "cancelled"], [5, 3, 2])[0]
        rating = rng.randint(1, 5) if status == "completed" and rng.random() < 0.7 else "none"
        wait = rng.uniform(15, 900) if rng.random() < 0.85 else None
        add(rng.uniform(hour + 200, day - 200), status=status, wait=wait, rating=rating)
    add(2 * hour, status="completed", rating=None, wait=None)  # null rating: not a rating
    add(3 * hour, status="completed", rating="5", specialty="missing")  # string rating: not a number
    add(4 * hour, status="completed", rating=4.5, specialty="")  # empty specialty is a specialty
    for lo, hi, n in ((day, 7 * day, 600), (7 * day, 30 * day, 900), (30 * day, 40 * day, 120)):
        for _ in range(n):
            status = rng.choices(["booked", "completed", "cancelled"], [3, 5, 2])[0]
            rating = rng.randint(1, 5) if status == "completed" and rng.random() < 0.6 else "none"
            wait = rng.uniform(15, 1200) if rng.random() < 0.9 else None
            add(rng.uniform(lo + 200, hi - 200), status=status, wait=wait, rating=rating,
                specialty=rng.choice([*SPECIALTIES, "missing"]))
    return docs


def source_for(server: MongoServer, *, timeout: float = 2.0, collection: str = "appointments",
               listeners: list[Any] | None = None, uri: str | None = None, metrics: Any = None,
               reconcile_interval: float = 300.0, **cfg: Any) -> BusinessSource:
    # The seed's object and its queries: the anomaly detectors (their own tests) are off unless asked for.
    cfg.setdefault("anomaly", {"enabled": False})
    return make_business_source(uri or server.uri, collection=collection, timeout=timeout,
                                reconcile_interval=reconcile_interval, metrics=metrics,
                                client_options={"event_listeners": listeners} if listeners else None, **cfg)


class AggregateCounter(monitoring.CommandListener):
    """Counts metric `aggregate` commands the driver actually sends (command monitoring)."""

    def __init__(self) -> None:
        self.aggregates = 0
        self.commands: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append(event.command_name)
        stages = event.command.get("pipeline") or [{}] if event.command_name == "aggregate" else [{}]
        if event.command_name == "aggregate" and "$changeStream" not in stages[0]:  # not the stream's opening
            self.aggregates += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def insert(server: MongoServer, collection: str, docs: list[dict[str, Any]]) -> None:
    async with AsyncMongoClient(server.uri, serverSelectionTimeoutMS=5000) as client:
        coll = client.get_default_database()[collection]
        await coll.drop()
        if docs:
            await coll.insert_many([dict(d) for d in docs])


# ----------------------------------------------------------------------------- correctness


async def test_every_field_every_window_matches_plain_python(mongo_server: MongoServer) -> None:
    now = dt.datetime.now(UTC)
    docs = make_docs(now)
    await insert(mongo_server, "appointments", docs)
    await insert(mongo_server, "empty", [])
    # Same documents under another schema: exercises [sources.business.fields] with dotted paths.
    remapped = [{"meta": {"created": d["createdAt"], "state": "CXL" if d["status"] == "cancelled" else d["status"]},
                 **({"spec": d["doctor"]["specialty"]} if "doctor" in d else {}),
                 **({"doneAt": d["bookingCompletedAt"]} if "bookingCompletedAt" in d else {}),
                 **({"stars": d["review"]["rating"]} if "review" in d else {})} for d in docs]
    await insert(mongo_server, "remapped", remapped)
    fields = {"created_at": "meta.created", "specialty": "spec", "status": "meta.state", "cancelled_value": "CXL",
              "booking_completed_at": "doneAt", "rating": "stars"}
    src = source_for(mongo_server)
    empty = source_for(mongo_server, collection="empty")
    remap = source_for(mongo_server, collection="remapped", fields=fields)
    for s in (src, empty, remap):
        await s.start()
    try:
        for window, span in WINDOWS.items():
            want = expected_metrics(docs, now - span)
            for s in (src, remap):
                got = await s.metrics_for(window)
                assert got["timeRange"] == window
                assert set(got) == {"timestamp", "timeRange", "appointments"}
                a = got["appointments"]
                assert set(a) == set(want)
                assert a["total"] == want["total"], window
                assert a["bySpecialty"] == want["bySpecialty"], window
                assert a["cancellationRate"] == pytest.approx(want["cancellationRate"], rel=1e-12), window
                assert a["averageBookingTime"] == pytest.approx(want["averageBookingTime"], rel=1e-9), window
                assert a["patientSatisfaction"] == want["patientSatisfaction"], window
            got_empty = (await empty.metrics_for(window))["appointments"]
            assert got_empty == {"total": 0, "bySpecialty": [], "cancellationRate": 0, "averageBookingTime": 0,
                                 "patientSatisfaction": None}
        # The edge cases really are in the data.
        last_hour = (await src.metrics_for("1h"))["appointments"]
        assert last_hour["cancellationRate"] == 100.0 and last_hour["patientSatisfaction"] is None
        assert {"_id": "unknown", "count": 2} in last_hour["bySpecialty"]
        ts = (await src.metrics_for("24h"))["timestamp"]
        assert dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ") and ts.endswith("Z") and len(ts) == 24
    finally:
        for s in (src, empty, remap):
            await s.close()


async def test_collect_fills_business_section_and_rejects_unknown_range(mongo_server: MongoServer) -> None:
    src = source_for(mongo_server, time_range="7d")
    await src.start()
    try:
        res = await src.collect(src.timeout)
        assert set(res.data) == {"business"} and res.error is None
        assert res.data["business"]["timeRange"] == "7d"
        assert src.name == "business" and src.sections == ("business",) and src.timeout == 2.0
        with pytest.raises(ValueError, match="allowed"):
            await src.metrics_for("2h")
    finally:
        await src.close()


async def test_min_cell_size_folds_small_specialties(mongo_server: MongoServer) -> None:
    now = dt.datetime.now(UTC)
    counts = {"cardiology": 9, "dermatology": 5, "neurology": 4, "oncology": 2, "urology": 1, "other": 1}
    docs = [{"createdAt": ms(now - dt.timedelta(minutes=10 + i)), "status": "booked", "doctor": {"specialty": s}}
            for s, n in counts.items() for i in range(n)]
    docs.append({"createdAt": ms(now - dt.timedelta(minutes=5)), "status": "booked"})  # unknown: 1
    await insert(mongo_server, "cells", docs)
    src = source_for(mongo_server, collection="cells", min_cell_size=5)
    await src.start()
    try:
        got = (await src.metrics_for("1h"))["appointments"]
    finally:
        await src.close()
    # neurology 4 + oncology 2 + urology 1 + a real "other" 1 + unknown 1 = 9, tied with cardiology: _id breaks it.
    assert got["bySpecialty"] == [{"_id": "cardiology", "count": 9}, {"_id": "other", "count": 9},
                                  {"_id": "dermatology", "count": 5}]
    assert got["total"] == sum(counts.values()) + 1
    assert got["bySpecialty"] == expected_metrics(docs, now - dt.timedelta(hours=1), k=5)["bySpecialty"]


def test_fold_small_cells_ties_sort_by_id() -> None:
    rows = [{"_id": "b", "count": 3}, {"_id": "a", "count": 2}, {"_id": "c", "count": 1}, {"_id": "d", "count": 1}]
    assert fold_small_cells(rows, 2) == [{"_id": "b", "count": 3}, {"_id": "a", "count": 2},
                                         {"_id": "other", "count": 2}]
    assert fold_small_cells(rows, 0) == rows
    # "other" below k would give its count away (total - shown rows): the smallest row joins it.
    assert fold_small_cells([{"_id": "a", "count": 9}, {"_id": "b", "count": 4}, {"_id": "c", "count": 4},
                             {"_id": "d", "count": 1}], 3) == [{"_id": "a", "count": 9}, {"_id": "other", "count": 5},
                                                               {"_id": "b", "count": 4}]
    assert fold_small_cells([{"_id": "a", "count": 2}], 3) == [{"_id": "other", "count": 2}]


# ----------------------------------------------------------------------------- sharing


async def test_burst_of_requests_shares_one_computation(mongo_server: MongoServer) -> None:
    now = dt.datetime.now(UTC)
    await insert(mongo_server, "burst", make_docs(now, seed=3))
    counter = AggregateCounter()
    src = source_for(mongo_server, collection="burst", listeners=[counter])
    await src.start()
    try:
        results = await asyncio.gather(*(src.metrics_for("7d") for _ in range(20)))
        assert all(r == results[0] for r in results)
        # Cold, the one shared computation answers with the full pipeline and fills the hours in the
        # background with one aggregation grouped by hour.
        await asyncio.wait_for(src.filled(), timeout=10)  # the background fill
        assert counter.aggregates == 2 and src.queries_total == 2
        await src.metrics_for("30d")  # full pipeline; the fill: the hours 7d did not cover, the open hour
        await asyncio.wait_for(src.filled(), timeout=10)
        assert counter.aggregates == 5
        # Every call answers afresh (exact, no cache); once warm, from the kept hours plus the partial
        # oldest hour and the open hour.
        await src.metrics_for("30d")
        assert counter.aggregates == 7
        # A window without closed hours (the tick's default 1h) is the full pipeline alone.
        tick = (await src.collect(src.timeout)).data["business"]
        assert counter.aggregates == 8 and tick["timeRange"] == src.cfg.time_range == "1h"
    finally:
        await src.close()


# ----------------------------------------------------------------------------- outage


async def test_outage_raises_quickly_and_recovers_with_same_source(mongo_server_fn: MongoServer) -> None:
    server = mongo_server_fn
    await insert(server, "appointments", make_docs(dt.datetime.now(UTC), seed=11))
    timeout, ttl = 2.0, 0.0  # driver deadline: 0.9 * 2.0 on the 0.5 s grid = 1.5 s
    src = source_for(server, timeout=timeout)
    await src.start()
    try:
        before = (await src.collect(src.timeout)).data["business"]
        assert before["appointments"]["total"] > 0
        await src.metrics_for("24h")  # warm the 24h hours
        server.stop()
        outage = time.monotonic()

        t0 = time.monotonic()
        with pytest.raises(SourceError) as err:
            await src.collect(src.timeout)  # the tick never hides an outage behind the kept hours
        assert time.monotonic() - t0 < timeout + MARGIN
        reason = str(err.value)
        assert f"127.0.0.1:{server.port}" in reason and len(reason) <= 300
        assert "Topology Description" not in reason

        async def api_fails() -> bool:
            try:
                await src.metrics_for("24h")
            except SourceError:
                return True
            return False

        await wait_for(api_fails, timeout=ttl + timeout + MARGIN, what="API to report the outage")
        assert time.monotonic() - outage < ttl + 2 * timeout + MARGIN

        server.start()

        async def recovered() -> bool:
            try:
                return bool(await src.collect(src.timeout))
            except SourceError:
                return False

        await wait_for(recovered, timeout=15, what="recovery after restart", interval=0.2)
        after = (await src.collect(src.timeout)).data["business"]
        assert after["appointments"] == before["appointments"]
        assert (await src.metrics_for("24h"))["timeRange"] == "24h"
    finally:
        await src.close()


async def test_start_does_not_fail_when_server_is_down(mongo_server_fn: MongoServer) -> None:
    mongo_server_fn.kill()
    src = source_for(mongo_server_fn, timeout=0.5)
    t0 = time.monotonic()
    await src.start()
    assert time.monotonic() - t0 < 0.5
    try:
        with pytest.raises(SourceError, match="MongoDB not reachable at mongodb://127.0.0.1"):
            await src.collect(src.timeout)
        mongo_server_fn.start()

        async def up() -> Any:
            try:
                return await src.collect(src.timeout)
            except SourceError:
                return None  # the driver re-checks a down server at most every 0.5 s

        assert (await wait_for(up, timeout=10, what="first success")).data["business"]["appointments"]["total"] == 0
    finally:
        await src.close()


# ----------------------------------------------------------------------------- secrets


async def test_password_never_in_errors_or_logs(mongo_server_fn: MongoServer, caplog: pytest.LogCaptureFixture) -> None:
    server = mongo_server_fn
    password = "Sup3r-Secret-Pa55"
    async with AsyncMongoClient(server.uri) as client:
        # The read-only user docs/mongodb.md tells operators to create.
        await client.admin.command("createUser", "hub_reader", pwd=password,
                                   roles=[{"role": "read", "db": "healthcare"}])
    server.stop()
    server.start(auth=True)
    good = source_for(server, uri=server.uri_with("hub_reader", password, auth_source="admin"), timeout=2.0)
    bad = source_for(server, uri=server.uri_with("hub_reader", password + "x", auth_source="admin"), timeout=1.0)
    for s in (good, bad):
        await s.start()
    try:
        # A read-only user suffices; the collection does not exist yet, which reads as empty.
        assert (await good.collect(good.timeout)).data["business"]["appointments"]["total"] == 0
        with pytest.raises(SourceError) as err:
            await bad.collect(bad.timeout)
        assert "authentication failed" in str(err.value)
        server.kill()  # unreachable with a password in the URI: the message names the host, never the password
        with pytest.raises(SourceError) as err2:
            await bad.metrics_for("1h")
    finally:
        for s in (good, bad):
            await s.close()
    for text in (str(err.value), str(err2.value), caplog.text):
        assert password not in text and "Pa55" not in text


# ----------------------------------------------------------------------------- HTTP endpoint


async def test_hub_app_business_tick_endpoint_outage_and_recovery(mongo_server_fn: MongoServer,
                                                                   aiohttp_client: Any) -> None:
    """The real hub app: data.business every tick, the seed's endpoint, an outage and recovery without restart."""
    server = mongo_server_fn
    await insert(server, "appointments", make_docs(dt.datetime.now(UTC), seed=5))
    interval, timeout = 2.0, 1.5  # the scheduler caps a tick's collect at min(timeout, 0.8 * interval)
    cfg = build_config({"broadcast": {"interval": interval},
                        "sources": {"prometheus": {"enabled": False},
                                    "business": {"mongodb_uri": server.uri, "timeout": timeout, "time_range": "24h"}}},
                       environ={})
    client = await aiohttp_client(create_app(cfg))

    async def snap() -> dict[str, Any]:
        r = await client.get("/api/metrics/snapshot")
        return await r.json() if r.status == 200 else {}

    async def business_status(status: str) -> dict[str, Any] | None:
        s = await snap()
        return s if s and s["sources"]["business"]["status"] == status else None

    ok = await wait_for(lambda: business_status("ok"), timeout=10, what="a tick with business data")
    want = expected_metrics(make_docs(dt.datetime.now(UTC), seed=5), dt.datetime.now(UTC) - WINDOWS["24h"])
    assert ok["data"]["business"]["appointments"]["total"] == want["total"]
    assert ok["data"]["business"]["timeRange"] == "24h"

    r = await client.get("/api/metrics/business")
    assert r.status == 200
    body = await r.json()
    assert body["timeRange"] == "24h" and body["appointments"]["total"] == want["total"]
    r = await client.get("/api/metrics/business?timeRange=30d")
    assert (await r.json())["timeRange"] == "30d"
    r = await client.get("/api/metrics/business?timeRange=1y")
    assert r.status == 400
    assert (await r.json())["allowed"] == ["1h", "24h", "7d", "30d"]

    server.stop()
    down = await wait_for(lambda: business_status("error"), timeout=2 * interval + MARGIN, what="an error tick")
    assert down["data"]["business"] is None
    assert down["sources"]["process"]["status"] == "ok" and down["data"]["application"] is not None
    seq = down["seq"]

    async def readable() -> bool:  # once the server is gone (not mid-shutdown), the reason names it
        s = await business_status("error")
        return bool(s) and f"MongoDB not reachable at mongodb://127.0.0.1:{server.port}/" in s["sources"]["business"]["error"]

    await wait_for(readable, timeout=3 * interval + MARGIN, what="a readable outage reason")

    async def ticks_go_on() -> bool:  # the other sources stay on time while MongoDB is down
        return (await snap())["seq"] >= seq + 2

    await wait_for(ticks_go_on, timeout=3 * interval + MARGIN, what="ticks during the outage")

    async def api_503() -> bool:
        r = await client.get("/api/metrics/business?timeRange=7d")
        return r.status == 503 and "MongoDB" in (await r.json())["error"]

    await wait_for(api_503, timeout=interval + timeout + MARGIN, what="503 from the endpoint")

    server.start()
    back = await wait_for(lambda: business_status("ok"), timeout=15, what="recovery without restarting the hub")
    assert back["data"]["business"]["appointments"]["total"] == want["total"]


# ----------------------------------------------------------------------------- doctor


async def test_doctor_reports_missing_index_then_ok(mongo_server_fn: MongoServer) -> None:
    await insert(mongo_server_fn, "appointments", make_docs(dt.datetime.now(UTC), seed=2)[:50])
    cfg = build_config({"sources": {"business": {"mongodb_uri": mongo_server_fn.uri, "timeout": 2}}}, environ={})
    out = io.StringIO()
    assert await run_doctor(cfg, out=out) == 1
    assert "db.appointments.createIndex({createdAt: 1})" in out.getvalue()
    async with AsyncMongoClient(mongo_server_fn.uri) as client:
        await client.get_default_database().appointments.create_index([("createdAt", 1), ("status", 1)])
    out = io.StringIO()
    assert await run_doctor(cfg, out=out) == 0, out.getvalue()
    assert "createdAt_1_status_1" in out.getvalue()
    assert "change detection: change_stream" in out.getvalue()
    mongo_server_fn.kill()
    out = io.StringIO()
    cfg = build_config({"sources": {"business": {"mongodb_uri": mongo_server_fn.uri_with("u", "pw-9876"),
                                                 "timeout": 0.5}}}, environ={})
    assert await run_doctor(cfg, out=out) == 1
    assert "reachable: NO" in out.getvalue() and "pw-9876" not in out.getvalue()


# ----------------------------------------------------------------------------- simulator


async def test_simulator_seeds_writes_and_serves_backend_metrics(mongo_server_fn: MongoServer) -> None:
    port = free_port()
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_simulator(mongodb_uri=mongo_server_fn.uri, metrics_port=port, stop=stop,
                                             rate=20.0, history_days=3, history_per_day=150, seed=42, ready=ready,
                                             busy_per_hour=0))
    src = source_for(mongo_server_fn)
    await src.start()
    try:
        await asyncio.wait_for(ready.wait(), timeout=30)
        seeded = (await src.metrics_for("7d"))["appointments"]
        assert 300 < seeded["total"] < 700
        statuses = {"booked", "completed", "cancelled"}
        async with AsyncMongoClient(mongo_server_fn.uri) as client:
            coll = client.get_default_database().appointments
            assert set(await coll.distinct("status")) == statuses
            assert await coll.count_documents({"review.rating": {"$gte": 1, "$lte": 5}}) > 0
            assert await coll.count_documents({"bookingCompletedAt": {"$exists": False}}) > 0
            assert any(ix["key"] == {"createdAt": 1} for ix in [i async for i in await coll.list_indexes()])

            async def changed() -> bool:  # new bookings and status changes keep arriving
                return (await coll.count_documents({}) > seeded["total"] + 5
                        and await coll.count_documents({"cancelledAt": {"$exists": True}}) > 0)

            await wait_for(changed, timeout=20, what="live appointment events", interval=0.2)
        async with httpx.AsyncClient() as http:
            async def scraped() -> str:
                r = await http.get(f"http://127.0.0.1:{port}/metrics")
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
                return r.text if 'route="/api/appointments",status_code="201"' in r.text else ""

            text = await wait_for(scraped, timeout=10, what="backend metrics")
        # the seed guide's label name, which the shipped SLO rules select on
        assert 'http_requests_total{method="GET",route="/api/doctors",status_code="200"}' in text
        assert "http_request_duration_seconds_bucket{" in text and 'le="+Inf"' in text
        assert "job=" not in text  # Prometheus adds the job label from its scrape config
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        await src.close()
    with pytest.raises(OSError):  # the metrics endpoint is gone once the simulator returns
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_driver_deadline_stays_inside_the_scheduler_budget() -> None:
    assert driver_deadline(5.0) == 4.5  # production defaults: budget min(5, 0.8 * 10)
    assert driver_deadline(1.6) == 1.0  # the driver's 0.5 s grid: 1.44 s would fire at 1.5 s
    assert driver_deadline(0.3) == 0.27  # below one grid step: as close as it gets


async def test_the_health_source_pings_the_business_sources_mongodb(mongo_server_fn: MongoServer,
                                                                    aiohttp_client, make_config) -> None:
    # Wiring: with the business source enabled, create_app gives the health source a `database`
    # check that pings MongoDB through the business source's own client.
    cfg = make_config({"sources": {"business": {"enabled": True, "mongodb_uri": mongo_server_fn.uri},
                                   "health": {"enabled": True, "failures_before_down": 1,
                                              "checks": {"self": "http://127.0.0.1:9/health"}}}})
    client = await aiohttp_client(create_app(cfg))
    hub = client.app[HUB]
    await wait_for(lambda: hub.feed.latest is not None, timeout=20)
    snap = await (await client.get("/api/metrics/snapshot")).json()
    checks = snap["data"]["health"]["checks"]
    assert checks["database"]["up"] is True and checks["database"]["error"] is None
    assert checks["self"]["up"] is False and "refused" in checks["self"]["error"]
