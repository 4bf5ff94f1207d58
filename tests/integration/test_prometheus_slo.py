"""data.slo: `sources.prometheus.slo_queries` fetched with the system queries, from a stand-in Prometheus.

The stand-in answers the recorded series' names as a Prometheus with the shipped rules would; a real
Prometheus evaluating the shipped rules is in tests/system/test_prometheus_rules.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from hub.app import create_app
from hub.config import DEFAULT_QUERIES, DEFAULT_SLO_QUERIES
from hub.context import HUB
from tests.support.aio import recv_type, wait_for
from tests.support.components import config
from tests.support.prom_fakes import TS, Handler, fake_app, json_handler, make_source, vector

BUDGET = 'slo:error_budget_remaining:ratio_30d{slo=~"booking-api-.*"}'
BURN = 'slo:burn_rate:ratio_rate5m{slo=~"booking-api-.*"}'


def slo_series(name: str, value: str) -> list[dict[str, Any]]:
    return [{"metric": {"__name__": name, "job": "healthcare-backend", "slo": f"booking-api-{s}"},
             "value": [TS, value]} for s in ("availability", "latency")]


RECORDED = {BUDGET: slo_series("slo:error_budget_remaining:ratio_30d", "0.82"),
            BURN: slo_series("slo:burn_rate:ratio_rate5m", "3.5")}


def answers(expr: str) -> dict[str, Any]:
    """A Prometheus with the shipped rules loaded: the recorded series, and `up` for the rest."""
    return vector(RECORDED.get(expr, [{"metric": {"job": "x"}, "value": [TS, "1"]}]))


@pytest.fixture
async def serve(aiohttp_server: Any) -> Any:
    async def start(handler: Handler) -> str:
        server = await aiohttp_server(fake_app(handler))
        return f"http://127.0.0.1:{server.port}"

    return start


async def collect(url: str, **keys: Any) -> Any:
    source = make_source(url, **keys)
    try:
        return source, await source.collect(source.timeout)
    finally:
        await source.close()


def test_default_slo_queries_read_the_shipped_recording_rules() -> None:
    cfg = config({})
    assert dict(cfg.sources.prometheus.slo_queries) == DEFAULT_SLO_QUERIES == {
        "errorBudgetRemaining": BUDGET, "burnRate": BURN}
    # data.system keeps the seed's three queries.
    assert dict(cfg.sources.prometheus.queries) == DEFAULT_QUERIES
    assert list(DEFAULT_QUERIES) == ["uptime", "requestRate", "responseTime"]


async def test_slo_figures_land_in_data_slo_verbatim_and_system_keeps_its_queries(serve: Any) -> None:
    url = await serve(json_handler(answers))
    source, res = await collect(url, queries={"uptime": "up"}, slo_queries=DEFAULT_SLO_QUERIES)
    assert source.sections == ("system", "alerts", "slo")
    assert res.error is None
    assert res.data["system"] == {"uptime": [{"metric": {"job": "x"}, "value": [TS, "1"]}]}
    assert res.data["slo"] == {"errorBudgetRemaining": RECORDED[BUDGET], "burnRate": RECORDED[BURN]}


async def test_a_figure_prometheus_does_not_have_is_null(serve: Any) -> None:
    url = await serve(json_handler(lambda q: vector([]) if q == BURN else answers(q)))
    _source, res = await collect(url, queries={"uptime": "up"}, slo_queries=DEFAULT_SLO_QUERIES)
    assert res.error is None  # rules not loaded (or nothing recorded yet) is no failure
    assert res.data["slo"] == {"errorBudgetRemaining": RECORDED[BUDGET], "burnRate": None}


async def test_a_failed_slo_query_is_absent_and_named_in_the_error(serve: Any) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.query.get("query") == BUDGET:
            return web.json_response({"status": "error", "errorType": "bad_data", "error": "parse error"},
                                     status=400)
        return await json_handler(answers)(request)

    url = await serve(handler)
    _source, res = await collect(url, queries={"uptime": "up"}, slo_queries=DEFAULT_SLO_QUERIES)
    assert res.data["slo"] == {"burnRate": RECORDED[BURN]}
    assert res.data["system"] == {"uptime": [{"metric": {"job": "x"}, "value": [TS, "1"]}]}
    assert res.error is not None and res.error.startswith("slo query 'errorBudgetRemaining' failed: ")
    assert "parse error" in res.error


async def test_empty_slo_queries_means_no_data_slo(serve: Any) -> None:
    url = await serve(json_handler(answers))
    source, res = await collect(url, queries={"uptime": "up"}, slo_queries={}, alerts=False)
    assert source.sections == ("system",)
    assert "slo" not in res.data


async def test_data_slo_travels_with_topic_system_only(serve: Any, aiohttp_client: Any, make_config: Any) -> None:
    url = await serve(json_handler(answers))
    app = create_app(make_config({"sources": {"prometheus": {
        "enabled": True, "url": url, "backfill": False, "alerts": False}}}))
    client = await aiohttp_client(app)
    await wait_for(lambda: client.app[HUB].feed.seq >= 1)
    async with client.ws_connect("/ws") as ws:
        await ws.send_json({"type": "subscribe", "topics": ["system"]})
        await recv_type(ws, "subscribed")
        update = await recv_type(ws, "metrics_update")
        assert set(update["data"]) == {"system", "slo"}
        assert update["data"]["slo"] == {"errorBudgetRemaining": RECORDED[BUDGET], "burnRate": RECORDED[BURN]}
        assert set(update["data"]["system"]) == set(DEFAULT_QUERIES)
        await ws.send_json({"type": "subscribe", "topics": ["application"]})
        await recv_type(ws, "subscribed")
        update = await recv_type(ws, "metrics_update")
        assert set(update["data"]) == {"application"}
        assert "prometheus" not in update["sources"]
    snap = await (await client.get("/api/metrics/snapshot")).json()
    assert snap["data"]["slo"]["burnRate"] == RECORDED[BURN]
