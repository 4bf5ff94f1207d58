"""Booking anomalies end to end on a real SecantusDB seeded with 4 weeks of hourly-seasonal bookings
(busy weekday mornings, quiet nights); time is driven by the source's clock, minute by minute."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo import MongoClient

from hub.notify import Notification
from hub.sources.business import BusinessSource
from hub.state import MemoryStore
from tests.support.components import make_business_source
from tests.support.mongo import MongoServer, mongo_server  # noqa: F401

UTC = dt.UTC
BUSY = range(9, 12)  # weekday hours with 60 bookings (one a minute); every other hour has one


def seasonal_docs(t0: dt.datetime, *, half_last_hour: bool = False) -> list[dict[str, Any]]:
    """Bookings of the 4 weeks before `t0` (an hour start); with `half_last_hour`, the last hour has half
    its usual bookings."""
    docs = []
    for h in range(28 * 24, 0, -1):
        start = t0 - dt.timedelta(hours=h)
        busy = start.weekday() < 5 and start.hour in BUSY
        minutes = range(60) if busy else [30]
        if busy and half_last_hour and h == 1:
            minutes = range(0, 60, 2)
        docs += [{"createdAt": start + dt.timedelta(minutes=m, seconds=30), "status": "booked",
                  "doctor": {"specialty": "Cardiology"}, "patient": {"name": "Planted Patient"}} for m in minutes]
    return docs


def seed(server: MongoServer, collection: str, docs: list[dict[str, Any]]) -> None:
    with MongoClient(server.uri, serverSelectionTimeoutMS=10_000) as client:
        coll = client.get_default_database()[collection]
        coll.create_index([("createdAt", 1)])
        coll.insert_many(docs)


class Clock:
    """The source's wall clock, moved by the test."""

    def __init__(self, t: dt.datetime) -> None:
        self.t = t

    def __call__(self) -> dt.datetime:
        return self.t


class Recorder:
    """Stands in for the Notifier (its channels have their own tests): records what the source hands it."""

    repeat_interval = 0.0

    def __init__(self) -> None:
        self.sent: list[Notification] = []

    def notify(self, n: Notification) -> None:
        self.sent.append(n)


async def started(server: MongoServer, collection: str, clock: Clock, notifier: Recorder,
                  store: MemoryStore | None = None) -> BusinessSource:
    src = make_business_source(server.uri, collection=collection, clock=clock, notifier=notifier,
                               store=store or MemoryStore(), timeout=10)
    await src.start()
    await src.collect(10)  # warm-up: the 30 days of hour buckets fill in the background
    await src.filled()
    return src


async def tick(src: BusinessSource) -> dict[str, Any]:
    return (await src.collect(10)).data["business"]


async def test_a_30_minute_stop_in_a_busy_hour_turns_silent_once_and_recovers_once(mongo_server: MongoServer) -> None:
    t0 = dt.datetime(2024, 3, 5, 10, 0, tzinfo=UTC)  # a Tuesday, 10:00: 60 bookings an hour
    seed(mongo_server, "busy", seasonal_docs(t0))
    clock, sent = Clock(t0), Recorder()
    src = await started(mongo_server, "busy", clock, sent)
    try:
        states = {}
        for m in range(0, 31):
            clock.t = t0 + dt.timedelta(minutes=m)
            b = await tick(src)
            states[m] = b["anomaly"]["state"]
            if m == 0:
                assert b["expected"] == {"hour": 60.0, "observed": 0, "elapsed": 0.0, "weeks": 4}
                assert b["anomaly"]["observed"] == 60 and b["anomaly"]["minutes_since_last_booking"] == 0.5
        # Improbable from 10:06:25 (6.9 bookings expected since 09:59:30): silent at the next tick, 10:07.
        assert all(states[m] == "ok" for m in range(0, 7)) and all(states[m] == "silent" for m in range(7, 31))
        assert b["anomaly"]["since"] == "2024-03-05T10:07:00.000Z"
        assert b["anomaly"]["minutes_since_last_booking"] == 30.5
        assert b["expected"] == {"hour": 60.0, "observed": 0, "elapsed": 0.5, "weeks": 4}
        assert [n.kind for n in sent.sent] == ["anomaly"]
        assert sent.sent[0].severity == "critical" and sent.sent[0].group == "business"
        assert sent.sent[0].text == (
            "Bookings silent: no booking for 8 min, improbable at this hour (hour 2024-03-05 10:00-11:00 UTC: "
            "about 60 bookings expected, 0 so far; 53 in the last 60 min; last booking: 8 min ago)")
        # Bookings resume (a catch-up burst), seen through the change stream's inserts.
        with MongoClient(mongo_server.uri) as client:
            client.get_default_database().busy.insert_many(
                [{"createdAt": t0 + dt.timedelta(minutes=30, seconds=i), "status": "booked"} for i in range(25)])
        clock.t = t0 + dt.timedelta(minutes=31)
        b = await tick(src)
        assert b["anomaly"]["state"] == "ok" and b["anomaly"]["observed"] == 29 + 25
        assert b["anomaly"]["minutes_since_last_booking"] == 0.6
        assert b["expected"]["observed"] == 25
        clock.t = t0 + dt.timedelta(minutes=32)
        await tick(src)
        assert [n.kind for n in sent.sent] == ["anomaly", "recovered"]
        assert sent.sent[1].text.startswith("Bookings back to normal after 24 min (hour 2024-03-05 10:00-11:00 UTC")
    finally:
        await src.close()


async def test_the_same_stop_at_3_on_a_quiet_night_does_not_alert(mongo_server: MongoServer) -> None:
    t0 = dt.datetime(2024, 3, 6, 3, 0, tzinfo=UTC)  # Wednesday 03:00: one booking an hour
    seed(mongo_server, "night", seasonal_docs(t0))
    clock, sent = Clock(t0), Recorder()
    src = await started(mongo_server, "night", clock, sent)
    try:
        for m in range(0, 31):
            clock.t = t0 + dt.timedelta(minutes=m)
            b = await tick(src)
            assert b["anomaly"]["state"] == "ok", (m, b["anomaly"])
        assert b["expected"] == {"hour": 1.0, "observed": 0, "elapsed": 0.5, "weeks": 4}
        assert b["anomaly"]["minutes_since_last_booking"] == 59.5  # 02:30:30 to 03:30
        assert sent.sent == []
    finally:
        await src.close()


async def test_a_50_percent_drop_over_an_hour_is_low(mongo_server: MongoServer) -> None:
    t0 = dt.datetime(2024, 3, 5, 11, 0, tzinfo=UTC)  # Tuesday 11:00, after half the usual 10:00-11:00
    seed(mongo_server, "drop", seasonal_docs(t0, half_last_hour=True))
    clock, sent = Clock(t0), Recorder()
    src = await started(mongo_server, "drop", clock, sent)
    try:
        b = await tick(src)
        assert b["anomaly"]["state"] == "low" and b["anomaly"]["observed"] == 30 and b["anomaly"]["expected"] == 60
        assert b["anomaly"]["minutes_since_last_booking"] == 1.5
        assert [(n.kind, n.severity) for n in sent.sent] == [("anomaly", "warning")]
        assert sent.sent[0].text.startswith("Bookings low: 30 in the last 60 min where about 60 were expected")
    finally:
        await src.close()
