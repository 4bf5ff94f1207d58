"""Mutes in a cluster: two real `hub serve` replicas on a real Redis. A mute made on the replica that does
not collect shows on both, keeps the check quiet across a SIGKILL of the collector, and its end on the
surviving replica lets exactly one down message out.

Slack is a local https receiver trusted through SSL_CERT_FILE; the checked service is a local target.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from hub.auth import hash_token
from tests.support.aio import wait_for
from tests.support.components import make_redis_store
from tests.support.http_targets import Target, serve
from tests.support.hubproc import HubProcess
from tests.support.redis import RedisServer, redis_server  # noqa: F401
from tests.support.slack import slack_receiver
from tests.support.timing import WAIT
from tests.support.tls import make_private_ca, server_context

ACTOR = "act-token-0123456789"
ALICE = {"Authorization": f"Bearer {ACTOR}"}
DOWN = "Health check failed: backend: HTTP 503"


async def get(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    try:
        async with session.get(url, headers=ALICE) as resp:
            return orjson.loads(await resp.read()) if resp.status == 200 else None
    except aiohttp.ClientError:
        return None


async def health(session: aiohttp.ClientSession, hub: HubProcess) -> dict[str, Any]:
    snap = await get(session, hub.url + "/api/metrics/snapshot")
    return ((snap or {}).get("data") or {}).get("health") or {}


async def collectors(url: str) -> list[tuple[str, bool | None]]:
    """(replica, backend up) of every snapshot in the stream, oldest first."""
    r = Redis.from_url(url)
    try:
        entries = await r.xrange("{hub}:snapshots")
    finally:
        await r.aclose()
    out = []
    for _id, f in entries:
        h = orjson.loads(f[b"data"])["data"].get("health") or {}
        out.append((f[b"replica"].decode(), (h.get("details") or {}).get("backend")))
    return out


async def test_redis_store_delete_counts_what_it_removed(redis_server: RedisServer) -> None:  # noqa: F811
    a, b = make_redis_store(redis_server.url), make_redis_store(redis_server.url)
    try:
        await a.save("mutes", {"mute:x": {"n": 1}, "mute:y": {"n": 2}})
        assert await b.delete("mutes", ["mute:x", "mute:nope"]) == 1
        assert await a.delete("mutes", ["mute:x"]) == 0  # only one of two replicas ends it
        assert await a.delete("mutes", []) == 0
        assert await b.load("mutes") == {"mute:y": {"n": 2}}
    finally:
        await a.close()
        await b.close()


async def test_a_mute_is_shared_by_the_replicas_and_survives_a_collector_failover(
        tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    ca = make_private_ca(tmp_path)
    target = Target()
    hubs: list[HubProcess] = []
    async with serve(target.app) as target_url, slack_receiver(ssl_context=server_context(ca)) as slack, \
            aiohttp.ClientSession() as session:
        config = {
            "broadcast": {"interval": 0.5, "heartbeat": 5.0},
            "sources": {"prometheus": {"enabled": False}, "business": {"enabled": False},
                        "health": {"checks": {"backend": f"{target_url}/toggle"}, "timeout": 0.3,
                                   "failures_before_down": 2}},
            "auth": {"tokens": [{"name": "alice", "hash": hash_token(ACTOR), "actions": ["silence"]}]},
            "cluster": {"redis_url": redis_server.url},
            "notify": {"slack_webhook_url": slack.url},
        }
        try:
            hubs = [HubProcess(config, tmp_path, env={"SSL_CERT_FILE": str(ca["ca"])}) for _ in range(2)]
            for h in hubs:
                h.start(wait=False)
            for h in hubs:
                await asyncio.to_thread(h.wait_healthy, path="/ready")
            replicas = {}
            for h in hubs:
                ready = await wait_for(lambda h=h: get(session, h.url + "/ready"), what="/ready")
                replicas[ready["cluster"]["replica"]] = h
            entries = await wait_for(lambda: collectors(redis_server.url), timeout=WAIT, what="snapshots")
            collector = replicas[entries[-1][0]]
            other = next(h for h in hubs if h is not collector)

            # Made on the replica that does not collect: it goes to Redis, the collector shows it.
            async with session.post(other.url + "/api/mutes", headers=ALICE,
                                    json={"check": "backend", "duration_s": 600, "comment": "deploy"}) as resp:
                assert resp.status == 201, await resp.text()
                mute_id = (await resp.json())["muteID"]
            for h in hubs:
                await wait_for(lambda h=h: _muted(session, h, mute_id), timeout=WAIT, what="the mute on each replica")

            target.toggle_status = 503
            for h in hubs:
                await wait_for(lambda h=h: _down(session, h), timeout=WAIT, what="backend down on each replica")

            collector.stop(kill=True)
            survivor = other

            async def down_under_the_survivor() -> bool:
                return sum(1 for r, up in await collectors(redis_server.url) if replicas[r] is survivor
                           and up is False) >= 4

            # 4 snapshots of the new collector, the check down: a collector that did not see the mute
            # would have announced it by the 2nd (failures_before_down = 2).
            await wait_for(down_under_the_survivor, timeout=WAIT, what="the survivor collecting")
            assert await _muted(session, survivor, mute_id)
            assert slack.attempts == []

            async with session.delete(f"{survivor.url}/api/mutes/{mute_id}", headers=ALICE) as resp:
                assert resp.status == 200
            await wait_for(lambda: slack.delivered, timeout=WAIT, what="the down message after the mute")
            seen = len(await collectors(redis_server.url))
            await wait_for(lambda: _grown(redis_server.url, seen + 4), timeout=WAIT, what="4 more ticks")
            assert slack.texts() == [DOWN]
            assert (await health(session, survivor))["mutes"] == []
        finally:
            for h in hubs:
                h.stop()


async def _muted(session: aiohttp.ClientSession, h: HubProcess, mute_id: str) -> bool:
    mutes = (await health(session, h)).get("mutes") or []
    return [(m["id"], m["createdBy"], m["comment"]) for m in mutes] == [(mute_id, "alice", "deploy")]


async def _down(session: aiohttp.ClientSession, h: HubProcess) -> bool:
    return (await health(session, h)).get("details", {}).get("backend") is False


async def _grown(url: str, n: int) -> bool:
    return len(await collectors(url)) >= n
