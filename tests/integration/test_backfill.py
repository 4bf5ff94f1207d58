"""Backfill on start, the cases a real Prometheus cannot produce: a `query_range` that answers only
when the test lets it (the first live tick must not wait for it), and one that never answers
(the backfill's own deadline). A local stand-in serves them; the healthy path against a real
Prometheus is tests/system/test_backfill.py."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from aiohttp import web

from hub.app import create_app
from hub.context import HUB
from tests.support.aio import recv_json, wait_for


class SlowRange:
    """A Prometheus stand-in: instant queries at once, `query_range` held until `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.range_asked = asyncio.Event()
        self.range_answered = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v1/query", self.instant)
        app.router.add_get("/api/v1/query_range", self.range)
        return app

    async def instant(self, request: web.Request) -> web.Response:
        now = time.time()
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"job": "api"}, "value": [now, "7"]}]}})

    async def range(self, request: web.Request) -> web.Response:
        self.range_asked.set()
        await self.release.wait()
        start, end, step = (float(request.query[k]) for k in ("start", "end", "step"))
        values: list[list[Any]] = []
        t = start
        while t <= end:
            values.append([round(t, 3), "3"])
            t += step
        self.range_answered = True
        return web.json_response({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"job": "api"}, "values": values}]}})


def hub_config(make_config: Any, url: str, **prom: Any) -> Any:
    return make_config({"broadcast": {"interval": 0.2, "history_size": 20},
                        "sources": {"prometheus": {"enabled": True, "url": url, "alerts": False,
                                                   "queries": {"requestRate": "rate(x[1m])"}, **prom}}})


async def test_the_first_live_tick_never_waits_for_a_slow_query_range(aiohttp_client, aiohttp_server,
                                                                       make_config):
    stand_in = SlowRange()
    server = await aiohttp_server(stand_in.app())
    client = await aiohttp_client(create_app(hub_config(make_config, str(server.make_url("")))))
    st = client.app[HUB]
    await asyncio.wait_for(stand_in.range_asked.wait(), 5)
    # Live ticks go out while query_range is still answering.
    await wait_for(lambda: st.feed.seq >= 3, what="three live ticks")
    assert not stand_in.range_answered and not st.feed.backfill
    first_live = st.feed.history[0]
    assert first_live.seq == 1
    stand_in.release.set()
    await wait_for(lambda: st.feed.backfill, what="the backfill")
    async with client.ws_connect("/ws?history=20") as ws:
        hist = await recv_json(ws)
    items = hist["items"]
    filled = [i for i in items if i.get("backfill")]
    lives = [i for i in items if not i.get("backfill")]
    assert filled and items[:len(filled)] == filled  # every backfilled item before the live ones
    assert all("seq" not in i for i in filled)
    assert all(i["timestamp"] < first_live.timestamp for i in filled)
    seqs = [i["seq"] for i in lives]
    assert seqs[0] >= 1 and seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert len(items) <= 20
    assert {i["epoch"] for i in items} == {st.publisher.epoch}  # type: ignore[attr-defined]
    assert all(i["data"]["system"]["requestRate"][0]["value"][1] == "3" for i in filled)


async def test_a_backfill_past_its_deadline_is_dropped_and_logged_once(aiohttp_client, aiohttp_server,
                                                                        make_config, caplog):
    caplog.set_level(logging.INFO, logger="hub.backfill")
    stand_in = SlowRange()  # never released
    server = await aiohttp_server(stand_in.app())
    client = await aiohttp_client(create_app(hub_config(make_config, str(server.make_url("")),
                                                        backfill_timeout=0.5)))
    st = client.app[HUB]
    await wait_for(lambda: [r for r in caplog.records if r.name == "hub.backfill"], what="the backfill's log line")
    await wait_for(lambda: st.feed.seq >= 5, what="live ticks")
    lines = [r.getMessage() for r in caplog.records if r.name == "hub.backfill"]
    assert lines == ["backfill from Prometheus gave up after 0.5 s (sources.prometheus.backfill_timeout); "
                     "the charts start empty"]
    assert not st.feed.backfill and not st.feed.backfill_points
    assert st.feed.history[0].seq == 1
    resp = await client.get("/api/metrics/history")
    assert all("backfill" not in i for i in (await resp.json())["items"])


@pytest.mark.parametrize("on", [False, True])
async def test_sources_prometheus_backfill_turns_it_off(aiohttp_client, aiohttp_server, make_config, on):
    stand_in = SlowRange()
    stand_in.release.set()
    server = await aiohttp_server(stand_in.app())
    client = await aiohttp_client(create_app(hub_config(make_config, str(server.make_url("")), backfill=on)))
    st = client.app[HUB]
    await wait_for(lambda: st.feed.seq >= 5, what="live ticks")
    if on:
        await wait_for(lambda: st.feed.backfill, what="the backfill")
    assert stand_in.range_asked.is_set() is on
    assert bool(st.feed.backfill) is on
