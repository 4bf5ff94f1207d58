"""Backfill on start against a real Prometheus that has been scraping itself for a while.

`vector(time())` has a value at every evaluation time, so each backfilled item can be checked
against the time it claims; Prometheus's own process series stand in for the hub's (`self_job`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from hub.app import create_app
from hub.context import HUB
from hub.vocab import utc_iso
from tests.support.aio import recv_json, wait_for
from tests.support.prom import PrometheusServer, prometheus_server  # noqa: F401

INTERVAL = 0.5
HISTORY = 60
MAX_SERIES = 2


async def scraped_for(prom: PrometheusServer, seconds: int) -> bool:
    got = await asyncio.to_thread(prom.api, "query", query=f'count_over_time(up{{job="prometheus"}}[{seconds}s])')
    return bool(got["result"]) and float(got["result"][0]["value"][1]) >= seconds - 1


async def test_history_starts_with_prometheus_past_before_contiguous_live_seqs(
        aiohttp_client, make_config, prometheus_server: PrometheusServer):  # noqa: F811
    prom = prometheus_server
    await wait_for(lambda: scraped_for(prom, 5), timeout=30, what="5 s of scrapes")
    many = await asyncio.to_thread(prom.api, "query", query="prometheus_http_requests_total")
    assert len(many["result"]) > MAX_SERIES  # so the series bound is exercised
    cfg = make_config({"broadcast": {"interval": INTERVAL, "history_size": HISTORY},
                       "sources": {"prometheus": {
                           "enabled": True, "url": prom.url, "alerts": False, "max_series": MAX_SERIES,
                           "self_job": "prometheus",
                           "queries": {"clock": "vector(time())", "requestRate": "prometheus_http_requests_total"}},
                           "process": {"enabled": True}}})
    client = await aiohttp_client(create_app(cfg))
    st = client.app[HUB]
    await wait_for(lambda: st.feed.backfill and st.feed.seq >= 2, timeout=20, what="backfill and two ticks")

    async with client.ws_connect(f"/ws?history={HISTORY}") as ws:
        items = (await recv_json(ws))["items"]
    filled = [i for i in items if "seq" not in i]
    lives = items[len(filled):]
    assert filled and all(i["backfill"] is True and i["point"]["backfill"] is True for i in filled)
    assert all("backfill" not in i and "seq" in i for i in lives)
    # Live seq contiguous from 1; the backfill is older than the first live one, in order.
    assert [i["seq"] for i in lives] == list(range(1, len(lives) + 1))
    stamps = [i["timestamp"] for i in filled]
    assert stamps == sorted(set(stamps)) and stamps[-1] < lives[0]["timestamp"]
    assert len(items) <= HISTORY and len(filled) >= HISTORY - len(lives) - 2
    for item in filled:
        (clock,) = item["data"]["system"]["clock"]
        t, value = clock["value"]
        assert abs(float(value) - t) < 1e-3 and utc_iso(t) == item["timestamp"]  # evaluated at its own time
        assert len(item["data"]["system"]["requestRate"]) <= MAX_SERIES
        assert item["data"]["business"] is None and item["sources"] == {}
    # The hub's own series (here Prometheus's, through self_job) where Prometheus has them.
    own = [i for i in filled if i["data"]["application"]]
    assert own, "no backfilled item has the own process series"
    sample = own[-1]
    t = sample["data"]["system"]["clock"][0]["value"][0]
    expected = await asyncio.to_thread(prom.api, "query", query='max(process_resident_memory_bytes{job="prometheus"})',
                                       time=f"{t:.3f}")
    rss = int(float(expected["result"][0]["value"][1]))
    assert sample["data"]["application"]["memoryUsage"] == {"rss": rss} and sample["point"]["rss"] == rss

    # REST history: the same backfilled items, first.
    rest = (await (await client.get("/api/metrics/history")).json())["items"]
    assert rest[:len(filled)] == filled and "seq" in rest[len(filled)] and rest[len(filled)]["seq"] == 1

    # points: the backfilled points first (no seq), then the live ones from 1.
    async with client.ws_connect(f"/ws?points={HISTORY}") as ws:
        points = await recv_json(ws)
        latest = await recv_json(ws)
    pts = points["items"]
    assert [p.get("seq") for p in pts[:len(filled)]] == [None] * len(filled)
    assert [p["timestamp"] for p in pts[:len(filled)]] == stamps
    live_seqs = [p["seq"] for p in pts[len(filled):]]
    assert live_seqs == list(range(1, len(live_seqs) + 1)) and points["seq"] == live_seqs[-1]
    assert latest["type"] == "metrics_update" and latest["seq"] == points["seq"] and "backfill" not in latest
    assert points["epoch"] == latest["epoch"] == lives[0]["epoch"] == filled[0]["epoch"]


async def test_a_prometheus_that_refuses_every_range_leaves_history_live_only(
        aiohttp_client, make_config, prometheus_server: PrometheusServer, caplog: Any):  # noqa: F811
    prom = prometheus_server
    caplog.set_level("INFO", logger="hub.backfill")
    await wait_for(lambda: scraped_for(prom, 3), timeout=30, what="3 s of scrapes")
    # Every answer over max_response_bytes (the same bound as live data): nothing is backfilled.
    cfg = make_config({"broadcast": {"interval": INTERVAL, "history_size": HISTORY},
                       "sources": {"prometheus": {"enabled": True, "url": prom.url, "alerts": False,
                                                  "max_response_bytes": 1024,
                                                  "queries": {"big": '{__name__=~"prometheus_.+"}'}}}})
    client = await aiohttp_client(create_app(cfg))
    st = client.app[HUB]
    await wait_for(lambda: [r for r in caplog.records if r.name == "hub.backfill"], timeout=20,
                   what="the backfill's log line")
    await wait_for(lambda: st.feed.seq >= 3, what="live ticks")
    lines = [r.getMessage() for r in caplog.records if r.name == "hub.backfill"]
    assert len(lines) == 1 and lines[0].startswith("backfill from Prometheus failed, the charts start empty: ")
    assert "sources.prometheus.max_response_bytes (1024 bytes)" in lines[0]
    async with client.ws_connect(f"/ws?history={HISTORY}") as ws:
        items = (await recv_json(ws))["items"]
    assert [i["seq"] for i in items] == list(range(1, len(items) + 1))
