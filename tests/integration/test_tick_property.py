"""Hypothesis through `create_app`: whatever a Prometheus answers, every tick goes out, seq +1 each.

Issue 13, item 1: a value JSON cannot carry (an integer beyond 64 bits, NaN, nesting beyond a limit)
used to fail `orjson.dumps` for the whole tick, so no client received anything, not even process data.
tests/integration/test_prometheus_property.py proves it at the source; this proves it at the wire.

A real Prometheus cannot be made to answer hostile JSON (30-digit numbers, NaN tokens, arrays nested
1,000 deep, alerts whose fields have the wrong types), so the answers come from a stand-in Prometheus:
a local aiohttp server we control. Everything else is the real hub: `create_app`, its scheduler,
publisher, feed and broadcaster on a real socket, read by a real WebSocket client.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from hub.app import create_app
from hub.config import build_config
from hub.context import HUB
from tests.support.aio import TEST_BASE, merge, recv_json, sample
from tests.support.prom_fakes import fake_app
from tests.integration.test_prometheus_property import Deep, encode, reply

QUERIES = {"a": "up", "b": "rate(x[5m])"}
#: broadcasts checked per example, after the first one the client receives
TICKS = 4
#: small, so some generated answers pass it and are refused while streaming (item 2)
MAX_RESPONSE_BYTES = 64 * 1024
#: generous: the machine is shared, and a wait on a message returns as soon as it arrives
TIMEOUT = 30.0

huge_text = st.integers(1_000, 200_000).map(lambda n: "\u00e9x\n" * (n // 3))
huge_reply = st.tuples(st.sampled_from([200, 400, 503]), st.one_of(
    # a well-formed vector whose label values are huge (some answers exceed MAX_RESPONSE_BYTES)
    st.builds(lambda v: {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"job": v}, "value": [1.5, "1"]}]}}, huge_text),
    # Prometheus's own error text, huge and with newlines that would forge log lines
    st.builds(lambda v: {"status": "error", "errorType": "bad_data", "error": v}, huge_text),
))
hostile = reply | huge_reply
#: one answer per path for each of up to three consecutive requests; the stand-in cycles through them,
#: so an example also covers the transitions between answers (the source's log dedup, its state)
rounds = st.lists(st.fixed_dictionaries({"up": hostile, "rate(x[5m])": hostile, "alerts": hostile}),
                  min_size=1, max_size=3)

BIG_INT = {"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {}, "value": [1, 123456789012345678901234567890]}]}}
DEEP = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, Deep(300)]}]}}
NAN = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"x": "y"}, "value": [1, float("nan")]}]}}
BAD_ALERTS = {"status": "success", "data": {"alerts": [
    {"state": "firing", "activeAt": 5, "labels": {"alertname": 1}},
    {"state": "firing", "activeAt": "x", "labels": {"alertname": "y"}}, {"state": ["firing"]}]}}


class StandIn:
    """Answers /api/v1/query and /api/v1/alerts: the n-th request on a path gets round n (cycling)."""

    def __init__(self, rounds: list[dict[str, tuple[int, Any]]]) -> None:
        self.bodies = [{k: (status, encode(body).encode()) for k, (status, body) in r.items()} for r in rounds]
        self.served: Counter[str] = Counter()

    async def handle(self, request: web.Request) -> web.Response:
        key = "alerts" if request.path.endswith("/alerts") else request.query.get("query", "")
        n = self.served[key]
        self.served[key] += 1
        status, body = self.bodies[n % len(self.bodies)][key]
        return web.Response(status=status, body=body, content_type="application/json")


class Records(logging.Handler):
    """Every record the hub's loggers emit during one example."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def check_snapshot(msg: dict[str, Any]) -> None:
    """One metrics_update: process data present; the Prometheus status valid and its error text capped."""
    assert msg["type"] == "metrics_update"
    app_data = msg["data"]["application"]
    assert isinstance(app_data, dict) and "memoryUsage" in app_data, msg["data"]
    assert msg["sources"]["process"]["status"] == "ok", msg["sources"]["process"]
    prom = msg["sources"]["prometheus"]
    assert prom["status"] in ("ok", "partial", "error"), prom
    timed_out = "timed out" in (prom["error"] or "") or "within the" in (prom["error"] or "")
    event(f"prometheus {prom['status']}" + (" (timed out)" if timed_out else ""))
    if prom["status"] == "error":
        assert msg["data"]["system"] is None and msg["data"]["alerts"] is None
    for text in [prom["error"], *prom.get("warnings", [])]:
        if text is not None:
            assert len(text) <= 300 and text.isprintable(), text[:400]


