"""Health transitions through Alertmanager, end to end: two `hub serve` replicas on a real Redis, both
scraped by a real Prometheus evaluating the shipped `HubHealthCheckDown` rule, sending to a real
Alertmanager whose webhook receiver is on loopback.

The rule file is the shipped one with only `HubHealthCheckDown`'s `for:` shortened (30 s would only
slow the test down): its expression, labels and annotations are what users load. The hubs have no
`[sources.alertmanager]`: they never talk to Alertmanager, every alert it notifies came from
Prometheus (its `generatorURL` says so).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.aio import wait_for
from tests.support.alertmanager import AlertmanagerServer, start_alertmanager
from tests.support.http_targets import Target, serve
from tests.support.hubproc import HubProcess
from tests.support.prom import DEPLOY_RULES_DIR, PrometheusServer, start_prometheus
from tests.support.redis import RedisServer, redis_server  # noqa: F401

ALERT = "HubHealthCheckDown"
CHECK = "backend"
INTERVAL = 0.5
#: the test's `for:` (the shipped rule has 30 s)
FOR = "3s"
#: group_wait / group_interval of the test Alertmanager
GROUP = "1s"
#: how long a duplicate notification gets to show up after the last expected one: several group
#: intervals and Prometheus resends (1 s each), which is when a second alert would be notified
QUIET = 5.0


def shipped_rules_with_short_for() -> str:
    """deploy/prometheus/hub-alerts.yml with `HubHealthCheckDown`'s `for` set to FOR, nothing else changed."""
    doc = yaml.safe_load((DEPLOY_RULES_DIR / "hub-alerts.yml").read_text())
    found = [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == ALERT]
    assert len(found) == 1 and found[0]["for"] == "30s", found
    found[0]["for"] = FOR
    return json.dumps(doc)  # JSON is YAML; PrometheusServer writes it as its rule file


def shipped_expr() -> str:
    (rule,) = [r for g in yaml.safe_load((DEPLOY_RULES_DIR / "hub-alerts.yml").read_text())["groups"]
               for r in g["rules"] if r.get("alert") == ALERT]
    return str(rule["expr"])


def notifications(am: AlertmanagerServer) -> list[dict[str, Any]]:
    """(status, labels, generatorURL) of every HubHealthCheckDown alert in every notification, in order."""
    return [{"status": a["status"], "labels": a["labels"], "generatorURL": a["generatorURL"]}
            for post in list(am.receiver.posts) for a in post["alerts"] if a["labels"].get("alertname") == ALERT]


async def leads(h: HubProcess) -> bool:
    """Whether `h` holds the collector lease (its /ready says so); off the loop, which serves the target."""
    def get() -> bool:
        with urllib.request.urlopen(h.url + "/ready", timeout=2) as resp:
            return bool(json.loads(resp.read())["cluster"]["leader"])
    return await asyncio.to_thread(get)


async def query(prom: PrometheusServer, expr: str) -> list[dict[str, Any]]:
    return (await asyncio.to_thread(prom.api, "query", query=expr))["result"]


@pytest.mark.parametrize("kill_collector", [False, True], ids=["steady", "collector-killed-mid-outage"])
async def test_a_check_down_then_recovered_is_one_firing_and_one_resolved_notification(
        tmp_path: Path, redis_server: RedisServer, kill_collector: bool) -> None:  # noqa: F811 (fixture)
    target = Target()
    hubs: list[HubProcess] = []
    am: AlertmanagerServer | None = None
    prom: PrometheusServer | None = None
    async with serve(target.app) as target_url:
        config = {
            "broadcast": {"interval": INTERVAL, "heartbeat": 5.0},
            "sources": {"prometheus": {"enabled": False}, "business": {"enabled": False},
                        "health": {"checks": {CHECK: f"{target_url}/toggle"}, "timeout": 0.3,
                                   "failures_before_down": 2}},
            "cluster": {"redis_url": redis_server.url},
        }
        try:
            hubs = [HubProcess(config, tmp_path) for _ in range(2)]
            for h in hubs:
                h.start(wait=False)
            for h in hubs:
                await asyncio.to_thread(h.wait_healthy, path="/ready")
            am = await asyncio.to_thread(start_alertmanager, tmp_path / "am", group_wait=GROUP,
                                         group_interval=GROUP, group_by=("alertname", "job", "check"))
            addresses = [h.url.removeprefix("http://") for h in hubs]
            prom = await asyncio.to_thread(start_prometheus, tmp_path / "prom", targets={"hub": addresses},
                                           rules=shipped_rules_with_short_for(), alertmanagers=[am.address])
            assert prom is not None and am is not None
            p, a = prom, am

            # Both replicas export the check's state, the follower too (it serves the same snapshots).
            async def both_up() -> list[dict[str, Any]] | None:
                got = await query(p, f'hub_health_check_up{{check="{CHECK}"}} == 1')
                return got if len(got) == 2 else None

            await wait_for(both_up, timeout=30, interval=0.5, what="both replicas exporting the check up")

            target.toggle_status = 503
            await wait_for(lambda: [n for n in notifications(a) if n["status"] == "firing"], timeout=40,
                           interval=0.2, what="the firing notification")
            down = await query(p, f'hub_health_check_up{{check="{CHECK}"}} == 0')
            assert sorted(s["metric"]["instance"] for s in down) == sorted(addresses)

            if kill_collector:
                (collector,) = [h for h in hubs if await leads(h)]
                survivor = next(h for h in hubs if h is not collector)
                killed = collector.url.removeprefix("http://")
                await asyncio.to_thread(collector.stop, kill=True)
                await wait_for(lambda: leads(survivor), timeout=15, interval=0.2,
                               what="the survivor collecting")
                # The killed replica's series went stale at its first failed scrape; an alert that
                # followed it would resolve, then fire again `for` after the new collector's first
                # down: give that its time, measured in Prometheus's own scrapes of the dead target.
                await wait_for(lambda: query(p, f'max_over_time(up{{instance="{killed}"}}[6s]) == 0'),
                               timeout=30, interval=0.5, what="6 s of failed scrapes of the killed replica")

            target.toggle_status = 200
            await wait_for(lambda: [n for n in notifications(a) if n["status"] == "resolved"], timeout=40,
                           interval=0.2, what="the resolved notification")
            # Nothing more comes: a second alert for the same outage would be notified within a few
            # group intervals of the change.
            deadline = time.monotonic() + QUIET
            while time.monotonic() < deadline and len(notifications(a)) <= 2:
                await asyncio.sleep(0.2)
            got = notifications(a)
        finally:
            for h in hubs:
                h.stop()
            if prom is not None:
                prom.kill()
            if am is not None:
                am.stop()

    assert [(n["status"], n["labels"]) for n in got] == [
        ("firing", {"alertname": ALERT, "check": CHECK, "job": "hub", "severity": "critical"}),
        ("resolved", {"alertname": ALERT, "check": CHECK, "job": "hub", "severity": "critical"}),
    ], got
    # Both came from the test Prometheus evaluating the shipped expression: the hub posted nothing to
    # Alertmanager (it has no [sources.alertmanager] at all).
    for n in got:
        url = urllib.parse.urlsplit(n["generatorURL"])
        assert (url.port, url.path) == (prom.port, "/graph"), n
        assert urllib.parse.parse_qs(url.query)["g0.expr"] == [shipped_expr()], n
