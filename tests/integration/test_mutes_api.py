"""Muting a health check over HTTP: POST /api/mutes and DELETE /api/mutes/{id}, every status, who may,
`data.health.mutes` on a connected client, the audit lines, and a mute kept across a restart.

The checked service is a local target; nothing is mocked.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from hub.app import create_app
from hub.auth import hash_token
from hub.config import Config
from hub.context import HUB
from hub.mute_views import MUTES
from hub.state import MemoryStore, Store
from hub.state.file_store import FileStore
from hub.vocab import utc_iso
from tests.support.aio import recv_type, wait_for
from tests.support.http_targets import Target, serve
from tests.support.timing import WAIT

ACTOR, READER, ALERTS_ONLY = "act-token-0123456789", "read-token-0123456789", "alerts-token-0123456789"
TOKENS = [
    {"name": "alice", "hash": hash_token(ACTOR), "actions": ["silence"]},
    {"name": "wall", "hash": hash_token(READER)},
    {"name": "am-only", "hash": hash_token(ALERTS_ONLY), "topics": ["alerts"], "actions": ["silence"]},
]
ALICE = {"Authorization": f"Bearer {ACTOR}"}


def audit_lines(path: Path, event: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [r for r in map(orjson.loads, path.read_bytes().splitlines()) if r["event"] == event]


@pytest.fixture
async def target_url() -> AsyncIterator[str]:
    async with serve(Target().app) as url:
        yield f"{url}/toggle"


@pytest.fixture
def hub_config(make_config: Callable[..., Config], target_url: str, tmp_path: Path) -> Callable[..., Config]:
    def make(**over: Any) -> Config:
        health = {"enabled": True, "checks": {"backend": target_url, "frontend": target_url}, "timeout": 1.0}
        base = {"auth": {"tokens": TOKENS}, "audit": {"path": str(tmp_path / "audit.jsonl")},
                "sources": {"health": health | over.pop("health", {})}}
        return make_config(base | over)

    return make


async def test_a_mute_is_created_shown_to_clients_ended_and_audited_once_each(
        aiohttp_client: Any, hub_config: Callable[..., Config], tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(hub_config()))
    async with client.ws_connect("/ws", headers={"Authorization": f"Bearer {READER}"}) as ws:
        first = await recv_type(ws, "metrics_update", timeout=WAIT)
        assert first["data"]["health"]["mutes"] == []
        before = time.time()
        resp = await client.post("/api/mutes", headers=ALICE,
                                 json={"check": "backend", "duration_s": 3600, "comment": " deploy 4.2 "})
        assert resp.status == 201
        body = await resp.json()
        assert list(body) == ["muteID"] and re.fullmatch(r"[0-9a-f-]{36}", body["muteID"])
        mute_id = body["muteID"]

        async def shown() -> list[dict[str, Any]]:
            return (await recv_type(ws, "metrics_update", timeout=WAIT))["data"]["health"]["mutes"]

        mutes = await wait_for(shown, timeout=WAIT, what="the mute in data.health.mutes")
        (m,) = mutes
        assert {k: v for k, v in m.items() if k != "until"} == {
            "id": mute_id, "check": "backend", "createdBy": "alice", "comment": "deploy 4.2"}
        assert utc_iso(before + 3600) <= m["until"] <= utc_iso(time.time() + 3600)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", m["until"])

        resp = await client.delete(f"/api/mutes/{mute_id}", headers=ALICE)
        assert resp.status == 200 and await resp.json() == {"muteID": mute_id, "ended": True}
        await wait_for(lambda: _empty(shown), timeout=WAIT, what="the mute gone from data.health.mutes")
        resp = await client.delete(f"/api/mutes/{mute_id}", headers=ALICE)
        assert resp.status == 404 and await resp.json() == {"error": f"no active mute {mute_id!r}"}
    path = tmp_path / "audit.jsonl"
    await wait_for(lambda: audit_lines(path, "mute_ended"), what="the audit line of the end")
    for event in ("mute_created", "mute_ended"):
        (line,) = audit_lines(path, event)
        assert {k: line[k] for k in ("name", "mute_id", "check", "until", "comment")} == {
            "name": "alice", "mute_id": mute_id, "check": "backend", "until": m["until"], "comment": "deploy 4.2"}


async def _empty(shown: Callable[[], Any]) -> bool:
    return await shown() == []


BAD = [
    (b"{not json", "the body is not valid JSON"),
    (b"[]", 'the body must be a JSON object {"check", "duration_s" | "until", "comment"}'),
    ({"check": "nope", "duration_s": 60, "comment": "x"},
     "'check': unknown check 'nope'; known: ['backend', 'frontend']"),
    ({"check": 3, "duration_s": 60, "comment": "x"}, "'check' must be a string naming a check"),
    ({"duration_s": 60, "comment": "x"}, "'check' must be a string naming a check"),
    ({"check": "backend", "duration_s": 0, "comment": "x"}, "'duration_s' must be more than 0, got 0"),
    ({"check": "backend", "duration_s": -5, "comment": "x"}, "'duration_s' must be more than 0, got -5"),
    ({"check": "backend", "duration_s": 7201, "comment": "x"},
     "'duration_s' must be at most 7200 (sources.health.max_mute_s), got 7201"),
    ({"check": "backend", "duration_s": "60", "comment": "x"}, "'duration_s' must be a number of seconds"),
    ({"check": "backend", "duration_s": True, "comment": "x"}, "'duration_s' must be a number of seconds"),
    ({"check": "backend", "until": "2020-01-01T00:00:00Z", "comment": "x"},
     "'until' is in the past: '2020-01-01T00:00:00Z'"),
    ({"check": "backend", "until": "tomorrow", "comment": "x"},
     "'until' is not an RFC 3339 date-time with an offset: 'tomorrow'"),
    ({"check": "backend", "until": "2099-01-01T00:00:00", "comment": "x"},
     "'until' is not an RFC 3339 date-time with an offset: '2099-01-01T00:00:00'"),
    ({"check": "backend", "until": "2099-01-01T00:00:00Z", "comment": "x"},
     "'until' is more than 7200 s from now (sources.health.max_mute_s)"),
    ({"check": "backend", "until": 1234, "comment": "x"}, "'until' must be an RFC 3339 date-time string"),
    ({"check": "backend", "duration_s": 60, "until": "2099-01-01T00:00:00Z", "comment": "x"},
     "give exactly one of 'duration_s' and 'until'"),
    ({"check": "backend", "comment": "x"}, "give exactly one of 'duration_s' and 'until'"),
    ({"check": "backend", "duration_s": 60, "comment": "  "}, "'comment' must not be empty"),
    ({"check": "backend", "duration_s": 60}, "'comment' must be a string saying why"),
    ({"check": "backend", "duration_s": 60, "comment": ["x"]}, "'comment' must be a string saying why"),
    ({"check": "backend", "duration_s": 60, "comment": "x" * 1001}, "'comment' must be at most 1000 characters"),
    ({"check": "backend", "duration": 60, "comment": "x"}, "unknown field 'duration'"),
]


async def test_bad_bodies_get_400_naming_the_field_and_create_nothing(
        aiohttp_client: Any, hub_config: Callable[..., Config], tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(hub_config(health={"max_mute_s": 7200})))
    for body, error in BAD:
        kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
        resp = await client.post("/api/mutes", headers=ALICE, **kwargs)
        assert resp.status == 400, body
        assert (await resp.json())["error"].startswith(error), (body, await resp.json())
    assert await client.app[MUTES].active() == []
    ok = {"check": "frontend", "until": utc_iso(time.time() + 600), "comment": "x"}
    resp = await client.post("/api/mutes", headers=ALICE, json=ok)  # the same app does create a good one
    assert resp.status == 201
    (m,) = await client.app[MUTES].active()
    assert m.check == "frontend" and abs(m.until - (time.time() + 600)) < 5
    client.app[HUB].audit.close()  # flushes the writer
    assert len(audit_lines(tmp_path / "audit.jsonl", "mute_created")) == 1


@pytest.mark.parametrize(("headers", "status", "error"), [
    ({}, 401, "unauthorized: "),
    ({"Authorization": f"Bearer {READER}"}, 403, "forbidden: token 'wall' may not silence (its actions: [])"),
    ({"Authorization": f"Bearer {ALERTS_ONLY}"}, 403,
     "forbidden: token 'am-only' may not read topic 'health', which silence needs"),
])
async def test_only_a_token_with_silence_and_health_may_mute(
        aiohttp_client: Any, hub_config: Callable[..., Config], headers: dict[str, str], status: int,
        error: str) -> None:
    client = await aiohttp_client(create_app(hub_config()))
    resp = await client.post("/api/mutes", headers=headers,
                             json={"check": "backend", "duration_s": 60, "comment": "x"})
    assert resp.status == status and (await resp.json())["error"].startswith(error)
    resp = await client.post("/api/mutes", headers=ALICE, json={"check": "backend", "duration_s": 60, "comment": "x"})
    mute_id = (await resp.json())["muteID"]
    resp = await client.delete(f"/api/mutes/{mute_id}", headers=headers)
    assert resp.status == status and (await resp.json())["error"].startswith(error)
    assert [m.id for m in await client.app[MUTES].active()] == [mute_id]  # still there


async def test_open_mode_cannot_mute(aiohttp_client: Any, make_config: Callable[..., Config],
                                     target_url: str) -> None:
    client = await aiohttp_client(create_app(make_config({"sources": {"health": {
        "enabled": True, "checks": {"backend": target_url}}}})))
    for resp in (await client.post("/api/mutes", json={"check": "backend", "duration_s": 60, "comment": "x"}),
                 await client.delete("/api/mutes/whatever")):
        assert resp.status == 403
        assert "open mode" in (await resp.json())["error"]
    assert await client.app[MUTES].active() == []


async def test_503_when_the_health_source_is_disabled(aiohttp_client: Any, hub_config: Callable[..., Config]) -> None:
    client = await aiohttp_client(create_app(hub_config(health={"enabled": False})))
    for resp in (await client.post("/api/mutes", headers=ALICE,
                                   json={"check": "backend", "duration_s": 60, "comment": "x"}),
                 await client.delete("/api/mutes/whatever", headers=ALICE)):
        assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        assert (await resp.json())["error"].startswith("the health source is disabled")


async def test_a_mute_outlives_a_restart_with_a_state_dir(
        aiohttp_client: Any, hub_config: Callable[..., Config], tmp_path: Path) -> None:
    config = hub_config(state={"dir": str(tmp_path / "state")})
    first = await aiohttp_client(create_app(config))
    resp = await first.post("/api/mutes", headers=ALICE, json={"check": "backend", "duration_s": 600,
                                                               "comment": "db migration"})
    mute_id = (await resp.json())["muteID"]
    await first.close()  # the process ends (and lets go of the directory)

    second = await aiohttp_client(create_app(config))

    async def mutes() -> list[dict[str, Any]]:
        resp = await second.get("/api/metrics/snapshot", headers=ALICE)
        return (await resp.json())["data"]["health"]["mutes"] if resp.status == 200 else []

    (m,) = await wait_for(mutes, timeout=WAIT, what="the kept mute in the new process's snapshot")
    assert (m["id"], m["check"], m["createdBy"], m["comment"]) == (mute_id, "backend", "alice", "db migration")
    resp = await second.delete(f"/api/mutes/{mute_id}", headers=ALICE)
    assert resp.status == 200


@pytest.mark.parametrize("kind", ["memory", "file"])
async def test_store_delete_removes_named_states_and_counts_only_those_there(kind: str, tmp_path: Path) -> None:
    store: Store = MemoryStore() if kind == "memory" else FileStore(str(tmp_path / "state"))
    await store.save("mutes", {"mute:a": {"x": 1}, "mute:b": {"x": 2}, "held:c": {"x": 3}})
    assert await store.delete("mutes", ["mute:a", "mute:zzz"]) == 1
    assert await store.delete("mutes", ["mute:a"]) == 0  # a second caller learns it was gone
    assert await store.delete("other", ["mute:b"]) == 0
    assert await store.load("mutes") == {"mute:b": {"x": 2}, "held:c": {"x": 3}}
    await store.close()
    if kind == "file":
        again = FileStore(str(tmp_path / "state"))
        assert await again.load("mutes") == {"mute:b": {"x": 2}, "held:c": {"x": 3}}
        await again.close()
