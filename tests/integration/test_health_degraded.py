"""The degraded state: a check answering 2xx slower than `slow_after`, or over TLS with a certificate that
expires within `cert_warn_days`, is degraded (still up), announced once, and once again when it is up;
an expired certificate is down with its reason."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from hub.metrics import HubMetrics
from hub.sources.health import HealthSource
from tests.support.aio import wait_for
from tests.support.certs import make_ca, server_cert
from tests.support.components import make_health_source, make_notifier
from tests.support.http_targets import serve
from tests.support.slack import Receiver
from tests.support.timing import WAIT


class Slow:
    """A service answering 200 after `delay` seconds (the delay is changed between collections)."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.app = web.Application()
        self.app.router.add_get("/health", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.delay)  # the service's own slowness, the thing under test
        return web.json_response({"status": "ok"})


async def collect(src: HealthSource, name: str = "backend") -> dict[str, Any]:
    return (await src.collect(10.0)).data["health"]["checks"][name]


async def test_a_slow_answer_is_degraded_not_down_with_one_message_each_way(slack: Receiver) -> None:
    service = Slow()
    notifier = make_notifier(slack.url, retry_initial=0.05)
    await notifier.start()
    metrics = HubMetrics()
    async with serve(service.app) as url:
        src = make_health_source({"backend": {"url": f"{url}/health", "slow_after": 1.0}}, timeout=5.0,
                                 failures_before_down=1, notifier=notifier, metrics=metrics)
        try:
            service.delay = 1.5
            slow = await collect(src)
            assert (slow["state"], slow["up"], slow["status"], slow["failures"]) == ("degraded", True, 200, 0)
            assert slow["error"].startswith("slow: answered in 1.5") and slow["error"].endswith("(slow_after 1 s)")
            health = (await src.collect(10.0)).data["health"]  # still slow: no second message
            assert (health["healthy"], health["details"], health["checks"]["backend"]["state"]) == (
                True, {"backend": True}, "degraded")
            metrics.health_check_up.observe({"health": health})
            assert [metrics.registry.get_sample_value("hub_health_check_state", {"check": "backend", "state": s})
                    for s in ("up", "degraded", "down")] == [0.0, 1.0, 0.0]
            await wait_for(lambda: len(slack.delivered) == 1, timeout=WAIT, what="the degraded message")
            service.delay = 0.0
            fast = await collect(src)
            assert (fast["state"], fast["up"], fast["error"]) == ("up", True, None)
            assert (await collect(src))["state"] == "up"
            await wait_for(lambda: len(slack.delivered) == 2 and notifier.pending == 0, timeout=WAIT,
                           what="the message saying it is up again")
        finally:
            await src.close()
            await notifier.close()
    texts = slack.texts()
    assert texts[0].startswith("Health check degraded: backend: slow: answered in 1.5"), texts
    assert texts[1].startswith("Health check no longer degraded: backend (degraded for "), texts
    assert len(texts) == 2


async def test_slow_after_of_the_section_applies_to_plain_checks_and_0_is_off() -> None:
    service = Slow()
    service.delay = 0.3
    async with serve(service.app) as url:
        src = make_health_source({"backend": f"{url}/health", "other": {"url": f"{url}/health", "slow_after": 0}},
                                 timeout=5.0, failures_before_down=1, slow_after=0.2)
        try:
            health = (await src.collect(10.0)).data["health"]["checks"]
        finally:
            await src.close()
    assert (health["backend"]["state"], health["other"]["state"]) == ("degraded", "up")
    assert health["backend"]["cert_days"] is None  # http: no certificate


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("health-ca")
    make_ca(d)
    return d


async def test_a_certificate_expiring_in_5_days_is_degraded_and_an_expired_one_is_down(ca_dir: Path) -> None:
    ok = web.Application()
    ok.router.add_get("/health", _ok)
    async with serve(ok, ssl_context=server_cert(ca_dir, "soon", days=5)) as soon_url, \
            serve(ok, ssl_context=server_cert(ca_dir, "gone", days=-1)) as gone_url, \
            serve(ok, ssl_context=server_cert(ca_dir, "fine", days=40)) as fine_url:
        src = make_health_source({"soon": f"{soon_url}/health", "gone": f"{gone_url}/health",
                                  "fine": f"{fine_url}/health"}, timeout=5.0, failures_before_down=1,
                                 ca_file=str(ca_dir / "ca.pem"))
        try:
            health = (await src.collect(10.0)).data["health"]
        finally:
            await src.close()
    soon, gone, fine = (health["checks"][n] for n in ("soon", "gone", "fine"))
    assert (soon["state"], soon["up"], soon["status"]) == ("degraded", True, 200)
    assert 4.9 < soon["cert_days"] <= 5.0
    assert soon["error"] == f"TLS certificate expires in {soon['cert_days']:.1f} days (warning at 14)"
    assert (gone["state"], gone["up"], gone["cert_days"]) == ("down", False, None)
    assert gone["error"] == "TLS certificate verification failed (certificate has expired)"
    assert (fine["state"], fine["error"]) == ("up", None) and 39.9 < fine["cert_days"] <= 40.0
    assert health["details"] == {"soon": True, "gone": False, "fine": True} and health["healthy"] is False
    metrics = HubMetrics()
    metrics.health_check_up.observe({"health": health})
    assert metrics.registry.get_sample_value("hub_health_check_cert_days", {"check": "soon"}) == soon["cert_days"]
    assert metrics.registry.get_sample_value("hub_health_check_cert_days", {"check": "gone"}) is None
    assert metrics.registry.get_sample_value("hub_health_check_state", {"check": "gone", "state": "down"}) == 1.0


async def _ok(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})
