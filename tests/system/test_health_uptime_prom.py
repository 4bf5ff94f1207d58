"""Uptime figures from Prometheus (`self_job`), and the fall back to the hub's record when it cannot answer.

A real Prometheus scrapes, under the job "hub", an exporter that serves fixed `hub_health_check_up` and
`hub_health_check_latency_seconds` samples for the check "api" (what a hub exports), so its answers are
known; the check "new" has no series there. The page-level test with a real `hub serve` is
tests/system/test_restart_page.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from hub.sources.health_prom import EVAL_LAG_S
from tests.support.aio import wait_for
from tests.support.components import make_health_source
from tests.support.http_targets import Target, serve
from tests.support.prom import start_prometheus

pytestmark = pytest.mark.timeout(90)

EXPORT = (b'hub_health_check_up{check="api"} 1\n'
          b'hub_health_check_up{check="other"} 0\n'
          b'hub_health_check_latency_seconds{check="api"} 0.25\n')


def exporter() -> web.Application:
    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=EXPORT, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


async def test_uptime_comes_from_prometheus_where_it_has_the_check_and_from_the_hub_otherwise(
        tmp_path: Path, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="hub.sources.health")
    target = Target()
    async with serve(exporter()) as exported, serve(target.app) as url:
        prom = await asyncio.to_thread(start_prometheus, tmp_path / "prom",
                                       targets={"hub": [exported.removeprefix("http://")]})
        try:
            # The hub reads the figures as of EVAL_LAG_S ago: a scrape at least that old is needed.
            await wait_for(lambda: asyncio.to_thread(lambda: prom.api(
                "query", query='count_over_time(hub_health_check_up{job="hub"}[1m])',
                time=f"{time.time() - EVAL_LAG_S - 1:.3f}")["result"]),
                timeout=30, interval=0.2, what="a scrape of the exporter older than EVAL_LAG_S")
            src = make_health_source({"api": f"{url}/ok", "new": f"{url}/fail"}, timeout=2.0,
                                     failures_before_down=1,
                                     prometheus={"url": prom.url, "self_job": "hub", "timeout": 2.0})
            try:
                await src.collect(5.0)  # starts the refresh in the background, shows the hub's figures
                checks = await wait_for(lambda: _prom_checks(src), timeout=30, interval=0.2,
                                        what="the figures from Prometheus")
                api, new = checks["api"], checks["new"]
                at = api["uptime"]["at"]
                assert api["uptime"] == {"24h": 1.0, "7d": 1.0, "30d": 1.0, "source": "prometheus",
                                         "since": api["uptime"]["since"], "at": at}
                assert api["p95_ms"] == {"24h": 250.0, "7d": 250.0, "30d": 250.0}
                # Prometheus has nothing of "new": the hub's own record (this process's two ticks, down).
                assert new["uptime"]["source"] == "hub" and new["uptime"]["24h"] == 0.0
                assert "other" not in checks   # a check not configured here is not shown

                # Prometheus gone: the next refresh fails, and the hub's own figures are shown, logged once.
                await asyncio.to_thread(prom.kill)
                for _ in range(2):
                    await src._prom_uptime.refresh()  # type: ignore[union-attr]  # what the next minute does
                    api = (await src.collect(5.0)).data["health"]["checks"]["api"]
                    assert api["uptime"]["source"] == "hub" and "at" not in api["uptime"]
                    assert api["uptime"]["24h"] == 1.0   # this process's ticks, all up
                lines = [r.getMessage() for r in caplog.records if r.name == "hub.sources.health"
                         and "uptime figures" in r.getMessage()]
                assert len(lines) == 1, lines
                assert lines[0].startswith("health: cannot read the uptime figures from Prometheus (cannot reach "
                                           f"Prometheus at {prom.url}: "), lines
                assert lines[0].endswith("); showing the hub's own"), lines
            finally:
                await src.close()
        finally:
            await asyncio.to_thread(prom.kill)


async def _prom_checks(src: Any) -> dict[str, Any] | None:
    checks = (await src.collect(5.0)).data["health"]["checks"]
    return checks if checks["api"]["uptime"]["source"] == "prometheus" else None
