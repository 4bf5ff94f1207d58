"""`notify.repeat_interval` across a collector failover: two real `hub serve` replicas on a real Redis,
the collector SIGKILLed between two reminders; the other replica sends the next reminder when it is
due from the last one recorded, so the reminders on Slack and PagerDuty are numbered 1, 2, 3, ...
with none skipped and none repeated, each no sooner than repeat_interval after the one before.

Slack and PagerDuty are local https stand-ins whose certificate (a private CA, made with the openssl
CLI) the hubs trust through SSL_CERT_FILE; the checked service is a local target toggled 200/503.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
import urllib.request
from pathlib import Path

import orjson

from tests.support.aio import wait_for
from tests.support.http_targets import Target, serve
from tests.support.hubproc import HubProcess
from tests.support.notify import kinds
from tests.support.pagerduty import ROUTING_KEY, PagerDuty, pagerduty_receiver
from tests.support.redis import RedisServer, redis_server  # noqa: F401
from tests.support.slack import slack_receiver
from tests.support.timing import SLACK, WAIT
from tests.support.tls import make_private_ca, server_context

INTERVAL = 0.5
REPEAT = 2.0


def reminders(pd: PagerDuty) -> list[int]:
    return [e["payload"]["custom_details"]["reminder"] for e in pd.events
            if e["event_action"] == "trigger" and "reminder" in e["payload"]["custom_details"]]


def collecting(hubs: list[HubProcess]) -> HubProcess | None:
    """The replica holding the lease, per its /ready."""
    for h in hubs:
        with urllib.request.urlopen(h.url + "/ready", timeout=2) as resp:
            if orjson.loads(resp.read())["cluster"]["leader"] is True:
                return h
    return None


async def test_reminders_continue_across_a_collector_killed_mid_outage_neither_skipped_nor_repeated(
        tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811 - the fixture
    ca = make_private_ca(tmp_path)
    target = Target()
    target.toggle_status = 503
    hubs: list[HubProcess] = []
    async with (serve(target.app) as target_url, slack_receiver(ssl_context=server_context(ca)) as slack,
                pagerduty_receiver(ssl_context=server_context(ca)) as pd):
        config = {
            "broadcast": {"interval": INTERVAL, "heartbeat": 5.0},
            "sources": {"prometheus": {"enabled": False}, "business": {"enabled": False},
                        "health": {"checks": {"backend": f"{target_url}/toggle"}, "timeout": 0.3,
                                   "failures_before_down": 1}},
            "cluster": {"redis_url": redis_server.url},
            "notify": {"slack_webhook_url": slack.url, "pagerduty_routing_key": ROUTING_KEY,
                       "pagerduty_url": pd.url, "repeat_interval": REPEAT},
        }
        try:
            hubs = [HubProcess(config, tmp_path, env={"SSL_CERT_FILE": str(ca["ca"])}) for _ in range(2)]
            for h in hubs:
                h.start(wait=False)
            for h in hubs:
                await asyncio.to_thread(h.wait_healthy, path="/ready")
            await wait_for(lambda: kinds(slack)[:2] == ["down", "r1"] and reminders(pd) == [1], timeout=WAIT,
                           what="the down message and the first reminder")
            # Kill the collector right after reminder 1, well before reminder 2 is due.
            killed = await wait_for(lambda: asyncio.to_thread(collecting, hubs), what="the collector")
            killed.stop(kill=True)
            killed_at = time.monotonic()
            await wait_for(lambda: len(reminders(pd)) >= 3 and len(kinds(slack)) >= 4, timeout=WAIT,
                           what="reminders 2 and 3 from the new collector")
            survivor = next(h for h in hubs if h is not killed)
            assert collecting([survivor]) is survivor
            target.toggle_status = 200
            await wait_for(lambda: "up" in kinds(slack) and pd.events[-1]["event_action"] == "resolve",
                           timeout=WAIT, what="the recovery on both channels")
            recovered = time.monotonic()
            await wait_for(lambda: time.monotonic() - recovered >= REPEAT + 2 * INTERVAL, timeout=WAIT,
                           what="a reminder interval after the recovery", interval=0.1)
        finally:
            for h in hubs:
                h.stop()

    got = kinds(slack)
    n = len(got) - 2
    assert n >= 3 and got == ["down", *[f"r{i}" for i in range(1, n + 1)], "up"], got
    assert reminders(pd) == list(range(1, n + 1))
    assert pd.invalid == [] and {e["dedup_key"] for e in pd.events} == {"hub/health/backend"}
    assert [e["event_action"] for e in pd.events] == ["trigger"] * (n + 1) + ["resolve"]
    # Each reminder no sooner than repeat_interval after the message before it, the one after the
    # failover included; and none late by more than the failover (a lease, one interval) and a tick.
    stamps = [dt.datetime.fromisoformat(e["payload"]["timestamp"]).timestamp() for e in pd.events[:-1]]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(REPEAT - 0.002 <= g <= REPEAT + 3 * INTERVAL + SLACK for g in gaps), (gaps, killed_at)