async def run_ticks(rounds_: list[dict[str, tuple[int, Any]]]) -> None:
    stand_in = StandIn(rounds_)
    prom_runner = web.AppRunner(fake_app(stand_in.handle), access_log=None)
    await prom_runner.setup()
    prom_site = web.TCPSite(prom_runner, "127.0.0.1", 0)
    await prom_site.start()
    prom_port = prom_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    cfg = build_config(merge(TEST_BASE, {
        "broadcast": {"interval": 0.1, "heartbeat": 30.0},
        "sources": {"prometheus": {"enabled": True, "url": f"http://127.0.0.1:{prom_port}", "queries": QUERIES,
                                   "timeout": 5.0, "max_series": 3, "max_response_bytes": MAX_RESPONSE_BYTES}},
    }), environ={})
    app = create_app(cfg)
    hub = app[HUB]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"http://127.0.0.1:{port}/ws", max_msg_size=0) as ws:
            # The first message is the latest snapshot (or, before the first tick, the first broadcast).
            first = await recv_json(ws, timeout=TIMEOUT)
            check_snapshot(first)
            seqs = [first["seq"]]
            while len(seqs) <= TICKS:
                msg = await recv_json(ws, timeout=TIMEOUT)  # an event: the next frame, not a sleep
                check_snapshot(msg)
                seqs.append(msg["seq"])
                assert seqs[-1] == seqs[-2] + 1, f"seq not contiguous: {seqs}"
            # Nothing failed quietly: no tick failed as a whole, and the hub says it is ready.
            assert sample(hub.metrics, "hub_tick_failures_total") == 0, hub.publisher.tick_error
            assert hub.publisher.tick_error is None
            async with session.get(f"http://127.0.0.1:{port}/ready") as r:
                assert r.status == 200, await r.text()
    finally:
        await runner.cleanup()
        await prom_runner.cleanup()


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(rounds_=rounds)
@example(rounds_=[{"up": (200, BIG_INT), "rate(x[5m])": (200, DEEP), "alerts": (200, BAD_ALERTS)},
                  {"up": (200, NAN), "rate(x[5m])": (200, BIG_INT), "alerts": (200, {"status": "success"})}])
@example(rounds_=[{"up": (400, {"status": "error", "errorType": "bad_data", "error": "x\n" * 30_000}),
                   "rate(x[5m])": (200, {"status": "success", "data": {"resultType": "vector", "result": [
                       {"metric": {"job": "é" * 100_000}, "value": [1, "1"]}]}}),
                   "alerts": (200, [Deep(1100)])}])
def test_whatever_prometheus_answers_every_tick_goes_out_with_contiguous_seq(rounds_: list[Any]) -> None:
    records = Records()
    hub_log = logging.getLogger("hub")
    hub_log.addHandler(records)
    try:
        asyncio.run(run_ticks(rounds_))
    finally:
        hub_log.removeHandler(records)
    # A hostile answer is a source's problem, said in one line: never a traceback, never an ERROR
    # (ERROR is for a bug in the hub, e.g. prometheus source's "internal error").
    bad = [r for r in records.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [(r.name, r.getMessage()[:300]) for r in bad]
    for r in records.records:
        line = r.getMessage()
        assert "\n" not in line and len(line) < 2000, line[:400]
