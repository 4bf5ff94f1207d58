"""The health source against real local servers: 200, 503, slow, redirect, TLS with a private CA, closed port."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import generate_latest

from hub.metrics import HubMetrics
from tests.support.aio import wait_for
from hub.config import ConfigError
from tests.support.components import make_health_source
from tests.support import free_port
from tests.support.mongo import MongoServer, mongo_server_fn  # noqa: F401  (fixture)
from tests.support.prom import start_prometheus
from tests.support.http_targets import Target, serve
from tests.support.tls import make_private_ca, server_context
from tests.support.prom import DEPLOY_RULES_DIR as DEPLOY


@pytest.fixture
async def target() -> AsyncIterator[tuple[Target, str]]:
    t = Target()
    try:
        async with serve(t.app) as url:
            yield t, url
    finally:
        t.release.set()


# ---------------------------------------------------------------------- a private CA (openssl CLI)


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A throwaway CA and a server certificate for localhost/127.0.0.1 signed by it."""
    yield make_private_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
async def tls_url(private_ca: dict[str, Path]) -> AsyncIterator[str]:
    async with serve(Target().app, ssl_context=server_context(private_ca)) as url:
        yield url


# ---------------------------------------------------------------------- tests


async def test_each_failure_has_a_readable_reason(target: tuple[Target, str], tls_url: str) -> None:
    _t, url = target
    closed = free_port()
    src = make_health_source({"ok": f"{url}/ok", "fail": f"{url}/fail", "slow": f"{url}/slow",
                               "moved": f"{url}/moved", "closed": f"http://127.0.0.1:{closed}/health",
                               "tls_unknown_ca": f"{tls_url}/ok"},
                       timeout=0.5, failures_before_down=1)
    await src.start()
    try:
        t0 = time.monotonic()
        res = await src.collect(5.0)
        took = time.monotonic() - t0
    finally:
        await src.close()
    h = res.data["health"]
    c = h["checks"]
    assert took < 2.0, f"checks must run concurrently within the timeout, took {took:.2f} s"
    assert h["healthy"] is False
    assert h["details"] == {"ok": True, "fail": False, "slow": False, "moved": False, "closed": False,
                            "tls_unknown_ca": False}
    assert c["ok"]["status"] == 200 and c["ok"]["error"] is None and c["ok"]["latency_ms"] is not None
    assert c["fail"]["status"] == 503 and c["fail"]["error"] == "HTTP 503"
    assert c["fail"]["latency_ms"] is not None  # an answer arrived, it was just a bad one
    assert c["slow"]["error"] == "timed out after 0.5 s" and c["slow"]["status"] is None
    assert c["slow"]["latency_ms"] is None
    assert c["moved"]["status"] == 302 and c["moved"]["error"] == "HTTP 302 (redirect not followed)"
    assert c["closed"]["error"] == "connection refused"
    assert c["tls_unknown_ca"]["error"] == ("TLS certificate verification failed "
                                            "(unable to get local issuer certificate)")
    for name, check in c.items():
        assert check["failures"] == (0 if name == "ok" else 1)
        assert check["since"].endswith("Z")


async def test_private_ca_file_makes_tls_check_pass(private_ca: dict[str, Path], tls_url: str) -> None:
    # the shared CA's certificates last 2 days: a warning at 1 day keeps this check "up"
    src = make_health_source({"tls": f"{tls_url}/ok"}, ca_file=str(private_ca["ca"]), timeout=2.0, cert_warn_days=1)
    try:
        res = await src.collect(5.0)
    finally:
        await src.close()
    check = res.data["health"]["checks"]["tls"]
    assert 1.9 < check["cert_days"] <= 2.0
    assert {k: check[k] for k in ("up", "state", "status", "error", "failures")} == {
        "up": True, "state": "up", "status": 200, "error": None, "failures": 0}


async def test_budget_below_timeout_bounds_each_check(target: tuple[Target, str]) -> None:
    _t, url = target
    src = make_health_source({"slow": f"{url}/slow"}, timeout=5.0, failures_before_down=1)
    try:
        t0 = time.monotonic()
        res = await src.collect(0.3)
        took = time.monotonic() - t0
    finally:
        await src.close()
    assert res.data["health"]["checks"]["slow"]["error"] == "timed out after 0.3 s"
    assert took < 1.0


