"""Slack notifications against a local HTTP receiver standing in for Slack's incoming webhook."""

from __future__ import annotations

import logging
import time

import pytest
from prometheus_client import generate_latest

from hub.config import ConfigError
from hub.metrics import HubMetrics
from hub.notify import Notification
from tests.support import free_port
from tests.support.aio import wait_for
from tests.support.components import make_health_source, make_notifier
from tests.support.http_targets import Target, serve
from tests.support.notify import AuditLog, notify_count
from tests.support.slack import TOKEN, WEBHOOK_PATH, Receiver


def count(metrics: HubMetrics, result: str) -> float:
    return notify_count(metrics, "slack", result)


async def test_one_message_per_transition_survives_429_and_keeps_the_webhook_secret(
        slack: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # everything, httpx's request log included
    slack.script = [(429, {"Retry-After": "1"}, "rate_limited")]
    metrics, audit = HubMetrics(), AuditLog()
    notifier = make_notifier(slack.url, audit=audit, metrics=metrics, retry_initial=0.05)
    t = Target()
    async with serve(t.app) as url:
        src = make_health_source({"frontend": f"{url}/toggle", "backend": f"{url}/ok"}, timeout=1.0,
                           failures_before_down=2, metrics=metrics, notifier=notifier)
        await notifier.start()
        errors: list[str | None] = []
        try:
            await src.collect(2.0)
            t.toggle_status = 503
            for _ in range(4):  # down at the 2nd failure; the 3rd and 4th must not repeat the message
                h = (await src.collect(2.0)).data["health"]
                errors.append(h["checks"]["frontend"]["error"])
            assert h["details"] == {"frontend": False, "backend": True}
            t.toggle_status = 200
            for _ in range(3):  # recovered at the first success, once
                await src.collect(2.0)
            await wait_for(lambda: len(slack.delivered) == 2 and notifier.pending == 0, timeout=10,
                           what="the down and recovery messages")
            for _ in range(2):  # steady state: nothing more
                await src.collect(2.0)
            await wait_for(lambda: notifier.pending == 0, what="an idle notifier")
        finally:
            await src.close()
            await notifier.close()

    statuses = [s for _t, s, _b in slack.attempts]
    assert statuses == [429, 200, 200], statuses
    (t429, _s, first), (t_retry, _s2, retried) = slack.attempts[0], slack.attempts[1]
    assert first == retried, "the rate-limited message is sent again, unchanged"
    assert t_retry - t429 >= 0.95, "Retry-After: 1 must be honoured"
    down, up = slack.delivered
    for msg in (down, up):  # the guide's sendSlackAlert payload
        assert msg["username"] == "Healthcare Monitoring" and msg["icon_emoji"] == ":hospital:"
        assert len(msg["attachments"]) == 1
        a = msg["attachments"][0]
        assert set(a) == {"color", "title", "text", "footer", "ts"}
        assert a["footer"] == "Healthcare DevOps Pipeline"
        assert isinstance(a["ts"], int) and abs(a["ts"] - time.time()) < 60
    assert down["attachments"][0] | {"ts": 0} == {"color": "#FF0000", "title": "CRITICAL Alert", "ts": 0,
                                                  "text": "Health check failed: frontend: HTTP 503",
                                                  "footer": "Healthcare DevOps Pipeline"}
    assert up["attachments"][0]["color"] == "#0000FF" and up["attachments"][0]["title"] == "INFO Alert"
    assert up["attachments"][0]["text"].startswith("Health check recovered: frontend (down for ")

    assert (count(metrics, "sent"), count(metrics, "retried"), count(metrics, "failed"),
            count(metrics, "dropped")) == (2, 1, 0, 0)
    assert audit.names() == ["notification_retry", "notification_sent", "notification_sent"]
    assert audit.events[0] | {"text": None} == {
        "event": "notification_retry", "channel": "slack", "check": "frontend", "kind": "down",
        "severity": "critical", "text": None, "reason": "HTTP 429: rate_limited", "attempt": 1, "retry_in": 1.0}
    assert [e["kind"] for e in audit.events[1:]] == ["down", "recovered"]

    exposition = generate_latest(metrics.registry).decode()
    assert "HTTP Request: POST" in caplog.text  # httpx's line is kept, with the URL scrubbed
    for where, text in (("logs", caplog.text), ("/metrics", exposition), ("audit", repr(audit.events)),
                        ("errors", repr(errors))):
        assert "xoxb-not-a-real-token" not in text, f"webhook token leaked into {where}"
        assert slack.url not in text, f"webhook URL leaked into {where}"


async def test_5xx_is_retried_with_exponential_backoff_until_delivered(slack: Receiver) -> None:
    slack.script = [(503, {}, "busy"), (502, {}, ""), (500, {}, "oops")]
    metrics, audit = HubMetrics(), AuditLog()
    notifier = make_notifier(slack.url, audit=audit, metrics=metrics, retry_initial=0.1)
    await notifier.start()
    try:
        notifier.notify(Notification.down("backend", "HTTP 503"))
        await wait_for(lambda: slack.delivered, timeout=10, what="delivery after three 5xx")
    finally:
        await notifier.close()
    times = [t for t, _s, _b in slack.attempts]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert [s for _t, s, _b in slack.attempts] == [503, 502, 500, 200]
    for i, gap in enumerate(gaps):  # 0.1, 0.2, 0.4: sleeps are never shorter than asked
        assert gap >= 0.1 * 2 ** i * 0.95, gaps
    assert (count(metrics, "sent"), count(metrics, "retried")) == (1, 3)
    assert [e.get("reason") for e in audit.events] == ["HTTP 503: busy", "HTTP 502", "HTTP 500: oops", None]


async def test_gives_up_after_the_bound_and_counts_it(slack: Receiver) -> None:
    slack.script = [(500, {}, "down")] * 100
    metrics, audit = HubMetrics(), AuditLog()
    notifier = make_notifier(slack.url, audit=audit, metrics=metrics,
                        retry_initial=0.05, give_up_after=0.5)
    await notifier.start()
    try:
        t0 = time.monotonic()
        notifier.notify(Notification.down("backend", "HTTP 503"))
        await wait_for(lambda: count(metrics, "failed") == 1, timeout=5, what="giving up")
        took = time.monotonic() - t0
    finally:
        await notifier.close()
    assert took < 1.5, f"gave up after {took:.2f} s; the bound is 0.5 s"
    assert slack.delivered == [] and len(slack.attempts) >= 3
    final = audit.events[-1]
    assert final["event"] == "notification_failed" and final["check"] == "backend"
    assert final["reason"].startswith("HTTP 500: down; gave up after ") and TOKEN not in repr(audit.events)


async def test_non_retryable_answer_fails_at_once(slack: Receiver) -> None:
    slack.script = [(404, {}, "no_service")]
    metrics, audit = HubMetrics(), AuditLog()
    notifier = make_notifier(slack.url, audit=audit, metrics=metrics)
    await notifier.start()
    try:
        notifier.notify(Notification.recovered("backend", down_for=75))
        await wait_for(lambda: count(metrics, "failed") == 1, what="the failure")
    finally:
        await notifier.close()
    assert len(slack.attempts) == 1 and count(metrics, "retried") == 0
    assert audit.events[-1] | {"text": None} == {
        "event": "notification_failed", "channel": "slack", "check": "backend", "kind": "recovered",
        "severity": "info", "text": None, "reason": "HTTP 404: no_service", "attempts": 1}
    assert audit.events[-1]["text"] == "Health check recovered: backend (down for 1 min 15 s)"


async def test_unreachable_webhook_error_names_no_url() -> None:
    url = f"https://127.0.0.1:{free_port()}{WEBHOOK_PATH}"
    audit = AuditLog()
    notifier = make_notifier(url, audit=audit, retry_initial=0.05, give_up_after=0.2)
    await notifier.start()
    try:
        notifier.notify(Notification.down("frontend", "connection refused"))
        await wait_for(lambda: "notification_failed" in audit.names(), what="giving up")
    finally:
        await notifier.close()
    assert "ConnectError" in audit.events[-1]["reason"]
    assert TOKEN not in repr(audit.events) and "127.0.0.1" not in repr(audit.events)


async def test_notify_never_blocks_and_close_counts_what_was_not_sent(slack: Receiver) -> None:
    slack.hang = True  # Slack accepts the connection and never answers
    metrics, audit = HubMetrics(), AuditLog()
    notifier = make_notifier(slack.url, audit=audit, metrics=metrics)
    await notifier.start()
    t = Target()
    async with serve(t.app) as url:
        src = make_health_source({"frontend": f"{url}/fail"}, failures_before_down=1, notifier=notifier)
        try:
            t0 = time.monotonic()
            await src.collect(2.0)  # the down transition: notifies
            took = time.monotonic() - t0
            t1 = time.monotonic()
            for i in range(300):  # more than the queue holds, without a single await in between
                notifier.notify(Notification.down(f"c{i}", "x"))
            burst = time.monotonic() - t1
            await wait_for(lambda: len(slack.attempts) == 0 and notifier.pending > 0, what="a pending send")
        finally:
            await src.close()
            await notifier.close(drain=0.2)
    assert took < 0.5 and burst < 0.5, (took, burst)
    assert count(metrics, "sent") == 0
    assert count(metrics, "dropped") == 301, "every message not sent is counted"
    assert audit.names().count("notification_dropped") == 301
    reasons = {e["reason"] for e in audit.events}
    assert reasons == {"queue full (256 undelivered messages)", "hub shutting down"}


def test_invalid_webhook_url_is_refused_by_the_config_loader_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match=r"notify.slack_webhook_url") as exc:
        make_notifier("hooks.example/services/xoxb-secret")
    assert "xoxb-secret" not in str(exc.value)


async def test_retry_after_zero_still_backs_off_and_text_is_escaped(slack: Receiver) -> None:
    slack.script = [(429, {"Retry-After": "0"}, "")] * 3
    notifier = make_notifier(slack.url, retry_initial=0.1)
    await notifier.start()
    try:
        notifier.notify(Notification.down("web", "TLS error (<unknown> & more)"))
        await wait_for(lambda: slack.delivered, timeout=10, what="delivery")
    finally:
        await notifier.close()
    times = [t for t, _s, _b in slack.attempts]
    assert [b - a >= 0.1 * 2 ** i * 0.95 for i, (a, b) in enumerate(zip(times, times[1:]))] == [True] * 3
    assert slack.delivered[0]["attachments"][0]["text"] == \
        "Health check failed: web: TLS error (&lt;unknown&gt; &amp; more)"
