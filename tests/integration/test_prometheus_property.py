"""Hypothesis: whatever JSON-shaped answer a stand-in Prometheus gives, collect() raises only SourceError and returns encodable data.

A real Prometheus cannot be made to answer like this, so the answers come from a local aiohttp
server (see prom_fakes). It runs in its own thread and loop because Hypothesis drives each
example synchronously; each example then runs one collection in a fresh loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hub.sources.base import SourceError
from tests.support.prom_fakes import fake_app, make_source

MAX_SERIES = 3
QUERIES = {"a": "up", "b": "rate(x[5m])"}
PROPERTY = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass(frozen=True)
class Deep:
    """An array nested `depth` deep: JSON allows it, orjson writes at most 254 and reads at most 1024."""

    depth: int


def encode(v: Any) -> str:
    """JSON text as a careless server writes it: NaN/Infinity literals, any integer, lone surrogates escaped."""
    if isinstance(v, Deep):
        return "[" * v.depth + "0" + "]" * v.depth
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity") if math.isinf(v) else repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(encode(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{encode(x)}" for k, x in v.items()) + "}"
    return json.dumps(v)  # None, bool, int of any size, str (surrogates as \\udXXX)


leaves = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63, max_value=2**200)
          | st.floats() | st.text(max_size=12) | st.integers(200, 1100).map(Deep))
anything = st.recursive(leaves, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                        max_leaves=12)
numbers = st.sampled_from(["1", "0", "NaN", "+Inf", "-Inf", "1e400", "", "1_0", " 1"]) | st.floats() | st.integers()
timestamps = st.floats() | st.integers() | st.booleans() | st.text(max_size=4)
point = st.tuples(timestamps, numbers | anything).map(list) | anything
label_sets = st.dictionaries(st.text(max_size=6), st.text(max_size=6) | anything, max_size=5) | anything
series = st.fixed_dictionaries({"metric": label_sets}, optional={
    "value": point, "values": st.lists(point, max_size=3) | anything, "histogram": anything})
result = st.fixed_dictionaries({
    "resultType": st.sampled_from(["vector", "matrix", "scalar", "string"]) | anything,
    "result": st.lists(series, max_size=6) | point | anything,
})
alert = st.fixed_dictionaries({}, optional={
    "state": st.sampled_from(["firing", "pending", "inactive"]) | anything,
    "activeAt": st.text(max_size=25) | anything,
    "labels": st.fixed_dictionaries({}, optional={"alertname": st.text(max_size=6) | anything,
                                                  "severity": st.text(max_size=6) | anything}) | label_sets,
    "annotations": st.fixed_dictionaries({}, optional={"summary": st.text(max_size=8) | anything}) | anything,
}) | anything


def answer(data: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A Prometheus API answer around `data`, often well-formed on the outside, sometimes not at all."""
    envelope = st.fixed_dictionaries({"status": st.sampled_from(["success", "error"]) | anything}, optional={
        "data": data | anything, "warnings": st.lists(st.text(max_size=8) | anything, max_size=3) | anything,
        "errorType": st.text(max_size=8) | anything, "error": st.text(max_size=20) | anything})
    return envelope | anything


status_codes = st.sampled_from([200, 200, 200, 400, 422, 503])
reply = st.tuples(status_codes, st.one_of(answer(result), answer(st.fixed_dictionaries({
    "alerts": st.lists(alert, max_size=6) | anything}))))


class Replies:
    """What the stand-in answers next: per query expression, and for /api/v1/alerts."""

    def __init__(self) -> None:
        self.by_path: dict[str, tuple[int, bytes]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        key = "alerts" if request.path.endswith("/alerts") else request.query.get("query", "")
        status, body = self.by_path[key]
        return web.Response(status=status, body=body, content_type="application/json")


@pytest.fixture(scope="module")
def stand_in() -> Iterator[tuple[str, Replies]]:
    replies = Replies()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(fake_app(replies.handle), access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", replies
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


class Errors(logging.Handler):
    """Collects ERROR records (an internal error in the source) from the source's loggers."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def check_text(text: str) -> None:
    assert "\n" not in text and "\r" not in text, text
    assert text.isprintable(), repr(text)


@PROPERTY
@given(a=reply, b=reply, alerts=reply)
@example(a=(200, {"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {}, "value": [1, 123456789012345678901234567890]}, {"metric": {}, "value": [1, Deep(300)]}]}}),
         b=(200, {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "1"]}]}}),
         alerts=(200, {"status": "success", "data": {"alerts": [
             {"state": "firing", "activeAt": 5, "labels": {"alertname": 1}},
             {"state": "firing", "activeAt": "x", "labels": {"alertname": "y"}}, {"state": ["firing"]}]}}))
def test_any_answer_gives_encodable_data_or_a_source_error(stand_in: tuple[str, Replies], a: Any, b: Any,
                                                          alerts: Any) -> None:
    url, replies = stand_in
    replies.by_path = {"up": (a[0], encode(a[1]).encode()), "rate(x[5m])": (b[0], encode(b[1]).encode()),
                       "alerts": (alerts[0], encode(alerts[1]).encode())}
    errors = Errors()
    logger = logging.getLogger("hub.sources.prometheus")
    logger.addHandler(errors)

    async def once() -> Any:
        source = make_source(url, queries=QUERIES, max_series=MAX_SERIES, timeout=5)
        try:
            return await source.collect(5.0)
        except SourceError as exc:
            return exc
        finally:
            await source.close()

    try:
        res = asyncio.run(once())
    finally:
        logger.removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]  # never an internal error
    if isinstance(res, SourceError):
        check_text(str(res))
        return
    orjson.dumps({"data": res.data, "error": res.error, "warnings": res.warnings})
    for w in res.warnings:
        check_text(w)
    if res.error is not None:
        check_text(res.error)
    for rows in res.data["system"].values():
        assert isinstance(rows, list)
        if rows and isinstance(rows[0], dict):
            assert len(rows) <= MAX_SERIES
            for row in rows:
                assert set(row) in ({"metric", "value"}, {"metric", "values"})
                assert all(isinstance(k, str) and isinstance(v, str) for k, v in row["metric"].items())
    for a_ in res.data.get("alerts") or []:
        assert set(a_) == {"name", "state", "severity", "activeAt", "summary", "labels"}
        assert isinstance(a_["name"], str) and a_["state"] in ("firing", "pending")
