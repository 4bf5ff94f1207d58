"""Hour buckets equal the full pipeline (the oracle) under a changing collection, on a real SecantusDB:
with change streams, across a store restart, across a lost resume point, and without change streams."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import itertools
import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from hub.config import BusinessFields, build_config
from hub.doctor import run_doctor
from hub.metrics import HubMetrics
from hub.sources.base import SourceError
from hub.sources.business import WINDOWS, BusinessSource, build_pipeline, shape_result, tracker
from hub.sources.business.buckets import BucketStore, HourStats, runs, specialty_key
from hub.sources.business.changes import CREATED_TOUCHED, watch_pipeline
from hub.sources.business.source import WINDOW_IDLE
from tests.support.aio import wait_for
from tests.support.mongo import MongoServer, mongo_server_fn  # noqa: F401
from tests.system.test_business_source import SPECIALTIES, insert, make_docs, ms, source_for

UTC = dt.timezone.utc
MARGIN = 3.0


# ----------------------------------------------------------------------------- the oracle and a workload


def parse_ts(ts: str) -> dt.datetime:
    return dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


async def oracle(coll: Any, fields: BusinessFields, got: dict[str, Any], *, k: int = 0) -> dict[str, Any]:
    """Today's full pipeline over exactly the window `got` was computed for (its timestamp)."""
    now = parse_ts(got["timestamp"])
    docs = await (await coll.aggregate(build_pipeline(fields, now - WINDOWS[got["timeRange"]]))).to_list(None)
    return shape_result(docs[0] if docs else None, time_range=got["timeRange"], timestamp=now, min_cell_size=k)