async def test_down_only_after_n_failures_and_up_at_first_success(target: tuple[Target, str]) -> None:
    t, url = target
    metrics = HubMetrics()
    src = make_health_source({"frontend": f"{url}/toggle"}, timeout=1.0, failures_before_down=3, metrics=metrics)

    def gauge(name: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"check": "frontend"})

    async def collect() -> dict[str, Any]:
        """One collection, served as a publisher serves it (hub_health_check_up follows served snapshots)."""
        data = (await src.collect(2.0)).data
        metrics.health_check_up.observe(data)
        return data

    try:
        first = (await collect())["health"]["checks"]["frontend"]
        assert first["up"] and first["failures"] == 0
        t.toggle_status = 503
        for n in (1, 2):
            c = (await collect())["health"]["checks"]["frontend"]
            # failing, but not yet down: the reason shows, the state does not flip
            assert (c["up"], c["failures"], c["error"], c["since"]) == (True, n, "HTTP 503", first["since"])
            assert gauge("hub_health_check_up") == 1
        h = (await collect())["health"]
        c = h["checks"]["frontend"]
        assert (c["up"], c["failures"], h["healthy"], h["details"]) == (False, 3, False, {"frontend": False})
        assert c["since"] >= first["since"]
        assert gauge("hub_health_check_up") == 0
        assert gauge("hub_health_check_latency_seconds") is not None
        t.toggle_status = 204
        c = (await collect())["health"]["checks"]["frontend"]
        assert (c["up"], c["failures"], c["error"], c["status"]) == (True, 0, None, 204)
        assert gauge("hub_health_check_up") == 1
    finally:
        await src.close()


async def test_url_passwords_never_reach_errors_or_logs(target: tuple[Target, str],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # httpx logs request URLs (with passwords) at INFO
    _t, url = target
    port = url.rsplit(":", 1)[1]
    src = make_health_source({"a": f"http://ops:pa55word-x@127.0.0.1:{port}/fail",
                               "b": f"http://ops:pa55word-x@127.0.0.1:{free_port()}/x",
                               "c": "http://ops:pa55word-x@name-that-does-not-resolve.invalid/x"},
                       timeout=2.0, failures_before_down=1)
    try:
        res = await src.collect(3.0)
    finally:
        await src.close()
    assert "pa55word-x" not in repr(res)
    assert "HTTP Request" in caplog.text  # the filter rewrites httpx's record, it does not drop it
    assert "pa55word-x" not in caplog.text


def test_bad_settings_are_named_by_the_config_loader() -> None:
    # The loader is the one place that validates: the source takes its config as given.
    with pytest.raises(ConfigError, match=r"sources.health.checks.web"):
        make_health_source({"web": "ftp://host/x"})
    with pytest.raises(ConfigError, match=r"sources.health.failures_before_down"):
        make_health_source({"web": "http://x/"}, failures_before_down=0)
    with pytest.raises(ConfigError, match=r"sources.health.checks.database: the name is taken"):
        make_health_source({"database": "http://x/"}, database_ping=lambda: asyncio.sleep(0))
    with pytest.raises(ConfigError, match=r"sources.health.checks.web") as exc:
        make_health_source({"web": "gopher://u:secret-pw@host/x"})
    assert "secret-pw" not in str(exc.value)


async def test_metrics_exposition_has_the_gauges(target: tuple[Target, str]) -> None:
    _t, url = target
    metrics = HubMetrics()
    src = make_health_source({"backend": f"{url}/fail"}, failures_before_down=1, metrics=metrics)
    try:
        metrics.health_check_up.observe((await src.collect(2.0)).data)  # as the publisher does with it
    finally:
        await src.close()
    text = generate_latest(metrics.registry).decode()
    assert 'hub_health_check_up{check="backend"} 0.0' in text
    assert 'hub_health_check_latency_seconds{check="backend"}' in text


# ---------------------------------------------------------------------- database check (real SecantusDB)


async def test_database_check_pings_mongodb_and_follows_it_down_and_up(mongo_server_fn: MongoServer) -> None:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server_fn.uri, serverSelectionTimeoutMS=500)

    async def ping() -> None:  # what the lead wires: a ping of the business source's client
        await client.admin.command("ping")

    # The config needs one HTTP check at least; this one is refused at once and plays no part.
    src = make_health_source({"web": "http://127.0.0.1:9/"}, database_ping=ping, timeout=2.0, failures_before_down=1)
    try:
        h = (await src.collect(3.0)).data["health"]
        assert h["details"]["database"] is True and h["checks"]["database"]["latency_ms"] is not None
        mongo_server_fn.kill()
        c = (await src.collect(3.0)).data["health"]["checks"]["database"]
        assert c["up"] is False and c["status"] is None and c["latency_ms"] is None
        assert c["error"].startswith("database ping failed: ") or c["error"] == "timed out after 2 s", c
        assert len(c["error"]) <= 300
        mongo_server_fn.start()

        async def up_again() -> bool:
            return (await src.collect(3.0)).data["health"]["details"]["database"]

        await wait_for(up_again, timeout=20, interval=0.1, what="the database check to recover")
    finally:
        await src.close()
        await client.close()


