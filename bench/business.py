"""Benchmark: the hub's incremental business metrics (hour buckets + change stream) vs its full
one-pipeline answer vs the seed's five-query BusinessMetricsService.

Starts its own SecantusDB (a MongoDB-wire-protocol server, run as a child process) in a temp dir,
generates an appointments collection, and times the three approaches with the same driver
(PyMongo's AsyncMongoClient) for every window, after checking that they return identical results.

    python -m bench.business [--docs 300000] [--runs 5] [--no-index] [--full]

The seed's first run of each window and the full pipeline are checked for identical results over
the same pinned window, and every incremental answer against the full pipeline at its own
timestamp after the first and the last tick (exit status 1 if any differ). The incremental source runs in
steady state: before each timed tick a few writes land (new bookings, a cancellation and a review in closed
hours). Its ticks alternate with the seed's and the full pipeline's runs, so load from elsewhere hits all alike.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from pymongo import AsyncMongoClient

from hub.config import BusinessSourceConfig, build_config, secrets_of
from hub_demo.simulator import history
from hub.sources.business import WINDOWS, BusinessSource, build_pipeline, shape_result
from hub_demo.simulator import make_appointment
from tests.support.mongo import MongoServer

UTC = dt.timezone.utc


# --------------------------------------------------------------------------- the seed, faithfully


class SeedBusinessMetrics:
    """The seed's BusinessMetricsService (monitoring-guide.md) in Python: five queries under one gather,
    the booking-time and rating averages computed in the client from fetched documents."""

    def __init__(self, coll: Any) -> None:
        self.coll = coll

    async def get_appointment_metrics(self, time_range: str = "24h", *, now: dt.datetime | None = None
                                      ) -> dict[str, Any]:
        # `now` pins the window for the correctness check (a slow run would otherwise see it slide).
        start = (now or dt.datetime.now(UTC)) - WINDOWS.get(time_range, WINDOWS["24h"])
        metrics = await asyncio.gather(  # Promise.all
            self.get_appointment_count(start),
            self.get_appointments_by_specialty(start),
            self.get_cancellation_rate(start),
            self.get_average_booking_time(start),
            self.get_patient_satisfaction_score(start),
        )
        return {
            "timestamp": dt.datetime.now(UTC).isoformat(),
            "timeRange": time_range,
            "appointments": {
                "total": metrics[0],
                "bySpecialty": metrics[1],
                "cancellationRate": metrics[2],
                "averageBookingTime": metrics[3],
                "patientSatisfaction": metrics[4],
            },
        }

    async def get_appointment_count(self, start: dt.datetime) -> int:
        return await self.coll.count_documents({"createdAt": {"$gte": start}})

    async def get_appointments_by_specialty(self, start: dt.datetime) -> list[dict[str, Any]]:
        cursor = await self.coll.aggregate([
            {"$match": {"createdAt": {"$gte": start}}},
            {"$group": {"_id": "$doctor.specialty", "count": {"$sum": 1}}},
            {"$sort": {"count": -1}},
        ])
        return await cursor.to_list(None)

    async def get_cancellation_rate(self, start: dt.datetime) -> float:
        total = await self.coll.count_documents({"createdAt": {"$gte": start}})
        cancelled = await self.coll.count_documents({"createdAt": {"$gte": start}, "status": "cancelled"})
        return (cancelled / total) * 100 if total > 0 else 0

    async def get_average_booking_time(self, start: dt.datetime) -> float:
        # .find(...).select('createdAt bookingCompletedAt'): _id comes along, as with Mongoose.
        appointments = await self.coll.find(
            {"createdAt": {"$gte": start}, "bookingCompletedAt": {"$exists": True}},
            projection={"createdAt": 1, "bookingCompletedAt": 1},
        ).to_list(None)
        if not appointments:
            return 0
        total_ms = sum((a["bookingCompletedAt"] - a["createdAt"]) / dt.timedelta(milliseconds=1)
                       for a in appointments)
        return total_ms / len(appointments) / 1000

    async def get_patient_satisfaction_score(self, start: dt.datetime) -> float | None:
        reviews = await self.coll.find(
            {"createdAt": {"$gte": start}, "review.rating": {"$exists": True}},
            projection={"review.rating": 1},
        ).to_list(None)
        if not reviews:
            return None
        average = sum(r["review"]["rating"] for r in reviews) / len(reviews)
        return math.floor(average * 100 + 0.5) / 100  # Math.round(x * 100) / 100


# --------------------------------------------------------------------------- comparison


def normalized(result: dict[str, Any]) -> dict[str, Any]:
    """The parts both approaches must agree on; the seed groups a missing specialty under null
    and leaves count ties in server order, the hub names it "unknown" and breaks ties by _id."""
    a = result["appointments"]
    rows = [{"_id": "unknown" if r["_id"] is None else r["_id"], "count": r["count"]} for r in a["bySpecialty"]]
    rows.sort(key=lambda r: (-r["count"], r["_id"]))
    return {**a, "bySpecialty": rows}


def same(seed: dict[str, Any], hub: dict[str, Any]) -> list[str]:
    """Differences between the two results (empty when identical)."""
    s, h = normalized(seed), normalized(hub)
    diffs = []
    for key in ("total", "bySpecialty", "patientSatisfaction"):
        if s[key] != h[key]:
            diffs.append(f"{key}: seed {s[key]!r} != hub {h[key]!r}")
    for key in ("cancellationRate", "averageBookingTime"):
        if not math.isclose(s[key], h[key], rel_tol=1e-9, abs_tol=1e-9):
            diffs.append(f"{key}: seed {s[key]!r} != hub {h[key]!r}")
    return diffs


async def populate(uri: str, n: int, *, index: bool, seed: int) -> None:
    rng = random.Random(seed)
    docs = history(rng, now=dt.datetime.now(UTC), days=30, per_day=n / 30)
    async with AsyncMongoClient(uri) as client:
        coll = client.get_default_database().appointments
        await coll.drop()
        for i in range(0, len(docs), 5000):
            await coll.insert_many(docs[i:i + 5000], ordered=False)
        if index:
            await coll.create_index([("createdAt", 1)])


def runs_for(window: str, runs: int, *, full: bool = False) -> int:
    """Timed runs of the seed and the full pipeline per window. At 300k appointments one run of the seed's
    approach takes tens of seconds at 7d and 30d on a small machine, so those get one run unless `full`."""
    if full or window in ("1h", "24h"):
        return max(1, runs)
    return 1


class Meter:
    """Wall-clock time, database-server CPU time and this process's CPU time of one call."""

    def __init__(self, server_pid: int) -> None:
        self.server = psutil.Process(server_pid)

    def _server_cpu(self) -> float:
        t = self.server.cpu_times()
        return t.user + t.system

    async def __call__(self, fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float, float, float]:
        c0, s0, w0 = time.process_time(), self._server_cpu(), time.perf_counter()
        result = await fn(*args, **kwargs)
        return result, time.perf_counter() - w0, self._server_cpu() - s0, time.process_time() - c0


