"""PagerDuty Events API v2 against a local https stand-in that checks each event's schema
(`tests/support/pagerduty.py`): trigger on down, resolve on recovery, one dedup_key per check,
429/5xx retried (Retry-After honoured), 400 not retried, and the routing key kept secret."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import generate_latest

from hub.config import ConfigError, secrets_of
from hub.metrics import HubMetrics
from hub.notify import Notification, pagerduty_event
from tests.support.aio import wait_for
from tests.support.components import config, make_health_source, make_notifier_from
from tests.support.http_targets import Target, serve
from tests.support.notify import AuditLog, notify_count
from tests.support.pagerduty import ROUTING_KEY, PagerDuty, pagerduty_receiver, schema_errors
from tests.support.timing import WAIT


@pytest.fixture
async def pd() -> AsyncIterator[PagerDuty]:
    async with pagerduty_receiver() as r:
        yield r


def count(metrics: HubMetrics, result: str) -> float:
    return notify_count(metrics, "pagerduty", result)


async def test_trigger_then_resolve_with_one_dedup_key_per_check_through_429_and_5xx_never_showing_the_key(
        pd: PagerDuty, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # Rate-limited, then a 5xx echoing the key (as a proxy might), then PagerDuty's own 202s.
    pd.script = [(429, {"Retry-After": "1"}, '{"status":"throttled"}'),
                 (502, {}, f"bad gateway for routing_key={ROUTING_KEY}")]
    metrics, audit = HubMetrics(), AuditLog()
    notifier = make_notifier_from({"pagerduty_routing_key": ROUTING_KEY, "pagerduty_url": pd.url},
                                  key_prefix="ops-hub", audit=audit, metrics=metrics, retry_initial=0.05)
    t = Target()
    async with serve(t.app) as url:
        src = make_health_source({"frontend": f"{url}/toggle", "backend": f"{url}/toggle", "api": f"{url}/ok"},
                                 timeout=1.0, failures_before_down=1, metrics=metrics, notifier=notifier)
        await notifier.start()
        errors: list[Any] = []
        try:
            await src.collect(2.0)
            t.toggle_status = 503
            for _ in range(2):  # down at the first failure; the second must not trigger again
                errors.append((await src.collect(2.0)).data["health"]["checks"])
            t.toggle_status = 200
            for _ in range(2):
                await src.collect(2.0)
            await wait_for(lambda: len(pd.events) == 4 and notifier.pending == 0, timeout=WAIT,
                           what="two triggers and two resolves")
        finally:
            await src.close()
            await notifier.close()

    assert pd.invalid == [], pd.invalid
    assert [s for _t, s, _e in pd.attempts] == [429, 502, 202, 202, 202, 202]
    (t429, _s, first), (_t2, _s2, second), (t_ok, _s3, third) = pd.attempts[:3]
    assert first == second == third, "a retried event is sent again, unchanged"
    assert t_ok - t429 >= 0.95, "Retry-After: 1 must be honoured"
    assert pd.actions() == [("trigger", "frontend", "ops-hub/health/frontend"),
                            ("trigger", "backend", "ops-hub/health/backend"),
                            ("resolve", "", "ops-hub/health/frontend"),
                            ("resolve", "", "ops-hub/health/backend")]
    trigger = pd.events[0]
    assert trigger["routing_key"] == ROUTING_KEY
    p = trigger["payload"]
    assert p | {"timestamp": None} == {
        "summary": "Health check failed: frontend: HTTP 503", "source": "ops-hub", "severity": "critical",
        "timestamp": None, "component": "frontend", "group": "health", "class": "health check",
        "custom_details": {"check": "frontend", "kind": "down", "text": "Health check failed: frontend: HTTP 503"}}
    assert p["timestamp"].endswith("Z") and abs(time.time() - _iso(p["timestamp"])) < 60
    assert pd.events[2] == {"routing_key": ROUTING_KEY, "event_action": "resolve",
                            "dedup_key": "ops-hub/health/frontend"}

    assert (count(metrics, "sent"), count(metrics, "retried"), count(metrics, "failed")) == (4, 2, 0)
    retries = [e for e in audit.events if e["event"] == "notification_retry"]
    assert [e["reason"] for e in retries] == ['HTTP 429: {"status":"throttled"}',
                                             "HTTP 502: bad gateway for routing_key=***"]
    exposition = generate_latest(metrics.registry).decode()
    for where, text in (("logs", caplog.text), ("/metrics", exposition), ("audit", repr(audit.events)),
                        ("health errors", repr(errors))):
        assert ROUTING_KEY not in text, f"the routing key leaked into {where}"


async def test_an_invalid_event_400_is_not_retried_and_its_echo_of_the_key_is_scrubbed(pd: PagerDuty) -> None:
    pd.script = [(400, {}, f'{{"status":"invalid event","errors":["bad key {ROUTING_KEY}"]}}')]
    metrics, audit = HubMetrics(), AuditLog()
    notifier = make_notifier_from({"pagerduty_routing_key": ROUTING_KEY, "pagerduty_url": pd.url},
                                  audit=audit, metrics=metrics, retry_initial=0.05)
    await notifier.start()
    try:
        notifier.notify(Notification.down("backend", "HTTP 503"))
        await wait_for(lambda: count(metrics, "failed") == 1, timeout=WAIT, what="the failure")
        notifier.notify(Notification.recovered("backend", down_for=3))  # the next event goes out
        await wait_for(lambda: pd.events, timeout=WAIT, what="the next event")
    finally:
        await notifier.close()
    assert [s for _t, s, _e in pd.attempts] == [400, 202] and count(metrics, "retried") == 0
    failed = next(e for e in audit.events if e["event"] == "notification_failed")
    assert failed["channel"] == "pagerduty" and failed["attempts"] == 1
    assert failed["reason"] == 'HTTP 400: {"status":"invalid event","errors":["bad key ***"]}'
    assert ROUTING_KEY not in repr(audit.events)


def test_events_match_the_schema_with_a_summary_cut_to_1024_and_a_bounded_dedup_key() -> None:
    long = Notification.down("c" * 400, "r" * 3000)
    reminder = Notification.still_down("web", "HTTP 500", down_for=90, reminder=2)
    for n in (long, reminder, Notification.recovered("web", down_for=90)):
        event = pagerduty_event(n, routing_key=ROUTING_KEY, hub_name="hub")
        assert schema_errors(event) == [], (n.kind, schema_errors(event))
        assert ROUTING_KEY not in event["dedup_key"]
    event = pagerduty_event(long, routing_key=ROUTING_KEY, hub_name="hub")
    assert len(event["payload"]["summary"]) == 1024 and len(event["dedup_key"]) == 255
    assert event["dedup_key"] != pagerduty_event(Notification.down("c" * 401, "x"), routing_key=ROUTING_KEY,
                                                 hub_name="hub")["dedup_key"]
    r = pagerduty_event(reminder, routing_key=ROUTING_KEY, hub_name="hub")
    assert (r["event_action"], r["dedup_key"]) == ("trigger", "hub/health/web")
    assert r["payload"]["custom_details"]["reminder"] == 2
    assert r["payload"]["summary"] == "Health check still failing: web: HTTP 500 (down for 1 min 30 s, reminder 2)"


def test_the_pagerduty_url_must_be_https_and_the_routing_key_is_a_secret() -> None:
    with pytest.raises(ConfigError, match=r"notify\.pagerduty_url: must be an https:// URL"):
        config({"notify": {"pagerduty_url": "http://events.pagerduty.example/v2/enqueue"}})
    with pytest.raises(ConfigError, match=r"notify\.pagerduty_url"):
        config({"notify": {"pagerduty_url": ""}})
    assert ROUTING_KEY in secrets_of(config({"notify": {"pagerduty_routing_key": ROUTING_KEY}}))


def _iso(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()
