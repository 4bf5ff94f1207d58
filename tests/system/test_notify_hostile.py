"""Hostile notification receivers over https, the certificate of a private CA trusted through
SSL_CERT_FILE: an endless body against a real `hub serve` (its RSS measured), drips in-process.

The receiver is a local stand-in for Slack's webhook (tests/support/slack.py): no real Slack can
be made to send an endless body, drip its answer or send `Retry-After: ²` on cue.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hub.notify import MAX_BODY, Notification
from tests.support.aio import wait_for
from tests.support.components import make_notifier
from tests.support.http_targets import Target, serve
from tests.support.hubproc import HubProcess
from tests.support.slack import DripBody, DripHead, EndlessBody, Hostile, slack_receiver
from tests.support.timing import SLACK, WAIT
from tests.support.tls import make_private_ca, server_context

MiB = 1 << 20
#: the issue's bound: the hub's RSS within this of its idle RSS while a receiver sends an endless body
RSS_BOUND = 64 * MiB


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    yield make_private_ca(tmp_path_factory.mktemp("ca"))


def notification_counts(hub: HubProcess) -> dict[str, float]:
    with urllib.request.urlopen(hub.url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "hub_notifications_total" and s.labels.get("channel") == "slack":
                out[s.labels["result"]] = s.value
    return out


async def test_hub_serve_rss_stays_flat_against_an_endless_body_and_delivers_on_the_next_good_attempt(
        tmp_path: Path, ca: dict[str, Path]) -> None:
    """Before the bound, a 500 with an endless body grew a hub from 46 MB to 21.5 GB in 30 s.

    The receiver answers the first attempt with that, the second with a 503 whose `Retry-After: ²`
    once lost the message with a traceback, and the third with 200.
    """
    target = Target()
    endless = EndlessBody(status=500)
    hub: HubProcess | None = None
    async with serve(target.app) as target_url, slack_receiver(ssl_context=server_context(ca)) as slack:
        slack.script = [endless, (503, {"Retry-After": "²"}, "busy")]
        config = {
            "broadcast": {"interval": 0.5, "heartbeat": 5.0},
            "sources": {"prometheus": {"enabled": False}, "business": {"enabled": False},
                        "health": {"checks": {"backend": f"{target_url}/toggle"}, "timeout": 0.3,
                                   "failures_before_down": 1}},
            "notify": {"slack_webhook_url": slack.url},
        }
        hub = HubProcess(config, tmp_path, env={"SSL_CERT_FILE": str(ca["ca"])})
        try:
            await asyncio.to_thread(hub.start)
            assert hub.proc is not None
            proc = psutil.Process(hub.proc.pid)
            # Idle: the hub checking its target for a few ticks, nothing to notify.
            await wait_for(lambda: target.hits.get("toggle", 0) >= 4, timeout=WAIT, what="idle ticks")
            idle = proc.memory_info().rss
            target.toggle_status = 503
            peak, deadline = idle, time.monotonic() + WAIT
            while not slack.delivered:
                peak = max(peak, proc.memory_info().rss)
                if peak - idle > RSS_BOUND:
                    hub.stop(kill=True)  # at once: an unbounded reader grows by hundreds of MB a second
                    pytest.fail(f"hub RSS grew by {(peak - idle) / MiB:.0f} MB over idle ({idle / MiB:.0f} MB)")
                assert time.monotonic() < deadline, f"no delivery within {WAIT:g} s:\n{hub.log()}"
                await asyncio.sleep(0.02)
            counts = await asyncio.to_thread(notification_counts, hub)
        finally:
            await asyncio.to_thread(hub.stop)
    log = hub.log_path.read_text(errors="replace")
    assert [s for _t, s, _b in slack.attempts] == [500, 503, 200]
    (t0, _s0, _b0), (t1, _s1, _b1), (t2, _s2, _b2) = slack.attempts
    assert t1 - t0 >= 0.95 and t2 - t1 >= 1.9, "retry_initial 1 s, then the backoff's 2 s instead of '²'"
    assert slack.texts() == ["Health check failed: backend: HTTP 503"]
    assert endless.started is not None and endless.ended is not None
    assert endless.ended - endless.started < SLACK, "the hub hung up on the endless body at once"
    assert endless.sent < 16 * MiB, f"the receiver wrote {endless.sent / MiB:.0f} MiB before the hub hung up"
    assert counts == {"sent": 1, "retried": 2, "failed": 0, "dropped": 0}
    assert f"(body cut at {MAX_BODY} bytes)" in log
    assert "Traceback" not in log
    print(f"hub RSS: idle {idle / MiB:.1f} MB, peak {peak / MiB:.1f} MB (+{(peak - idle) / MiB:.1f} MB); "
          f"the receiver wrote {endless.sent / MiB:.1f} MB before the hub hung up")


LIMIT = 0.5  # request_timeout in the drip tests


@pytest.mark.parametrize(("drip", "statuses", "result", "reason"), [
    (DripHead(every=0.1), [0, 200], "retried", f"no answer within {LIMIT:g} s"),
    (DripBody(status=500, every=0.1), [500, 200], "retried", f"(body not finished within {LIMIT:g} s)"),
    (DripBody(status=200, every=0.1), [200], "sent", None),
], ids=["head", "error-body", "accepted-body"])
async def test_a_drip_is_cut_at_the_attempt_deadline(
        ca: dict[str, Path], monkeypatch: pytest.MonkeyPatch, drip: Hostile, statuses: list[int], result: str,
        reason: str | None) -> None:
    """A byte every 0.1 s kept one POST in flight for good: httpx's timeouts are per read. A 2xx
    whose body drips is delivered (the status is Slack's answer) and not sent twice."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca["ca"]))  # read when the notifier's client is made
    events: list[dict[str, Any]] = []
    async with slack_receiver(ssl_context=server_context(ca)) as slack:
        slack.script = [drip]
        notifier = make_notifier(slack.url, retry_initial=0.05, request_timeout=LIMIT,
                            audit=lambda event, **f: events.append({"event": event, **f}))
        await notifier.start()
        try:
            notifier.notify(Notification.down("backend", "HTTP 503"))
            await wait_for(lambda: slack.delivered and notifier.pending == 0, timeout=WAIT, what="delivery")
        finally:
            await notifier.close()
    assert [s for _t, s, _b in slack.attempts] == statuses
    assert drip.started is not None and drip.ended is not None
    assert drip.ended - drip.started < LIMIT + SLACK, "the dripping attempt outlived request_timeout"
    assert [e["event"] for e in events] == (["notification_retry"] if result == "retried" else []) + \
        ["notification_sent"]
    if reason is not None:
        assert reason in events[0]["reason"], events[0]
