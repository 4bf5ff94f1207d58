"""Notifications bounded against hostile receivers: body cap, attempt deadline, give-up bound, Retry-After,
one channel never delaying another, and every outcome counted.

The receivers are local stand-ins (tests/support/slack.py): no real Slack can be made to send an
endless body, drip its answer or send `Retry-After: ²` on cue. The same over https, and against a
real `hub serve`: tests/system/test_notify_hostile.py.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from hub.metrics import HubMetrics
from hub.notify import MAX_BODY, Channel, Notification, Notifier
from hub.secrets import Secrets
from tests.support.aio import wait_for
from tests.support.components import make_notifier
from tests.support.notify import AuditLog, notify_counts
from tests.support.slack import DripHead, EndlessBody, Receiver, slack_receiver
from tests.support.timing import SLACK, WAIT

MiB = 1 << 20


def counts(metrics: HubMetrics, channel: str = "slack") -> dict[str, float]:
    return notify_counts(metrics, channel)


async def test_an_endless_body_is_read_to_a_small_cap_and_the_next_attempt_delivers(slack: Receiver) -> None:
    endless = EndlessBody(status=500, limit=64 * MiB)  # the limit only stops a hub that reads it all
    slack.script = [endless]
    metrics, audit = HubMetrics(), AuditLog()
    notifier = make_notifier(slack.url, audit=audit, metrics=metrics, retry_initial=0.05)
    await notifier.start()
    try:
        notifier.notify(Notification.down("backend", "HTTP 503"))
        await wait_for(lambda: slack.delivered, timeout=WAIT, what="delivery after the endless body")
    finally:
        await notifier.close()
    assert [s for _t, s, _b in slack.attempts] == [500, 200]
    assert endless.ended is not None
    # What the hub read is MAX_BODY and one network read; the rest is what socket buffers took in.
    assert endless.sent < 16 * MiB, f"the receiver wrote {endless.sent / MiB:.0f} MiB before the hub hung up"
    assert counts(metrics) == {"sent": 1, "retried": 1, "failed": 0, "dropped": 0}
    reason = audit.events[0]["reason"]
    assert reason.startswith("HTTP 500: xxxx") and reason.endswith(f"(body cut at {MAX_BODY} bytes)"), reason
    assert len(reason) < 200


@pytest.mark.parametrize("value", ["²", "١٢", "\uff19"], ids=["superscript-2", "arabic-indic-12", "fullwidth-9"])
async def test_a_retry_after_http_cannot_read_falls_back_to_backoff_and_is_counted(
        slack: Receiver, value: str, caplog: pytest.LogCaptureFixture) -> None:
    """`²` passes str.isdigit() and crashed float(); the others float() reads, HTTP does not."""
    caplog.set_level(logging.WARNING)
    slack.script = [(503, {"Retry-After": value}, "busy")]
    metrics, audit = HubMetrics(), AuditLog()
    notifier = make_notifier(slack.url, audit=audit, metrics=metrics, retry_initial=0.2)
    await notifier.start()
    try:
        notifier.notify(Notification.down("backend", "HTTP 503"))
        await wait_for(lambda: slack.delivered, timeout=WAIT, what="delivery on the next attempt")
    finally:
        await notifier.close()
    (t0, s0, _), (t1, s1, _) = slack.attempts
    assert (s0, s1) == (503, 200)
    assert 0.2 * 0.95 <= t1 - t0 < 0.2 + SLACK, "the backoff is waited instead"
    assert counts(metrics) == {"sent": 1, "retried": 1, "failed": 0, "dropped": 0}
    assert audit.events[0]["retry_in"] == 0.2
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_give_up_after_holds_during_an_attempt_and_the_next_message_goes_out(slack: Receiver) -> None:
    """A receiver dripping its answer forever held the queue for good: httpx's timeouts are per read."""
    give_up = 0.5
    drip = DripHead(every=0.1)
    slack.script = [drip]
    metrics, audit = HubMetrics(), AuditLog()
    # request_timeout stays at its 10 s default: the give-up bound is what must cut this attempt
    notifier = make_notifier(slack.url, audit=audit, metrics=metrics, retry_initial=0.05,
                        give_up_after=give_up)
    await notifier.start()
    try:
        notifier.notify(Notification.down("backend", "HTTP 503"))
        notifier.notify(Notification.down("frontend", "HTTP 503"))
        await wait_for(lambda: slack.delivered, timeout=WAIT, what="the second message")
        # The receiver notices the cut at its next dripped byte (every 0.1 s), maybe after that.
        await wait_for(lambda: drip.ended is not None, timeout=WAIT, what="the receiver seeing the cut")
    finally:
        await notifier.close()
    assert drip.started is not None and drip.ended is not None
    assert drip.ended - drip.started < give_up + SLACK, "the dripping attempt outlived give_up_after"
    assert [s for _t, s, _b in slack.attempts] == [0, 200]
    assert slack.texts() == ["Health check failed: frontend: HTTP 503"]
    assert counts(metrics) == {"sent": 1, "retried": 0, "failed": 1, "dropped": 0}
    failed = audit.events[0]
    assert failed["event"] == "notification_failed" and failed["check"] == "backend"
    assert failed["reason"].startswith("no answer within 0.5 s; gave up after 1 attempts in "), failed


