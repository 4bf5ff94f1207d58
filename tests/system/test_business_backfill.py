"""The bookings chart's series (booked in the window; the hour against its expectation) in the start-up
backfill, from a real SecantusDB's bookings.

Bookings over the last two hours (the backfill's span: 120 steps of 60 s) and in the same hours of the
four weeks before; each backfilled item's `data.business.expected` and its point are checked against a
count of those bookings done here: bookings of the item's hour up to its time, the median of the same
weekday and hour over the weeks, and the hour's fraction passed.
"""

from __future__ import annotations

import datetime as dt
import statistics
from typing import Any

from hub.app import create_app
from hub.context import HUB
from tests.support.aio import recv_json, wait_for
from tests.support.mongo import MongoServer, mongo_server_fn  # noqa: F401
from tests.support.prom import PrometheusServer, prometheus_server  # noqa: F401

UTC = dt.UTC
INTERVAL = 60.0
HISTORY = 120
WEEK = dt.timedelta(days=7)
HOUR = dt.timedelta(hours=1)


def ms(t: dt.datetime) -> dt.datetime:
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def hour_start(t: dt.datetime) -> dt.datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def booking(t: dt.datetime) -> dict[str, Any]:
    return {"createdAt": ms(t), "status": "booked", "doctor": {"specialty": "cardiology"}}


def parse(ts: str) -> dt.datetime:
    return dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


async def test_backfilled_items_carry_the_hourly_series_from_the_buckets(
        mongo_server_fn: MongoServer, prometheus_server: PrometheusServer,  # noqa: F811
        aiohttp_client: Any, make_config: Any) -> None:
    now = dt.datetime.now(UTC)
    # The last two hours: one booking every 7 minutes (some in each hour the backfill spans).
    recent = [now - dt.timedelta(minutes=m, seconds=13) for m in range(0, 125, 7)]
    # The same hours 1 to 4 weeks back, a different count per week and hour: their median is the expectation.
    past: list[dt.datetime] = []
    hours = [hour_start(now) - dt.timedelta(hours=i) for i in range(3)]
    for k in range(1, 5):
        for i, h in enumerate(hours):
            past += [h - k * WEEK + dt.timedelta(minutes=5 + j) for j in range(k + 2 * i)]
    mongo_server_fn.insert([booking(t) for t in recent + past])

    cfg = make_config({"broadcast": {"interval": INTERVAL, "history_size": HISTORY},
                       "sources": {"prometheus": {"enabled": True, "url": prometheus_server.url, "alerts": False,
                                                  "slo_queries": {}, "queries": {"clock": "vector(time())"}},
                                   "business": {"enabled": True, "mongodb_uri": mongo_server_fn.uri,
                                                "timeout": 5.0}}})
    client = await aiohttp_client(create_app(cfg))
    st = client.app[HUB]
    await wait_for(lambda: st.feed.backfill and st.feed.seq >= 1, timeout=40, what="the backfill and a tick")

    async with client.ws_connect(f"/ws?history={HISTORY}") as ws:
        items = (await recv_json(ws))["items"]
    filled = [i for i in items if "seq" not in i]
    assert len(filled) >= HISTORY - 2, len(filled)
    async with client.ws_connect(f"/ws?points={HISTORY}") as ws:
        points = (await recv_json(ws))["items"][:len(filled)]
    hours_seen = set()
    for item, point in zip(filled, points, strict=True):
        t = parse(item["timestamp"])
        hours_seen.add(hour_start(t))
        # Merged into the same snapshots as Prometheus's answers at that time.
        assert item["data"]["system"]["clock"][0]["value"][0] == t.timestamp()
        weeks = [sum(hour_start(t) - k * WEEK <= p < hour_start(t) - k * WEEK + dt.timedelta(hours=1)
                     for p in past) for k in range(1, 5)]
        hour = float(statistics.median(weeks))
        observed = sum(hour_start(t) <= ms(r) <= t for r in recent)
        elapsed = (t - hour_start(t)) / dt.timedelta(hours=1)
        booked = sum(t - HOUR < ms(b) <= t for b in recent + past)   # time_range "1h"
        assert item["data"]["business"] == {"appointments": {"total": booked},
                                            "expected": {"hour": hour, "observed": observed,
                                                         "elapsed": round(elapsed, 4), "weeks": 4}}, item
        assert point["timestamp"] == item["timestamp"] and point["backfill"] is True
        assert (point["hour_observed"], point["hour_expected"], point["appts"]) == (
            observed, round(hour * round(elapsed, 4), 3), booked)
    assert len(hours_seen) >= 2   # the span crosses an hour: each hour has its own count and expectation
    assert any(i["data"]["business"]["expected"]["observed"] > 0 for i in filled)
    assert len({i["data"]["business"]["appointments"]["total"] for i in filled}) > 2   # the window moves


async def test_without_the_detectors_the_booked_line_is_backfilled_alone(
        mongo_server_fn: MongoServer, prometheus_server: PrometheusServer,  # noqa: F811
        aiohttp_client: Any, make_config: Any) -> None:
    now = dt.datetime.now(UTC)
    created = [now - dt.timedelta(minutes=m, seconds=29) for m in range(0, 130, 3)]
    mongo_server_fn.insert([booking(t) for t in created])
    cfg = make_config({"broadcast": {"interval": INTERVAL, "history_size": HISTORY},
                       "sources": {"prometheus": {"enabled": True, "url": prometheus_server.url, "alerts": False,
                                                  "slo_queries": {}, "queries": {"clock": "vector(time())"}},
                                   "business": {"enabled": True, "mongodb_uri": mongo_server_fn.uri,
                                                "timeout": 5.0, "anomaly": {"enabled": False}}}})
    client = await aiohttp_client(create_app(cfg))
    st = client.app[HUB]
    await wait_for(lambda: st.feed.backfill and st.feed.seq >= 1, timeout=40, what="the backfill and a tick")
    async with client.ws_connect(f"/ws?points={HISTORY}") as ws:
        points = [p for p in (await recv_json(ws))["items"] if p.get("backfill")]
    assert len(points) >= HISTORY - 2, len(points)
    for point in points:
        t = parse(point["timestamp"])
        assert (point["appts"], point["hour_observed"], point["hour_expected"]) == (
            sum(t - HOUR < ms(b) <= t for b in created), None, None), point
    assert len({p["appts"] for p in points}) > 2
