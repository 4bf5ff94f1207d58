"""A stand-in Prometheus (a local aiohttp server) and a source factory for the hostile-answer tests.

Real Prometheus cannot be made to answer with 30-digit numbers, 3 MB error strings, endless bodies
or malformed alerts, so these tests use a server we control; the healthy paths are tested against
a real Prometheus in test_prometheus_source.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from hub.sources.prometheus import PrometheusSource
from tests.support.components import make_prometheus_source

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TS = 1700000000.5


def make_source(url: str, **keys: Any) -> PrometheusSource:
    """A PrometheusSource for the stand-in at `url`, built from config like the hub's."""
    return make_prometheus_source(url, **keys)


def vector(result: Any, **extra: Any) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": result}, **extra}


def alerts_body(alerts: Any, **extra: Any) -> dict[str, Any]:
    return {"status": "success", "data": {"alerts": alerts}, **extra}


def series(n: int, value: Callable[[int], Any] = lambda i: "1", name: str = "up") -> list[dict[str, Any]]:
    """`n` series like a fleet's: job, instance, one value each."""
    return [{"metric": {"__name__": name, "job": f"job{i % 5}", "instance": f"10.0.{i // 250}.{i % 250}:9100"},
             "value": [TS, value(i)]} for i in range(n)]


def json_handler(query: Callable[[str], Any], alerts: Any = None) -> Handler:
    """Answer /api/v1/query with `query(expr)` and /api/v1/alerts with `alerts` (JSON-encoded)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/alerts"):
            return web.json_response(alerts if alerts is not None else alerts_body([]))
        return web.json_response(query(request.query.get("query", "")))

    return handler


def raw_handler(query: Callable[[str], bytes], alerts: bytes | None = None) -> Handler:
    """Like json_handler, but the bodies are raw bytes (for what json.dumps would refuse to write)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/alerts"):
            body = alerts if alerts is not None else b'{"status":"success","data":{"alerts":[]}}'
        else:
            body = query(request.query.get("query", ""))
        return web.Response(body=body, content_type="application/json")

    return handler


def fake_app(handler: Handler) -> web.Application:
    app = web.Application()
    app.router.add_get("/api/v1/query", handler)
    app.router.add_get("/api/v1/alerts", handler)
    return app