class Pager(Channel):
    """A second channel, as PagerDuty's will be: a name and a payload; queue, retries and bounds are Channel's."""

    name = "pager"

    def payload(self, n: Notification) -> dict[str, Any]:
        return {"summary": n.text, "severity": n.severity}


async def test_a_slow_channel_never_delays_another() -> None:
    metrics, audit = HubMetrics(), AuditLog()
    async with slack_receiver() as slow, slack_receiver() as fast:
        slow.hang = True  # accepts the request and never answers
        pager = Pager(url=fast.url, secrets=Secrets(), audit=audit, metrics=metrics)
        notifier = make_notifier(slow.url, channels=[pager], audit=audit, metrics=metrics)
        await notifier.start()
        try:
            for i in range(3):
                notifier.notify(Notification.down(f"c{i}", "HTTP 503"))
            # The receiver records a message before the pager reads its answer: the pager's count
            # drops a moment later (the full random-order run caught pending == 4).
            await wait_for(lambda: len(fast.delivered) == 3 and notifier.pending == 3, timeout=WAIT,
                           what="the pager's messages, answered")
            assert slow.attempts == []  # Slack's three: one in flight, two queued
        finally:
            await notifier.close(drain=0.1)
    assert [b["summary"] for b in fast.delivered] == [f"Health check failed: c{i}: HTTP 503" for i in range(3)]
    assert counts(metrics, "pager") == {"sent": 3, "retried": 0, "failed": 0, "dropped": 0}
    assert counts(metrics, "slack") == {"sent": 0, "retried": 0, "failed": 0, "dropped": 3}
    assert {e["channel"] for e in audit.events if e["event"] == "notification_sent"} == {"pager"}


class Broken(Pager):
    """A channel whose payload builder has a bug for one check."""

    name = "broken"

    def payload(self, n: Notification) -> dict[str, Any]:
        if n.check == "bad":
            raise RuntimeError("a bug in a payload builder")
        return super().payload(n)


async def test_an_internal_error_is_counted_as_failed_and_later_messages_go_out(
        slack: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    metrics, audit = HubMetrics(), AuditLog()
    notifier = Notifier(channels=[Broken(url=slack.url, secrets=Secrets(), audit=audit, metrics=metrics)])
    await notifier.start()
    try:
        notifier.notify(Notification.down("bad", "x"))
        notifier.notify(Notification.down("good", "x"))
        await wait_for(lambda: slack.delivered, what="the message after the bug")
    finally:
        await notifier.close()
    assert counts(metrics, "broken") == {"sent": 1, "retried": 0, "failed": 1, "dropped": 0}
    assert audit.events[0] | {"text": None} == {
        "event": "notification_failed", "channel": "broken", "check": "bad", "kind": "down",
        "severity": "critical", "text": None, "reason": "internal error: RuntimeError", "attempts": 0}
    assert [r.exc_info is not None for r in caplog.records if r.levelno >= logging.ERROR] == [True, False]


def test_channel_names_are_distinct() -> None:
    with pytest.raises(ValueError, match="distinct names"):
        make_notifier("https://hooks.example/services/a/b/c",
                 channels=[Pager(url="https://a.example/x", secrets=Secrets()), Pager(url="https://b.example/y", secrets=Secrets())])