async def full_pipeline(coll: Any, window: str) -> dict[str, Any]:
    """The hub's full answer (the oracle): one $match + $facet over the whole window."""
    now = dt.datetime.now(UTC)
    docs = await (await coll.aggregate(build_pipeline(BusinessSourceConfig().fields, now - WINDOWS[window]))
                  ).to_list(None)
    return shape_result(docs[0] if docs else None, time_range=window, timestamp=now)


async def writes(coll: Any, rng: random.Random) -> None:
    """A tick's worth of changes: two new bookings, a cancellation and a review in closed hours."""
    now = dt.datetime.now(UTC)
    await coll.insert_many([make_appointment(rng, now, now=now) for _ in range(2)])
    for change in ({"status": "cancelled"}, {"review": {"rating": rng.randint(1, 5)}}):
        age = dt.timedelta(hours=rng.uniform(2, 29 * 24))
        await coll.update_one({"createdAt": {"$lt": now - age}}, {"$set": change})


async def oracle_diffs(coll: Any, got: dict[str, Any]) -> list[str]:
    """Differences between an incremental answer and the full pipeline at the same timestamp."""
    now = dt.datetime.strptime(got["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    docs = await (await coll.aggregate(build_pipeline(BusinessSourceConfig().fields, now - WINDOWS[got["timeRange"]]))
                  ).to_list(None)
    return same(shape_result(docs[0] if docs else None, time_range=got["timeRange"], timestamp=now), got)


async def warm_up(src: BusinessSource) -> float:
    """The first 30d call (answered by the full pipeline), then until the background fill is done;
    returns the seconds until the first answer."""
    t0 = time.perf_counter()
    await src.metrics_for("30d")
    first = time.perf_counter() - t0
    await src.filled()
    return first


async def bench(uri: str, *, server_pid: int, runs: int, full: bool) -> tuple[list[dict[str, Any]], dict[str, float]]:
    rows = []
    meter = Meter(server_pid)
    rng = random.Random(5)
    config = build_config({"sources": {"business": {"mongodb_uri": uri, "timeout": 600.0}}}, environ={})
    src = BusinessSource(config.sources.business, secrets=secrets_of(config))
    await src.start()
    async with AsyncMongoClient(uri, timeoutMS=600_000) as client:
        coll = client.get_default_database().appointments
        seed = SeedBusinessMetrics(coll)
        # Warm-up: the first call for the largest window answers with the full pipeline while every
        # closed hour is filled in the background by one aggregation grouped by hour (concurrently).
        first, warm_wall, warm_db, _ = await meter(warm_up, src)
        warm = {"wall": warm_wall, "db": warm_db, "buckets": len(src.store), "first": first}
        print(f"  warm-up (30d): first answer in {warm['first'] * 1000:.0f} ms, buckets filled in "
              f"{warm_wall * 1000:.0f} ms, {len(src.store)} hours kept", file=sys.stderr, flush=True)
        for window in WINDOWS:
            n = runs_for(window, runs, full=full)
            m: dict[str, list[tuple[float, float, float]]] = {"seed": [], "full": [], "incr": []}
            pinned = dt.datetime.now(UTC)
            diffs: list[str] = []
            ticks = max(n, runs)  # incremental ticks are cheap: always `runs` of them
            for i in range(ticks):  # alternate the approaches so load from elsewhere hits them alike
                if i < n:
                    seed_result, *cost = await meter(seed.get_appointment_metrics, window,
                                                     now=pinned if i == 0 else None)
                    m["seed"].append(tuple(cost))
                    if i == 0:  # the full pipeline over the same pinned window (untimed)
                        docs = await (await coll.aggregate(build_pipeline(src.cfg.fields, pinned - WINDOWS[window]))
                                      ).to_list(None)
                        diffs += same(seed_result, shape_result(docs[0] if docs else None, time_range=window,
                                                                timestamp=pinned))
                    _, *cost = await meter(full_pipeline, coll, window)
                    m["full"].append(tuple(cost))
                await writes(coll, rng)
                got, *cost = await meter(src.metrics_for, window)
                m["incr"].append(tuple(cost))
                if i in (0, ticks - 1):  # untimed (a full pipeline each): exact after the changes
                    diffs += await oracle_diffs(coll, got)
            med = {k: [statistics.median(c[j] for c in v) for j in range(3)] for k, v in m.items()}
            row = {"window": window, "docs": got["appointments"]["total"], "runs": n, "ticks": len(m["incr"]),
                   "identical": not diffs, "diffs": diffs, **{f"{k}_wall": v[0] for k, v in med.items()},
                   **{f"{k}_db": v[1] for k, v in med.items()}}
            rows.append(row)
            print(f"  {window}: wall seed {row['seed_wall'] * 1000:.1f} / full {row['full_wall'] * 1000:.1f} / "
                  f"incremental {row['incr_wall'] * 1000:.1f} ms; full/incremental "
                  f"{_ratio(row['full_wall'], row['incr_wall'])}; identical={not diffs}", file=sys.stderr, flush=True)
    await src.close()
    return rows, warm


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0 else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=300_000, help="appointments to generate over 30 days")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per window (median reported)")
    ap.add_argument("--no-index", action="store_true", help="do not create the {createdAt: 1} index")
    ap.add_argument("--full", action="store_true", help="--runs runs for 7d and 30d too (takes much longer)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="hub-bench-business-") as tmp:
        server = MongoServer(Path(tmp) / "data")
        server.start()
        try:
            t0 = time.perf_counter()
            asyncio.run(populate(server.uri, args.docs, index=not args.no_index, seed=args.seed))
            print(f"generated ~{args.docs} appointments in {time.perf_counter() - t0:.1f} s "
                  f"(index on createdAt: {'no' if args.no_index else 'yes'})", file=sys.stderr)
            assert server.pid is not None
            rows, warm = asyncio.run(bench(server.uri, server_pid=server.pid, runs=args.runs, full=args.full))
        finally:
            server.kill()

    print(f"\n{args.docs} generated appointments over 30 days in SecantusDB (child process, same machine), "
          f"PyMongo AsyncMongoClient, Python {platform.python_version()}, index on createdAt: "
          f"{'no' if args.no_index else 'yes'}; median of the runs shown\n")
    print(f"Warm-up of the incremental source: the first 30d call answers with the full pipeline in "
          f"{warm['first'] * 1000:.0f} ms while one aggregation grouped by hour fills the buckets in the "
          f"background; filled after {warm['wall'] * 1000:.0f} ms wall, {warm['db'] * 1000:.0f} ms DB CPU, "
          f"{warm['buckets']:.0f} hours kept.\n")
    print("Per tick, steady state. Wall: median time of one call. DB CPU: CPU time the database server spent on "
          "it. Incremental ticks follow a few writes each (2 bookings, a cancellation and a review in closed "
          "hours) and include draining the change stream, except at 1h: a window without a closed hour is "
          "answered by the full pipeline alone, and its changes are drained by the next call with closed hours.\n")
    print("| window | appointments | runs (seed, full / incr.) | seed 5 queries | full pipeline | incremental "
          "| **full / incremental** | DB CPU: seed / full / incr. | identical |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['window']} | {r['docs']} | {r['runs']} / {r['ticks']} | {r['seed_wall'] * 1000:.1f} ms "
              f"| {r['full_wall'] * 1000:.1f} ms | {r['incr_wall'] * 1000:.1f} ms "
              f"| **{_ratio(r['full_wall'], r['incr_wall'])}** "
              f"| {r['seed_db'] * 1000:.0f} / {r['full_db'] * 1000:.0f} / {r['incr_db'] * 1000:.0f} ms "
              f"| {'yes' if r['identical'] else 'NO'} |")
    bad = [r for r in rows if not r["identical"]]
    for r in bad:
        print(f"DIFFERENT at {r['window']}: {'; '.join(r['diffs'][:5])}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
