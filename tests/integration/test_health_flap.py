"""`sources.health.successes_before_up`: a check that is down needs that many good checks in a row
before it counts as up again (one recovery message); the count is stored with the check's state, so
a collector taking over continues it. The default, 1, keeps the first good check's recovery."""

from __future__ import annotations

from typing import Any

import pytest

from hub.config import ConfigError
from hub.sources.health import HealthSource
from hub.state import MemoryStore
from tests.support.aio import wait_for
from tests.support.components import config, make_health_source, make_notifier
from tests.support.http_targets import Target, serve
from tests.support.slack import Receiver
from tests.support.timing import WAIT

DOWN = "Health check failed: backend: HTTP 503"
UP = "Health check recovered: backend (down for "


async def check(src: HealthSource, target: Target, status: int) -> dict[str, Any]:
    """One collection with the service answering `status`; the check's snapshot."""
    target.toggle_status = status
    return (await src.collect(2.0)).data["health"]["checks"]["backend"]


def kinds(slack: Receiver) -> list[str]:
    return ["down" if t == DOWN else "up" if t.startswith(UP) else t for t in slack.texts()]


async def test_three_good_checks_in_a_row_before_recovery_and_one_recovery_message(slack: Receiver) -> None:
    target = Target()
    notifier = make_notifier(slack.url, retry_initial=0.05)
    await notifier.start()
    async with serve(target.app) as url:
        src = make_health_source({"backend": f"{url}/toggle"}, timeout=1.0, failures_before_down=1,
                                 successes_before_up=3, notifier=notifier)
        try:
            assert (await check(src, target, 503))["up"] is False
            ups = [(await check(src, target, s))["up"] for s in (200, 200, 503, 200, 200)]
            assert ups == [False] * 5, "a bad check in between starts the count again"
            last = await check(src, target, 200)  # the third good one in a row
            assert {k: last[k] for k in ("up", "state", "status", "error", "failures", "cert_days")} == {
                "up": True, "state": "up", "status": 200, "error": None, "failures": 0, "cert_days": None}
            for _ in range(3):
                assert (await check(src, target, 200))["up"] is True
            await wait_for(lambda: len(slack.delivered) == 2 and notifier.pending == 0, timeout=WAIT,
                           what="the down and recovery messages")
        finally:
            await src.close()
            await notifier.close()
    assert kinds(slack) == ["down", "up"]


async def test_the_default_recovers_at_the_first_good_check(slack: Receiver) -> None:
    assert config({}).sources.health.successes_before_up == 1
    target = Target()
    notifier = make_notifier(slack.url, retry_initial=0.05)
    await notifier.start()
    async with serve(target.app) as url:
        src = make_health_source({"backend": f"{url}/toggle"}, timeout=1.0, failures_before_down=1,
                                 notifier=notifier)
        try:
            assert [(await check(src, target, s))["up"] for s in (503, 200)] == [False, True]
            await wait_for(lambda: len(slack.delivered) == 2, timeout=WAIT, what="the recovery message")
        finally:
            await src.close()
            await notifier.close()
    assert kinds(slack) == ["down", "up"]


async def test_a_collector_taking_over_continues_the_count_of_good_checks(slack: Receiver) -> None:
    shared = MemoryStore()  # what Redis is to two replicas
    target = Target()
    notifiers = [make_notifier(slack.url, retry_initial=0.05) for _ in range(2)]
    for n in notifiers:
        await n.start()
    async with serve(target.app) as url:
        a, b = (make_health_source({"backend": f"{url}/toggle"}, timeout=1.0, failures_before_down=1,
                                   successes_before_up=3, notifier=n, store=shared) for n in notifiers)
        try:
            assert [(await check(a, target, s))["up"] for s in (503, 200, 200)] == [False, False, False]
            # A dies after two good checks; B's first is the third in a row: up, announced once.
            assert (await check(b, target, 200))["up"] is True
            assert (await check(b, target, 200))["up"] is True
            await wait_for(lambda: len(slack.delivered) == 2 and all(n.pending == 0 for n in notifiers),
                           timeout=WAIT, what="the down and recovery messages")
        finally:
            await a.close()
            await b.close()
            for n in notifiers:
                await n.close()
    assert kinds(slack) == ["down", "up"]


def test_successes_before_up_is_bounded_by_the_config_loader() -> None:
    for bad in (0, -1, 1001):
        with pytest.raises(ConfigError, match=r"sources\.health\.successes_before_up: must be"):
            config({"sources": {"health": {"successes_before_up": bad}}})
