"""Benchmark: the hub's one-pipeline business metrics vs the seed's five-query BusinessMetricsService.

Starts its own SecantusDB (a MongoDB-wire-protocol server, run as a child process) in a temp dir,
generates an appointments collection, and times both approaches with the same driver
(PyMongo's AsyncMongoClient) for every window, after checking that they return identical results.

    python -m bench.business [--docs 100000] [--runs 7] [--no-index] [--full]

The seed's first run of each window and the hub's pipeline are checked for identical results over
the same pinned window (exit status 1 if not).
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

from hub.config import BusinessSourceConfig
from hub_demo.simulator import history
from hub.sources.business import WINDOWS, BusinessSource, build_pipeline, shape_result
from tests.services.mongo import MongoServer

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
    """Timed runs per window. At 100k appointments one run of the seed's approach takes ~10 s at 7d and
    ~40 s at 30d on a small machine, so those get fewer runs unless `full`."""
    if full or window in ("1h", "24h"):
        return max(1, runs)
    return max(1, min(runs, 5)) if window == "7d" else 1


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


async def bench(uri: str, *, server_pid: int, runs: int, full: bool) -> list[dict[str, Any]]:
    rows = []
    meter = Meter(server_pid)
    src = BusinessSource(BusinessSourceConfig(mongodb_uri=uri, timeout=600.0), cache_ttl=0.0)
    await src.start()
    async with AsyncMongoClient(uri, timeoutMS=600_000) as client:
        coll = client.get_default_database().appointments
        seed = SeedBusinessMetrics(coll)
        for window in WINDOWS:
            n = runs_for(window, runs, full=full)
            m: dict[str, list[tuple[float, float, float]]] = {"seed": [], "hub": []}
            pinned = dt.datetime.now(UTC)
            hub_result: dict[str, Any] = {}
            diffs: list[str] = []
            # Alternate the two so load from elsewhere on the machine hits both alike.
            for i in range(n):
                seed_result, *cost = await meter(seed.get_appointment_metrics, window,
                                                 now=pinned if i == 0 else None)
                m["seed"].append(tuple(cost))
                if i == 0:  # the hub's exact pipeline over the same pinned window (untimed)
                    docs = await (await coll.aggregate(build_pipeline(src.cfg.fields, pinned - WINDOWS[window]))
                                  ).to_list(None)
                    check = shape_result(docs[0] if docs else None, time_range=window, timestamp=pinned)
                    diffs = same(seed_result, check)
                hub_result, *cost = await meter(src.metrics_for, window)
                m["hub"].append(tuple(cost))
            med = {k: [statistics.median(c[j] for c in v) for j in range(3)] for k, v in m.items()}
            row = {"window": window, "docs": hub_result["appointments"]["total"], "runs": n,
                   "identical": not diffs, "diffs": diffs,
                   "seed": med["seed"][0], "hub": med["hub"][0],
                   "seed_db": med["seed"][1], "hub_db": med["hub"][1],
                   "seed_client": med["seed"][2], "hub_client": med["hub"][2]}
            rows.append(row)
            print(f"  {window}: wall seed {row['seed'] * 1000:.1f} ms / hub {row['hub'] * 1000:.1f} ms = "
                  f"{row['seed'] / row['hub']:.1f}x; server CPU {row['seed_db'] * 1000:.0f} / "
                  f"{row['hub_db'] * 1000:.0f} ms; identical={not diffs} ({n} runs)", file=sys.stderr, flush=True)
    await src.close()
    return rows


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0 else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100_000, help="appointments to generate over 30 days")
    ap.add_argument("--runs", type=int, default=7, help="timed runs per window (median reported)")
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
            rows = asyncio.run(bench(server.uri, server_pid=server.pid, runs=args.runs, full=args.full))
        finally:
            server.kill()

    print(f"\n{args.docs} generated appointments over 30 days in SecantusDB (child process, same machine), "
          f"PyMongo AsyncMongoClient, Python {platform.python_version()}, index on createdAt: "
          f"{'no' if args.no_index else 'yes'}; median of the runs shown, the two approaches alternating\n")
    print("Wall: median time of one call. DB CPU: CPU time the database server spent on it (less "
          "sensitive to other load on the machine). Client CPU: this process (driver + the seed's averaging).\n")
    print("| window | appointments in window | runs | wall: seed 5 queries | wall: hub 1 pipeline | wall speed-up "
          "| DB CPU: seed | DB CPU: hub | DB CPU ratio | client CPU: seed / hub | identical |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['window']} | {r['docs']} | {r['runs']} | {r['seed'] * 1000:.1f} ms | {r['hub'] * 1000:.1f} ms "
              f"| {_ratio(r['seed'], r['hub'])} | {r['seed_db'] * 1000:.0f} ms | {r['hub_db'] * 1000:.0f} ms "
              f"| {_ratio(r['seed_db'], r['hub_db'])} | {r['seed_client'] * 1000:.0f} / {r['hub_client'] * 1000:.0f} ms "
              f"| {'yes' if r['identical'] else 'NO'} |")
    bad = [r for r in rows if not r["identical"]]
    for r in bad:
        print(f"DIFFERENT at {r['window']}: {'; '.join(r['diffs'])}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
