"""`notify.repeat_interval`: reminders on every direct channel while a check stays down, on schedule,
none after recovery, none with 0, and continued (neither skipped nor repeated) by a collector that
takes over from the states and ledger another one stored.

Slack and PagerDuty are local https stand-ins (tests/support/slack.py, tests/support/pagerduty.py).
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Callable
from typing import Any

from hub.app import create_app
from hub.context import HUB
from hub.sources.health import HealthSource
from hub.state import MemoryStore, StoreUnavailable
from tests.support.aio import TEST_BASE, merge, wait_for
from tests.support.components import config, make_health_source, make_notifier_from
from tests.support.http_targets import Target, serve
from tests.support.notify import kinds
from tests.support.pagerduty import ROUTING_KEY, pagerduty_receiver
from tests.support.slack import slack_receiver
from tests.support.timing import SLACK, WAIT

REPEAT = 1.0
TICK = 0.2


def _ts(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(event["payload"]["timestamp"]).timestamp()


async def test_reminders_on_schedule_on_slack_and_pagerduty_and_none_after_recovery(aiohttp_client: Any) -> None:
    target = Target()
    target.toggle_status = 503
    async with serve(target.app) as url, slack_receiver() as slack, pagerduty_receiver() as pd:
        cfg = config(merge(TEST_BASE, {
            "broadcast": {"interval": TICK},
            "sources": {"health": {"enabled": True, "checks": {"backend": f"{url}/toggle"}, "timeout": 1.0,
                                   "failures_before_down": 1}},
            "notify": {"slack_webhook_url": slack.url, "pagerduty_routing_key": ROUTING_KEY,
                       "pagerduty_url": pd.url, "repeat_interval": REPEAT}}))
        client = await aiohttp_client(create_app(cfg))
        hub = client.app[HUB]
        await wait_for(lambda: kinds(slack)[:4] == ["down", "r1", "r2", "r3"] and len(pd.events) >= 4,
                       timeout=WAIT, what="the down message and three reminders")
        target.toggle_status = 200
        await wait_for(lambda: "up" in kinds(slack) and pd.events[-1]["event_action"] == "resolve",
                       timeout=WAIT, what="the recovery on both channels")
        recovered, seq = time.monotonic(), hub.feed.seq
        # Two reminder intervals and at least 10 ticks after the recovery: no reminder may follow it.
        await wait_for(lambda: time.monotonic() - recovered >= 2 * REPEAT and hub.feed.seq >= seq + 10,
                       timeout=WAIT, what="ticks after the recovery")

    got = kinds(slack)
    n = len(got) - 2
    assert got == ["down", *[f"r{i}" for i in range(1, n + 1)], "up"], got
    assert pd.invalid == []
    actions = pd.actions()
    assert actions == [("trigger", "backend", "hub/health/backend")] * (n + 1) + [("resolve", "", "hub/health/backend")]
    triggers = pd.events[:-1]
    assert [e["payload"]["custom_details"].get("reminder") for e in triggers] == [None, *range(1, n + 1)]
    times = [_ts(e) for e in triggers]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Never sooner than repeat_interval after the last message; late by at most a tick (plus scheduling).
    assert all(REPEAT - 0.002 <= g <= REPEAT + TICK + SLACK for g in gaps), gaps


async def test_no_reminder_with_repeat_interval_0_the_default(aiohttp_client: Any) -> None:
    target = Target()
    target.toggle_status = 503
    async with serve(target.app) as url, slack_receiver() as slack:
        cfg = config(merge(TEST_BASE, {
            "broadcast": {"interval": TICK},
            "sources": {"health": {"enabled": True, "checks": {"backend": f"{url}/toggle"}, "timeout": 1.0,
                                   "failures_before_down": 1}},
            "notify": {"slack_webhook_url": slack.url}}))
        assert cfg.notify.repeat_interval == 0
        client = await aiohttp_client(create_app(cfg))
        hub = client.app[HUB]
        await wait_for(lambda: slack.delivered, timeout=WAIT, what="the down message")
        down, seq = time.monotonic(), hub.feed.seq
        await wait_for(lambda: time.monotonic() - down >= 3 * REPEAT and hub.feed.seq >= seq + 15,
                       timeout=WAIT, what="15 ticks of the outage")
    assert kinds(slack) == ["down"]


# ----------------------------------------------------------------------------- two collectors, one store


class FlakyStore(MemoryStore):
    """The shared store as one collector sees it: `claim` fails while `down` (its link to Redis broken)."""

    def __init__(self, shared: MemoryStore) -> None:
        self.shared, self.down = shared, False

    async def load(self, scope: str) -> dict[str, dict[str, Any]]:
        return await self.shared.load(scope)

    async def save(self, scope: str, states: Any) -> None:
        await self.shared.save(scope, states)

    async def claim(self, key: str) -> bool:
        if self.down:
            raise StoreUnavailable("Redis: connection lost")
        return await self.shared.claim(key)


async def collect_until(src: HealthSource, pred: Callable[[], Any], what: str) -> None:
    """Collect every 50 ms (a fast tick) until `pred()` holds."""
    async def step() -> Any:
        await src.collect(2.0)
        return pred()
    await wait_for(step, timeout=WAIT, interval=0.05, what=what)


async def test_a_collector_taking_over_continues_the_reminders_neither_skipping_nor_repeating_one() -> None:
    shared = MemoryStore()  # what Redis is to two replicas
    target = Target()
    target.toggle_status = 503
    async with serve(target.app) as url, slack_receiver() as slack:
        sources, notifiers, stores = [], [], []
        for _ in range(2):  # collectors A and B, each with its own notifier, as two processes have
            notifier = make_notifier_from({"slack_webhook_url": slack.url, "repeat_interval": 0.5},
                                          retry_initial=0.05)
            store = FlakyStore(shared)
            sources.append(make_health_source({"backend": f"{url}/toggle"}, timeout=1.0, failures_before_down=1,
                                              notifier=notifier, store=store))
            notifiers.append(notifier)
            stores.append(store)
            await notifier.start()
        a, b = sources
        try:
            await collect_until(a, lambda: kinds(slack) == ["down", "r1", "r2"], "A's down message and 2 reminders")
            # A stores reminder 3 pending, then loses the store before it can claim it, and dies.
            stores[0].down = True
            await collect_until(a, lambda: a._states.states["backend"].pending, "A's unclaimed reminder 3")
            assert (await shared.load("health"))["backend"]["pending"][0] | {"ts": 0, "down_for": 0} == {
                "kind": "reminder", "outage": a._states.states["backend"].outage, "n": 3, "ts": 0,
                "reason": "HTTP 503", "down_for": 0}
            # B takes over from the stored state: reminder 3 (claimed by nobody) goes out, then 4 when due.
            await collect_until(b, lambda: len(slack.delivered) >= 5, "B's reminders 3 and 4")
            target.toggle_status = 200
            await collect_until(b, lambda: "up" in kinds(slack), "the recovery")
            await wait_for(lambda: notifiers[1].pending == 0, what="an idle notifier")
        finally:
            for s in sources:
                await s.close()
            for n in notifiers:
                await n.close()
    got = kinds(slack)
    assert got[:5] == ["down", "r1", "r2", "r3", "r4"] and got[-1] == "up", got
    assert got == ["down", *[f"r{i}" for i in range(1, len(got) - 1)], "up"], got
