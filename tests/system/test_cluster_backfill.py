"""Backfill in cluster mode, with a real redis-server (fresh) and a real Prometheus that scraped itself.

The collector of the fresh stream fills it from Prometheus once; a client of the replica that does not
collect, and of an edge that joins later, gets the backfilled points before the live ones. A fail-over
keeps the stream and does not backfill again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from hub.app import create_app
from hub.cluster_backfill import backfill_keys
from hub.context import HUB
from tests.support.aio import recv_json, wait_for
from tests.support.prom import PrometheusServer, prometheus_server  # noqa: F401
from tests.support.redis import RedisServer, redis_server  # noqa: F401
from tests.system.test_backfill import scraped_for

INTERVAL = 0.5
HISTORY = 40


def config(make_config: Callable[..., Any], redis: RedisServer, prom: PrometheusServer) -> Any:
    return make_config({"cluster": {"redis_url": redis.url},
                        "broadcast": {"interval": INTERVAL, "history_size": HISTORY},
                        "sources": {"prometheus": {"enabled": True, "url": prom.url, "alerts": False,
                                                   "slo_queries": {}, "queries": {"clock": "vector(time())"}}}})


async def points_of(client: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The `points` message's items and the `metrics_update` after it."""
    async with client.ws_connect(f"/ws?points={HISTORY}") as ws:
        points = await recv_json(ws)
        latest = await recv_json(ws)
    assert points["type"] == "points" and latest["type"] == "metrics_update"
    return points["items"], latest


def check_points(items: list[dict[str, Any]], latest: dict[str, Any]) -> int:
    """Backfilled points (no seq, `"backfill": true`) first, older than the live ones; returns how many."""
    filled = [p for p in items if "seq" not in p]
    live = items[len(filled):]
    assert filled and all(p["backfill"] is True for p in filled), items
    assert all("backfill" not in p for p in live)
    seqs = [p["seq"] for p in live]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and seqs[-1] == latest["seq"]
    stamps = [p["timestamp"] for p in filled]
    assert stamps == sorted(set(stamps)) and stamps[-1] < live[0]["timestamp"]
    return len(filled)


async def test_a_fresh_stream_is_backfilled_once_and_every_replica_serves_it(
        redis_server: RedisServer, prometheus_server: PrometheusServer,  # noqa: F811
        aiohttp_client: Any, make_config: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="hub.backfill")
    prom = prometheus_server
    await wait_for(lambda: scraped_for(prom, 5), timeout=30, what="5 s of scrapes")
    cfg = config(make_config, redis_server, prom)
    a = await aiohttp_client(create_app(cfg))
    b = await aiohttp_client(create_app(cfg))
    hubs = [a.app[HUB], b.app[HUB]]
    leader = await wait_for(lambda: next((h for h in hubs if h.publisher.leader), None), timeout=20,
                            what="a collector")
    follower = next(h for h in hubs if h is not leader)
    other = a if follower is hubs[0] else b
    await wait_for(lambda: follower.feed.backfill and follower.feed.seq >= 2, timeout=30,
                   what="the backfill on the replica that does not collect")

    items, latest = await points_of(other)
    n = check_points(items, latest)
    assert HISTORY - 2 <= len(items) <= HISTORY   # the backfill fills what the live points leave
    assert latest["epoch"] == leader.feed.epoch
    # history: the same backfilled snapshots first, each evaluated at its own time, no seq.
    async with other.ws_connect(f"/ws?history={HISTORY}") as ws:
        hist = (await recv_json(ws))["items"]
    filled = [i for i in hist if "seq" not in i]
    # The same backfilled snapshots as the points, less those a tick evicted between the two requests
    # (the feed is full: each live snapshot pushes out the oldest backfilled one; CI saw one go).
    hist_ts, point_ts = [i["timestamp"] for i in filled], [p["timestamp"] for p in items[:n]]
    assert hist_ts and hist_ts == point_ts[len(point_ts) - len(hist_ts):], (hist_ts, point_ts)
    assert len(point_ts) - len(hist_ts) <= 4
    for item in filled:
        (clock,) = item["data"]["system"]["clock"]
        assert item["backfill"] is True and abs(float(clock["value"][1]) - clock["value"][0]) < 1e-3
        assert item["epoch"] == latest["epoch"] and item["sources"] == {}
    # The live seq was not moved: it starts at 1 in this epoch, contiguous.
    assert [i["seq"] for i in hist[len(filled):]] == list(range(1, len(hist) - len(filled) + 1))

    # An edge joining later serves it too.
    edge = await aiohttp_client(create_app(cfg, role="edge"))
    est = edge.app[HUB]
    await wait_for(lambda: est.feed.backfill, timeout=20, what="the backfill on an edge")
    check_points(*await points_of(edge))

    # A fail-over keeps the stream: the new collector does not backfill again.
    r = Redis.from_url(redis_server.url)
    try:
        claim = await r.get(backfill_keys("hub", leader.feed.epoch)[1])
        assert claim == leader.publisher.replica.encode()
        await (a if leader is hubs[0] else b).close()
        await wait_for(lambda: follower.publisher.leader, timeout=20, what="the fail-over")
        seq = follower.feed.seq
        await wait_for(lambda: follower.feed.seq >= seq + 2, timeout=20, what="two ticks of the new collector")
        assert await r.get(backfill_keys("hub", follower.feed.epoch)[1]) == claim
    finally:
        await r.aclose()
    fills = [rec.getMessage() for rec in caplog.records if "filling it from Prometheus" in rec.getMessage()]
    assert fills == [f"backfill: the snapshot stream is new; filling it from Prometheus (epoch {leader.feed.epoch})"]
    assert follower.feed.epoch == latest["epoch"] and follower.feed.backfill
