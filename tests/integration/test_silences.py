"""POST/DELETE /api/silences without a working Alertmanager, and the Alertmanager source's isolation.

The stand-in below answers like a misconfigured proxy in front of Alertmanager (echoing the
credentials it was sent): no real Alertmanager can be made to do that. The real one is in
tests/system/test_alertmanager.py.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from aiohttp import web

from hub.app import create_app
from hub.auth import hash_token
from hub.context import HUB
from tests.support import free_port
from tests.support.aio import recv_type, wait_for
from tests.support.http_targets import serve

ACTOR, HEALTH_ONLY = "act-token-0c4e2b1f77", "health-token-9d1a3c5e"
SECRET = "am-secret-5Rk2wQ9z"
GOOD = {"matchers": [{"name": "alertname", "value": "X", "isRegex": False}], "duration_s": 60, "comment": "c"}
SILENCE = {"id": "4f1c9d1e-8a0b-4c3e-9f6a-2b7d5e0a1c33", "status": {"state": "active"}, "createdBy": "alice",
           "comment": "noisy", "startsAt": "2026-01-01T00:00:00.000Z", "endsAt": "2026-01-01T01:00:00.000Z",
           "matchers": [{"name": "alertname", "value": "X", "isRegex": False, "isEqual": True}], "updatedAt": "x"}


def cfg(make_config: Any, **am: Any) -> Any:
    return make_config({"auth": {"tokens": [
        {"name": "alice", "hash": hash_token(ACTOR), "actions": ["silence"]},
        {"name": "h", "hash": hash_token(HEALTH_ONLY), "topics": ["health"], "actions": ["silence"]}]},
        "sources": {"alertmanager": am}})


async def test_without_the_alertmanager_source_silences_get_503_and_snapshots_stay_as_before(
        aiohttp_client: Any, make_config: Any) -> None:
    client = await aiohttp_client(create_app(cfg(make_config)))
    act = {"Authorization": f"Bearer {ACTOR}"}
    for resp in (await client.post("/api/silences", headers=act, json=GOOD),
                 await client.delete(f"/api/silences/{SILENCE['id']}", headers=act)):
        assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        assert await resp.json() == {"error": "the Alertmanager source is disabled in this hub's config "
                                              "([sources.alertmanager] enabled = false): silences cannot be set here"}
    await wait_for(lambda: client.app[HUB].feed.latest)
    snap = await (await client.get("/api/metrics/snapshot", headers=act)).json()
    assert "silences" not in snap["data"] and "alertmanager" not in snap["sources"]


async def test_open_mode_and_a_token_without_the_alerts_topic_cannot_silence(
        aiohttp_client: Any, make_config: Any) -> None:
    open_hub = await aiohttp_client(create_app(make_config({"sources": {"alertmanager": {"enabled": True}}})))
    resp = await open_hub.post("/api/silences", json=GOOD)
    assert resp.status == 403 and "open mode" in (await resp.json())["error"]
    client = await aiohttp_client(create_app(cfg(make_config, enabled=True)))
    resp = await client.delete(f"/api/silences/{SILENCE['id']}", headers={"Authorization": f"Bearer {HEALTH_ONLY}"})
    assert resp.status == 403
    assert await resp.json() == {"error": "forbidden: token 'h' may not read topic 'alerts', which silence needs"}


async def test_an_unreachable_alertmanager_is_a_503_naming_it_and_an_error_in_sources(
        aiohttp_client: Any, make_config: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    client = await aiohttp_client(create_app(cfg(make_config, enabled=True, url=url, timeout=1.0)))
    act = {"Authorization": f"Bearer {ACTOR}"}
    resp = await client.post("/api/silences", headers=act, json=GOOD)
    assert resp.status == 503
    assert await resp.json() == {"error": f"cannot reach Alertmanager at {url}: connection refused"}
    resp = await client.delete(f"/api/silences/{SILENCE['id']}", headers=act)
    assert resp.status == 503
    # An id Alertmanager cannot have is 404 without asking it.
    assert (await client.delete("/api/silences/not-a-uuid", headers=act)).status == 404
    await wait_for(lambda: client.app[HUB].feed.latest)
    snap = await (await client.get("/api/metrics/snapshot", headers=act)).json()
    assert snap["sources"]["alertmanager"]["status"] == "error"
    assert snap["sources"]["alertmanager"]["error"] == f"cannot reach Alertmanager at {url}: connection refused"
    assert snap["data"]["alerts"] is None and snap["data"]["silences"] is None


def echoing_alertmanager(silences: list[Any]) -> web.Application:
    """Alerts fail with a 500 quoting the request's credentials; silences answer `silences`."""

    async def alerts(request: web.Request) -> web.Response:
        return web.Response(status=500, text=f"upstream refused {request.headers.get('Authorization')} "
                                             f"for {request.url}")

    async def listed(request: web.Request) -> web.Response:
        return web.json_response(silences)

    app = web.Application()
    app.router.add_get("/api/v2/alerts", alerts)
    app.router.add_get("/api/v2/silences", listed)
    app.router.add_post("/api/v2/silences", alerts)
    return app


@pytest.mark.parametrize("auth", ["bearer", "basic"])
async def test_credentials_echoed_by_a_failing_alertmanager_reach_no_snapshot_log_or_answer(
        aiohttp_client: Any, make_config: Any, caplog: pytest.LogCaptureFixture, auth: str) -> None:
    caplog.set_level(logging.DEBUG)
    keys = {"bearer_token": SECRET} if auth == "bearer" else {"basic_auth_user": "hub",
                                                              "basic_auth_password": SECRET}
    async with serve(echoing_alertmanager([SILENCE, {**SILENCE, "id": "old", "status": {"state": "expired"}}])) as url:
        client = await aiohttp_client(create_app(cfg(make_config, enabled=True, url=url, **keys)))
        act = {"Authorization": f"Bearer {ACTOR}"}
        async with client.ws_connect("/ws", headers={"Authorization": f"Bearer {HEALTH_ONLY}"}) as ws:
            limited = await recv_type(ws, "metrics_update")
        await wait_for(lambda: client.app[HUB].feed.latest)
        raw = await (await client.get("/api/metrics/snapshot", headers=act)).text()
        resp = await client.post("/api/silences", headers=act, json=GOOD)
        answer = await resp.text()
    snap = orjson.loads(raw)
    # One part failing leaves the other: partial, alerts null, the active silence listed (not the expired one).
    status = snap["sources"]["alertmanager"]
    assert status["status"] == "partial" and status["error"].startswith("alerts failed: HTTP 500 from Alertmanager")
    assert "upstream refused Bearer ***" in status["error"] or "upstream refused Basic ***" in status["error"]
    assert snap["data"]["alerts"] is None and [s["id"] for s in snap["data"]["silences"]] == [SILENCE["id"]]
    assert snap["data"]["silences"][0] == {k: SILENCE[k] for k in ("id", "createdBy", "comment", "startsAt",
                                                                   "endsAt", "matchers")} | {"status": "active"}
    assert resp.status == 503 and "HTTP 500 from Alertmanager" in answer
    # A token without the alerts topic gets neither section nor the source's status.
    assert set(limited["data"]) == {"health"} and "alertmanager" not in limited["sources"]
    for where, text in {"snapshot": raw, "answer": answer, "log": caplog.text}.items():
        assert SECRET not in text, where
        assert "aHVi" not in text, where  # base64 of "hub:", the Basic credential's start