def differences(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """Where the incremental answer differs from the oracle: exact, but averages to 1e-9."""
    a, b = got["appointments"], want["appointments"]
    out = [f"{key}: {a[key]!r} != {b[key]!r}" for key in ("total", "bySpecialty", "patientSatisfaction")
           if a[key] != b[key]]
    for key in ("cancellationRate", "averageBookingTime"):
        if a[key] != pytest.approx(b[key], rel=1e-9, abs=1e-12):
            out.append(f"{key}: {a[key]!r} != {b[key]!r}")
    if got["timestamp"] != want["timestamp"] or got["timeRange"] != want["timeRange"]:
        out.append("timestamp/timeRange")
    return out


async def all_windows_match(src: BusinessSource, coll: Any) -> list[str]:
    """Every window from the source against the oracle; the differences (empty when exact)."""
    out = []
    for window in WINDOWS:
        got = await src.metrics_for(window)
        out += [f"{window} {d}" for d in differences(got, await oracle(coll, src.cfg.fields, got,
                                                                          k=src.cfg.min_cell_size))]
    return out


# ages (hours) that land in closed hours of every window, in partial oldest hours, and outside all of them
AGES_H = [0.05, 0.6, 0.97, 1.5, 5, 23.4, 24.6, 50, 24 * 6.9, 24 * 7.2, 24 * 20, 24 * 29.9, 24 * 31]


def appointment(rng: random.Random, created: dt.datetime) -> dict[str, Any]:
    doc: dict[str, Any] = {"createdAt": ms(created), "status": "booked",
                           "patient": {"name": f"Patient {rng.randrange(10**9)}", "email": "p@example.org"},
                           "doctor": {"name": "Dr X", "specialty": rng.choice(SPECIALTIES)}}
    return doc


class Workload:
    """Inserts, cancels, reviews, completes, deletes, replaces, moves and back-dates appointments."""

    def __init__(self, coll: Any, seed: int) -> None:
        self.coll = coll
        self.rng = random.Random(seed)
        self.ids: list[Any] = []

    async def load_ids(self) -> None:
        self.ids = [d["_id"] async for d in self.coll.find({}, {"_id": 1})]

    async def round(self, *, deletes: bool = True) -> None:
        rng, coll, now = self.rng, self.coll, dt.datetime.now(UTC)
        new = [appointment(rng, now - dt.timedelta(hours=a + rng.uniform(-0.02, 0.02))) for a in AGES_H]
        result = await coll.insert_many(new)
        self.ids += result.inserted_ids
        for _ in range(6):  # cancel
            await coll.update_one({"_id": rng.choice(self.ids)},
                                  {"$set": {"status": "cancelled", "cancelledAt": now}})
        for _ in range(6):  # review
            await coll.update_one({"_id": rng.choice(self.ids)}, {"$set": {"review": {"rating": rng.randint(1, 5),
                                                                                       "comment": "secret note"}}})
        for _ in range(6):  # complete: booking time from the created-at
            doc = await coll.find_one({"_id": rng.choice(self.ids)}, {"createdAt": 1})
            if doc and isinstance(doc.get("createdAt"), dt.datetime):
                await coll.update_one({"_id": doc["_id"]}, {"$set": {
                    "status": "completed", "bookingCompletedAt": doc["createdAt"] + dt.timedelta(seconds=rng.randint(5, 900))}})
        # move one into another closed hour (its old hour is unknown to the change event)
        await coll.update_one({"_id": rng.choice(self.ids)},
                              {"$set": {"createdAt": ms(now - dt.timedelta(hours=rng.choice(AGES_H[3:-1])))}})
        # replace one (the replaced version's hour is not in the event either)
        victim = rng.choice(self.ids)
        await coll.replace_one({"_id": victim}, appointment(rng, now - dt.timedelta(hours=rng.choice(AGES_H))))
        if deletes:
            for _ in range(3):
                victim = self.ids.pop(rng.randrange(len(self.ids)))
                await coll.delete_one({"_id": victim})


class Aggregates(monitoring.CommandListener):
    """The $match of every aggregate the hub sends (what its database work covers)."""

    def __init__(self) -> None:
        self.matches: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "aggregate":
            stages = event.command.get("pipeline") or []
            if stages and "$match" in stages[0]:
                self.matches.append(stages[0]["$match"])

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def covered_hours(match: dict[str, Any], now: dt.datetime) -> float:
    """Hours of created-at time one $match covers (open-ended ranges end at `now`)."""
    branches = match.get("$or") or [match]
    total = 0.0
    for b in branches:
        rng = b.get("createdAt") or {}
        if "$gte" not in rng:
            continue
        lo = rng["$gte"].replace(tzinfo=UTC)
        hi = rng.get("$lt", now).replace(tzinfo=UTC)
        total += max(0.0, (hi - lo).total_seconds() / 3600)
    return total


async def seeded(server: MongoServer, seed: int) -> None:
    await insert(server, "appointments", make_docs(dt.datetime.now(UTC), seed=seed))
    async with AsyncMongoClient(server.uri) as client:
        await client.get_default_database().appointments.create_index([("createdAt", 1)])


# ----------------------------------------------------------------------------- change streams


@pytest.fixture
def leaping_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The change tracker's clock leaps an hour at every reading (a fake clock: nothing sleeps), so every
    reconcile_interval has passed at every call: a delete's unknown hour is recomputed at the very next one."""
    readings = itertools.count(start=0.0, step=3600.0)
    monkeypatch.setattr(tracker, "monotonic", lambda: next(readings))


async def test_exact_by_the_next_call_under_every_kind_of_change(mongo_server_fn: MongoServer,
                                                                leaping_clock: None) -> None:
    server = mongo_server_fn
    await seeded(server, 31)
    wire, metrics = Aggregates(), HubMetrics()
    src = source_for(server, listeners=[wire], metrics=metrics, min_cell_size=2)
    await src.start()
    try:
        async with AsyncMongoClient(server.uri) as client:
            coll = client.get_default_database().appointments
            assert await all_windows_match(src, coll) == []
            # Hours fill in the background, one fill at a time: a 30d call made while the 7d fill ran
            # was answered by the full pipeline. One more 30d call after it starts the rest.
            await src.filled()
            await src.metrics_for("30d")
            await src.filled()
            assert src.mode == "change_stream" and len(src.store) == 30 * 24 - 1
            work = Workload(coll, seed=5)
            await work.load_ids()
            for i in range(4):
                await work.round(deletes=i % 2 == 1)
                assert await all_windows_match(src, coll) == [], f"round {i}"
            assert src.changes.events_total > 4 * 30 and src.changes.forced_total >= 4 and src.changes.resets_total == 0
            # Steady state: with nothing changed, a 30d call covers the partial and the open hour only.
            await src.metrics_for("30d")
            wire.matches.clear()
            got = await src.metrics_for("30d")
            now = parse_ts(got["timestamp"])
            assert len(wire.matches) <= 2 and sum(covered_hours(m, now) for m in wire.matches) <= 2.0
            # A review in a 20-day-old closed hour: only that hour is added to the next call's work.
            doc = await coll.find_one({"createdAt": {"$lt": dt.datetime.now(UTC) - dt.timedelta(days=20)}})
            await coll.update_one({"_id": doc["_id"]}, {"$set": {"review": {"rating": 1}}})
            wire.matches.clear()
            got = await src.metrics_for("30d")
            assert differences(got, await oracle(coll, src.cfg.fields, got, k=2)) == []
            now = parse_ts(got["timestamp"])
            assert len(wire.matches) <= 4 and sum(covered_hours(m, now) for m in wire.matches) <= 3.0
        text = metrics.registry.get_sample_value
        assert text("hub_business_buckets") == len(src.store)
        assert text("hub_business_dirty_hours_total") > 0
        assert text("hub_business_mode", {"mode": "change_stream"}) == 1
        assert text("hub_business_mode", {"mode": "reconcile"}) == 0
    finally:
        await src.close()


class Pipelines(monitoring.CommandListener):
    """Every metric aggregate pipeline the hub sends (not the change stream's)."""

    def __init__(self) -> None:
        self.sent: list[list[dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        stages = event.command.get("pipeline") or [{}] if event.command_name == "aggregate" else []
        if stages and "$changeStream" not in stages[0]:
            self.sent.append(stages)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_window_without_closed_hours_is_one_facet_alone(mongo_server_fn: MongoServer) -> None:
    server = mongo_server_fn
    await seeded(server, 53)
    wire = Pipelines()
    src = source_for(server, listeners=[wire])
    await src.start()
    try:
        async with AsyncMongoClient(server.uri) as client:
            coll = client.get_default_database().appointments
            await src.metrics_for("30d")  # cold: the full pipeline, and the hours filled in the background
            await asyncio.wait_for(src.filled(), timeout=10)
            # A review in a 20-day-old closed hour: an update, whose hour must be looked up.
            doc = await coll.find_one({"createdAt": {"$lt": dt.datetime.now(UTC) - dt.timedelta(days=20)}})
            await coll.update_one({"_id": doc["_id"]}, {"$set": {"review": {"rating": 1}}})
            wire.sent.clear()
            events = src.changes.events_total
            got = await src.metrics_for("1h")
            assert differences(got, await oracle(coll, src.cfg.fields, got)) == []
            # 1h has no closed hour: the full pipeline's one $facet; no per-hour $group, no drain, no lookup.
            assert [[next(iter(stage)) for stage in p] for p in wire.sent] == [["$match", "$facet"]]
            assert src.changes.events_total == events
            wire.sent.clear()
            got = await src.metrics_for("30d")  # the next call with closed hours drains and looks the hour up
            assert differences(got, await oracle(coll, src.cfg.fields, got)) == []
            assert src.changes.events_total == events + 1 and any("_id" in p[0]["$match"] for p in wire.sent)
            # An hour later only 1h is in use: the kept hours are dropped and the stream closed.
            src._used = {w: t - WINDOW_IDLE for w, t in src._used.items()}
            got = await src.metrics_for("1h")
            assert differences(got, await oracle(coll, src.cfg.fields, got)) == []
            assert len(src.store) == 0 and src.changes.feed.stream is None and src.changes.feed.token is None
            # A window with closed hours reopens it before computing any hour, as a new generation (a
            # computation started while it was closed never stores its hours).
            generation = src.store.generation
            got = await src.metrics_for("24h")
            assert differences(got, await oracle(coll, src.cfg.fields, got)) == []
            assert src.store.generation == generation + 1 and src.changes.feed.stream is not None
            await asyncio.wait_for(src.filled(), timeout=10)
            doc = await coll.find_one({"createdAt": {"$lt": dt.datetime.now(UTC) - dt.timedelta(hours=10)}})
            await coll.update_one({"_id": doc["_id"]}, {"$set": {"status": "cancelled"}})
            got = await src.metrics_for("24h")
            assert differences(got, await oracle(coll, src.cfg.fields, got)) == []
    finally:
        await src.close()


async def test_deletes_wait_at_most_one_reconcile_interval(mongo_server_fn: MongoServer) -> None:
    server = mongo_server_fn
    await seeded(server, 37)
    src = source_for(server, reconcile_interval=1.5)
    await src.start()
    try:
        async with AsyncMongoClient(server.uri) as client:
            coll = client.get_default_database().appointments
            assert await all_windows_match(src, coll) == []
            now = dt.datetime.now(UTC)
            old = {"createdAt": {"$lt": now - dt.timedelta(days=3), "$gt": now - dt.timedelta(days=29)}}
            await coll.delete_one(old)
            assert await all_windows_match(src, coll) == []  # the first delete: exact by the next call
            await coll.delete_one(old)  # the next one waits for the rate limit
            await wait_for(lambda: _matches(src, coll), timeout=1.5 + MARGIN, interval=0.1,
                           what="the second delete within reconcile_interval")
            assert src.changes.forced_total == 2
    finally:
        await src.close()


async def _matches(src: BusinessSource, coll: Any) -> bool:
    return await all_windows_match(src, coll) == []


async def test_exact_across_a_store_restart_mid_workload(mongo_server_fn: MongoServer, leaping_clock: None) -> None:
    server = mongo_server_fn
    await seeded(server, 41)
    # timeout 5 s (a 4.5 s driver deadline), not 1 s: on 2 busy cores the first answers (a full
    # pipeline beside the warm-up fill) took longer than 0.5 s, and exactness is what is tested here.
    src = source_for(server, timeout=5.0)
    await src.start()
    try:
        async with AsyncMongoClient(server.uri, serverSelectionTimeoutMS=10_000) as client:
            coll = client.get_default_database().appointments
            assert await all_windows_match(src, coll) == []
            work = Workload(coll, seed=9)
            await work.load_ids()
            await work.round(deletes=False)
            server.stop()  # the hub has not seen that round yet
            with pytest.raises(SourceError, match="MongoDB"):
                await src.metrics_for("24h")
            server.start()
            await work.round(deletes=False)

            async def back() -> bool:
                try:
                    return await all_windows_match(src, coll) == []
                except SourceError:
                    return False

            await wait_for(back, timeout=15, interval=0.2, what="exact answers after the restart")
            assert src.changes.resets_total == 0  # resumed with the token: nothing rebuilt
            await work.round(deletes=True)
            assert await all_windows_match(src, coll) == []
    finally:
        await src.close()


async def test_lost_resume_point_rebuilds(tmp_path: Path) -> None:
    server = MongoServer(tmp_path / "data", args=["--oplog-max-entries", "40"])
    server.start()
    try:
        await seeded(server, 43)
        src = source_for(server, timeout=5.0)  # not 1 s: see test_exact_across_a_store_restart_mid_workload
        await src.start()
        async with AsyncMongoClient(server.uri, serverSelectionTimeoutMS=10_000) as client:
            coll = client.get_default_database().appointments
            assert await all_windows_match(src, coll) == []
            server.stop()
            server.start()
            work = Workload(coll, seed=13)
            await work.load_ids()
            for _ in range(3):  # ~100 writes: the hub's resume point falls out of a 40-entry oplog
                await work.round(deletes=False)
            # SecantusDB trims its oplog lazily; its admin command does now what a busy mongod does by itself.
            assert (await client.admin.command("secantusAdmin.pruneOplog"))["pruned"] > 0
            assert await all_windows_match(src, coll) == []
            assert src.changes.resets_total == 1 and src.mode == "change_stream"
            await work.round(deletes=False)
            assert await all_windows_match(src, coll) == []
        await src.close()
    finally:
        server.kill()


async def test_a_stream_batch_slower_than_half_a_tick_is_drained_in_the_background(tmp_path: Path) -> None:
    # Found by `make run`: the hub started beside the demo's bulk seed, and one batch of that backlog took
    # SecantusDB longer than the drain's half of the tick. The drain then read nothing, so it had no
    # progress to keep, and the tick failed ("MongoDB query timed out"), again and again on the same
    # batch. Driven deterministically: a failpoint makes every getMore of the hub's client (appName
    # "hub") take 2 s, beyond the drain's 1 s; the test's own client is not slowed.
    server = MongoServer(tmp_path / "data", args=["--enable-test-commands"])
    server.start()
    await seeded(server, 61)
    src = source_for(server, timeout=5.0, time_range="24h")
    await src.start()
    try:
        await src.collect(5.0)
        await src.filled()
        async with AsyncMongoClient(server.uri) as client:
            coll = client.get_default_database()["appointments"]
            work = Workload(coll, seed=3)
            await work.load_ids()
            await work.round(deletes=False)
            events = src.changes.events_total
            await client.admin.command({"configureFailPoint": "failCommand", "mode": "alwaysOn", "data": {
                "failCommands": ["getMore"], "appName": "hub", "blockConnection": True, "blockTimeMS": 2000}})
            try:
                for _ in range(3):  # the fill (its own deadline) drains meanwhile, 2 s per batch
                    got = (await src.collect(2.5)).data["business"]  # driver deadline 2 s: 1 s to drain
                    assert differences(got, await oracle(coll, src.cfg.fields, got)) == []
            finally:
                await client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
            await src.filled()
            assert src.changes.events_total > events  # the backlog was read, not skipped
            got = (await src.collect(5.0)).data["business"]
            assert differences(got, await oracle(coll, src.cfg.fields, got)) == []
    finally:
        await src.close()
        server.kill()


async def test_no_call_queues_behind_another_holder_of_the_stream(mongo_server_fn: MongoServer) -> None:
    # Found by CI on a 2-core machine: MongoDB stopped while the background fill ran, and the next tick
    # took 118 s instead of its 1.5 s. The fill held the change stream's lock for its own 120 s deadline,
    # and the tick waited for that lock, which no pymongo.timeout bounds. Driven deterministically: the
    # test holds the lock (as the fill, or another window's drain, would) and every call must answer
    # within its deadline, exactly, from the full pipeline.
    server = mongo_server_fn
    await seeded(server, 71)
    timeout = 2.0
    fresh = source_for(server, timeout=timeout)
    src = source_for(server, timeout=timeout)
    await fresh.start()
    await src.start()
    try:
        await src.metrics_for("24h")
        await src.filled()
        async with AsyncMongoClient(server.uri) as client:
            coll = client.get_default_database()["appointments"]
            assert fresh.changes is not None and src.changes is not None
            async with fresh.changes.lock, src.changes.lock:
                # A first tick, before the mode is known (1h: no closed hour, the stream is only probed).
                got = (await asyncio.wait_for(fresh.collect(timeout), timeout + MARGIN)).data["business"]
                assert differences(got, await oracle(coll, fresh.cfg.fields, got)) == []
                for window in ("1h", "24h"):  # 24h: kept hours, whose stream must be drained first
                    got = await asyncio.wait_for(src.metrics_for(window), timeout + MARGIN)
                    assert differences(got, await oracle(coll, src.cfg.fields, got)) == []
            assert fresh.mode is None  # it did not drain behind the holder's back
            got = await src.metrics_for("24h")  # the holder is gone: hours again
            assert differences(got, await oracle(coll, src.cfg.fields, got)) == []
    finally:
        await fresh.close()
        await src.close()


# ----------------------------------------------------------------------------- without change streams


async def test_reconcile_mode_without_change_streams(tmp_path: Path) -> None:
    server = MongoServer(tmp_path / "data", args=["--standalone"])
    server.start()
    metrics = HubMetrics()
    try:
        await seeded(server, 47)
        interval = 2.0
        src = source_for(server, metrics=metrics, reconcile_interval=interval)
        await src.start()
        try:
            async with AsyncMongoClient(server.uri) as client:
                coll = client.get_default_database().appointments
                assert await all_windows_match(src, coll) == []
                assert src.mode == "reconcile" and "change streams" in src.mode_reason
                assert metrics.registry.get_sample_value("hub_business_mode", {"mode": "reconcile"}) == 1
                work = Workload(coll, seed=17)
                await work.load_ids()
                await work.round(deletes=True)
                await wait_for(lambda: _matches(src, coll), timeout=interval + MARGIN, interval=0.1,
                               what="every change within reconcile_interval")
        finally:
            await src.close()
        out = io.StringIO()
        cfg = build_config({"sources": {"business": {"mongodb_uri": server.uri, "timeout": 2}}}, environ={})
        await run_doctor(cfg, out=out)
        assert "change detection: reconcile (the server refuses change streams" in out.getvalue(), out.getvalue()
    finally:
        server.kill()


# ----------------------------------------------------------------------------- pure parts


def test_watch_pipeline_keeps_no_document_field() -> None:
    (stage,) = watch_pipeline(BusinessFields(created_at="meta.created"))
    kept = set(stage["$project"])
    assert kept == {"operationType", "documentKey._id", "fullDocument.meta.created", CREATED_TOUCHED}
    assert "meta" in json.dumps(stage)  # a $set of the parent also moves the created-at


def test_runs_and_store_bookkeeping() -> None:
    assert runs([5, 3, 4, 9, 9, 11, 10]) == [(3, 6), (9, 12)]
    store = BucketStore()
    store.begin([1, 2])
    assert store.needed(0, 4) == {0, 1, 2, 3}
    store.store([1, 2], {1: HourStats(total=3)}, started=10.0, generation=0)
    store.end([1, 2], ok=True)
    assert store.needed(0, 4) == {0, 3} and store.buckets[2].total == 0
    store.begin([2])
    store.end([2], ok=False)  # a failed recomputation leaves the hour dirty, not silently stale
    assert store.needed(0, 4) == {0, 2, 3}
    store.begin([2])
    store.store([2], {}, started=11.0, generation=0)
    store.end([2], ok=True)
    store.store([1], {1: HourStats(total=1)}, started=5.0, generation=0)  # an older query never wins
    assert store.buckets[1].total == 3
    store.mark([1])
    store.clear()
    store.store([1], {1: HourStats(total=7)}, started=20.0, generation=0)  # started before the rebuild
    assert 1 not in store.buckets
    assert specialty_key(1) == specialty_key(1.0) and specialty_key("1") != specialty_key(1)


async def test_a_backlog_bigger_than_a_tick_is_caught_up_and_every_answer_stays_exact(
        mongo_server_fn: MongoServer, caplog: pytest.LogCaptureFixture) -> None:
    # Found by the demo (1 s ticks): thousands of inserts right after the start (a bulk load, or a
    # long outage) were more than one tick's budget could drain, and every tick timed out on the same
    # events forever. Now each drain keeps what it read, the backlog is caught up in the background,
    # and the ticks meanwhile answer with the full pipeline, so every answer is still the oracle's.
    # With the createdAt index production has (hub doctor requires it): without it every query scans
    # the collection, and after the bulk load two scans no longer fit in a 0.3 s tick on 2 slow cores.
    server = mongo_server_fn
    now = dt.datetime.now(UTC)
    await seeded(server, 23)
    src = source_for(server, timeout=5.0, time_range="24h")
    await src.start()
    try:
        await src.collect(5.0)
        await src.filled()
        async with AsyncMongoClient(server.uri) as client:
            coll = client.get_default_database()["appointments"]
            bulk = [dict(d, _id=None) for d in make_docs(now, seed=29) * 6]
            for d in bulk:
                d.pop("_id")
            await coll.insert_many(bulk)
            caplog.set_level(logging.WARNING, "hub.sources.business.source")
            answers = 0
            for _ in range(60):
                try:
                    got = (await src.collect(0.3)).data["business"]
                except SourceError:
                    continue  # a tick may still time out while the backlog is read; it must not stay so
                answers += 1
                assert differences(got, await oracle(coll, src.cfg.fields, got)) == []
                if not src.changes.behind and (src._fill is None or src._fill.done()):
                    break
            assert answers > 0
            await src.filled()
            # The fill has its own deadline (max(120 s, 10 x timeout)). Started inside a tick's
            # pymongo.timeout, it inherited the tick's 0.27 s instead, and failed over and over.
            assert "filling hour buckets failed" not in caplog.text
            got = (await src.collect(5.0)).data["business"]
            assert differences(got, await oracle(coll, src.cfg.fields, got)) == []
            assert got["appointments"]["total"] > 0
    finally:
        await src.close()