# ---------------------------------------------------------------------- a real Prometheus fires the alert


async def test_prometheus_fires_hub_health_check_down(target: tuple[Target, str], tmp_path: Path) -> None:
    """A real Prometheus with deploy/prometheus/hub-alerts.yml scrapes a /metrics fed by the source.

    The lead wires /metrics into create_app; this serves the same HubMetrics registry from a tiny
    aiohttp app, which is all Prometheus sees of the hub anyway.
    """
    _t, url = target
    metrics = HubMetrics()
    src = make_health_source({"frontend": f"{url}/fail", "backend": f"{url}/ok"}, failures_before_down=1,
                       metrics=metrics)

    async def exposition(_r: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", exposition)
    prom = None
    try:
        metrics.health_check_up.observe((await src.collect(2.0)).data)  # as the publisher does with it
        async with serve(app) as hub_url:
            prom = await asyncio.to_thread(
                start_prometheus, tmp_path / "prom", targets={"hub": [hub_url.removeprefix("http://")]},
                extra_rule_files=[DEPLOY / "hub-alerts.yml"])

            async def alerts(state: str) -> list[dict[str, Any]]:
                data = await asyncio.to_thread(prom.api, "alerts")
                return [a for a in data["alerts"]
                        if a["labels"]["alertname"] == "HubHealthCheckDown" and a["state"] == state]

            pending = await wait_for(lambda: alerts("pending"), timeout=20, interval=0.5, what="pending")
            firing = await wait_for(lambda: alerts("firing"), timeout=60, interval=0.5,
                                    what="HubHealthCheckDown firing")
    finally:
        await src.close()
        if prom is not None:
            prom.kill()
    assert [a["labels"]["check"] for a in pending] == ["frontend"]
    assert [(a["labels"]["check"], a["labels"]["severity"], a["labels"]["job"]) for a in firing] == [
        ("frontend", "critical", "hub")]


# ---------------------------------------------------------------------- the demo's simulator


async def test_simulator_health_endpoints_fail_during_its_incidents() -> None:
    import random

    from hub_demo.simulator import _Backend, _serve_metrics

    backend = _Backend(random.Random(1))
    # the first frontend outage is scheduled within the demo's first minutes
    assert 40 <= backend.next_outage - time.monotonic() <= 80
    port = free_port()
    runner = await _serve_metrics(backend, "127.0.0.1", port)
    src = make_health_source({"frontend": f"http://127.0.0.1:{port}/health",
                               "backend": f"http://127.0.0.1:{port}/api/health"}, failures_before_down=1)

    async def details() -> dict[str, bool]:
        return (await src.collect(2.0)).data["health"]["details"]

    try:
        assert await details() == {"frontend": True, "backend": True}
        backend.next_outage = time.monotonic()  # the outage is due: the next traffic batch starts it
        backend.traffic(0.0, 0.25)
        assert await details() == {"frontend": False, "backend": True}
        backend.outage_until = 0.0
        backend.incident_until = time.monotonic() + 60  # a latency incident
        assert await details() == {"frontend": True, "backend": False}
        assert (await src.collect(2.0)).data["health"]["checks"]["backend"]["error"] == "HTTP 503"
    finally:
        await src.close()
        await runner.cleanup()
