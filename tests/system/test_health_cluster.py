"""Health transitions announced once cluster-wide: the Redis state store, and two real `hub serve`
replicas whose collector is SIGKILLed during an outage.

Slack is a local https receiver whose certificate (a private CA, made with the openssl CLI) the hubs
trust through SSL_CERT_FILE; the checked service is a local target toggled between 200 and 503.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from hub.state import LEDGER_TTL, StoreUnavailable
from tests.support.aio import wait_for
from tests.support.components import make_notifier, make_health_source, make_redis_store
from tests.support.hubproc import HubProcess
from tests.support.http_targets import Target, serve
from tests.support.redis import RedisServer, redis_server, start_redis  # noqa: F401
from tests.support.slack import Receiver, slack_receiver
from tests.support.tls import make_private_ca, server_context

INTERVAL = 0.5
DOWN = "Health check failed: backend: HTTP 503"
UP = "Health check recovered: backend"


# ----------------------------------------------------------------------------- the Redis store


async def test_redis_store_is_shared_and_its_ledger_keys_expire(redis_server: RedisServer) -> None:
    a = make_redis_store(redis_server.url)
    b = make_redis_store(redis_server.url)  # another replica
    r = Redis.from_url(redis_server.url)
    try:
        assert await a.claim("health:backend:down:2026-01-01T00:00:00.000Z") is True
        assert await b.claim("health:backend:down:2026-01-01T00:00:00.000Z") is False
        ttl = await r.ttl("{hub}:ledger:health:backend:down:2026-01-01T00:00:00.000Z")
        assert 0 < ttl <= LEDGER_TTL
        await a.save("health", {"backend": {"up": False, "failures": 3}})
        await b.save("health", {"frontend": {"up": True, "failures": 0}})
        assert await b.load("health") == {"backend": {"up": False, "failures": 3},
                                          "frontend": {"up": True, "failures": 0}}
        assert await r.type("{hub}:state:health") == b"hash"  # under the cluster's hash tag
    finally:
        await a.close()
        await b.close()
        await r.aclose()


async def test_an_unreachable_redis_is_a_clean_error_without_the_password(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis", password="state-pass-123")
    store = make_redis_store(server.url)
    try:
        assert await store.claim("k") is True
        server.stop()
        for call in (store.load("health"), store.save("health", {"a": {}}), store.claim("k2")):
            with pytest.raises(StoreUnavailable) as exc:
                await call
            assert str(exc.value).startswith("Redis: ") and "state-pass-123" not in str(exc.value)
        server.start()  # back, empty: the store reconnects by itself
        assert await store.claim("k") is True
    finally:
        await store.close()
        server.stop()


async def test_claims_stay_pending_while_redis_is_down_and_go_out_once_when_back(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hub.sources.health")
    target = Target()
    async with serve(target.app) as url, slack_receiver() as slack:
        store = make_redis_store(redis_server.url)
        notifier = make_notifier(slack.url, retry_initial=0.05)
        src = make_health_source({"backend": f"{url}/toggle"}, timeout=1.0, failures_before_down=2,
                           notifier=notifier, store=store)
        await notifier.start()
        try:
            await src.collect(2.0)
            target.toggle_status = 503
            redis_server.stop()
            for _ in range(4):  # down at the 2nd collection, with nowhere to claim it
                await src.collect(2.0)
            assert notifier.pending == 0 and slack.attempts == []
            assert caplog.text.count("state store unavailable") == 1
            redis_server.start()  # empty: the states are written back from this process
            for _ in range(3):
                await src.collect(2.0)
            target.toggle_status = 200
            await src.collect(2.0)
            await wait_for(lambda: len(slack.delivered) >= 2, timeout=10, what="the recovery message")
        finally:
            await src.close()
            await notifier.close()
            await store.close()
    assert kinds(slack) == ["down", "up"]
    assert "state store reachable again" in caplog.text


# ----------------------------------------------------------------------------- two replicas


def kinds(slack: Receiver) -> list[str]:
    return ["down" if t.startswith(DOWN) else "up" if t.startswith(UP) else t for t in slack.texts()]


async def stream(url: str) -> list[dict[str, Any]]:
    """(seq, replica, backend up) of every snapshot in the stream, oldest first."""
    r = Redis.from_url(url)
    try:
        entries = await r.xrange("{hub}:snapshots")
    finally:
        await r.aclose()
    out = []
    for _id, f in entries:
        health = (orjson.loads(f[b"data"])["data"].get("health") or {}).get("details") or {}
        out.append({"seq": int(f[b"seq"]), "replica": f[b"replica"].decode(), "up": health.get("backend")})
    return out


async def test_one_down_and_one_recovery_message_across_a_collector_killed_mid_outage(
        tmp_path: Path, redis_server: RedisServer) -> None:
    ca = make_private_ca(tmp_path)
    target = Target()
    hubs: list[HubProcess] = []
    async with serve(target.app) as target_url, slack_receiver(ssl_context=server_context(ca)) as slack:
        config = {
            "broadcast": {"interval": INTERVAL, "heartbeat": 5.0},
            "sources": {"prometheus": {"enabled": False}, "business": {"enabled": False},
                        "health": {"checks": {"backend": f"{target_url}/toggle"}, "timeout": 0.3,
                                   "failures_before_down": 2}},
            "cluster": {"redis_url": redis_server.url},
            "notify": {"slack_webhook_url": slack.url},
        }
        try:
            hubs = [HubProcess(config, tmp_path, env={"SSL_CERT_FILE": str(ca["ca"])}) for _ in range(2)]
            for h in hubs:
                h.start(wait=False)
            for h in hubs:
                await asyncio.to_thread(h.wait_healthy, path="/ready")
            entries = await wait_for(lambda: stream(redis_server.url), what="snapshots")
            collector = entries[-1]["replica"]

            target.toggle_status = 503
            await wait_for(lambda: slack.delivered, timeout=15, what="the down message")
            entries = await wait_for(lambda: _latest_down(redis_server.url), what="a snapshot showing it down")
            assert entries[-1]["replica"] == collector

            # SIGKILL the collector during the outage; the other replica takes over.
            killed = next(h for h in hubs if get_replica(h) == collector)
            killed.stop(kill=True)

            async def down_under_the_new_collector() -> list[dict[str, Any]]:
                return [e for e in await stream(redis_server.url) if e["replica"] != collector and e["up"] is False]

            # A collector that forgot the outage would announce it again at its 2nd failed check
            # (failures_before_down = 2): wait for 4 of the new collector's snapshots showing it down.
            await wait_for(lambda: _at_least(down_under_the_new_collector, 4), timeout=15,
                           what="4 snapshots of the new collector")

            target.toggle_status = 200
            # Its recovery message is queued behind any repeated down message: once it arrived, a
            # repeat would have too.
            await wait_for(lambda: any(k == "up" for k in kinds(slack)), timeout=15, what="the recovery message")
            assert kinds(slack) == ["down", "up"], slack.texts()
            assert "(down for " in slack.texts()[1]
        finally:
            for h in hubs:
                h.stop()


def get_replica(h: HubProcess) -> str:
    with urllib.request.urlopen(h.url + "/ready", timeout=2) as resp:
        return orjson.loads(resp.read())["cluster"]["replica"]


async def _at_least(fetch: Any, n: int) -> list[dict[str, Any]] | None:
    got = await fetch()
    return got if len(got) >= n else None


async def _latest_down(url: str) -> list[dict[str, Any]] | None:
    got = await stream(url)
    return got if got and got[-1]["up"] is False else None
