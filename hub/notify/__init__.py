"""Notifications of health-check transitions: queued per channel, bounded, retried, never in a tick.

`Notifier.notify` hands a `Notification` to every channel and returns at once. Each channel
(`channel.Channel`: Slack, PagerDuty) has its own queue and sender task, so a slow or hostile
receiver delays only its own messages. `notifier_of(config)` builds the one `[notify]` sets up,
with the reminder interval the health source reads. Every attempt is bounded by
`http.post_json`; the retry policy and the counting (`hub_notifications_total{channel, result}`)
are `Channel`'s, shared by all channels.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import httpx

from hub.notify.channel import MAX_QUEUE, REQUEST_TIMEOUT, RESULTS, Channel
from hub.notify.http import MAX_BODY, RETRY_AFTER_MAX, retry_after
from hub.notify.message import Notification
from hub.notify.pagerduty import PagerDutyChannel, dedup_key, pagerduty_event
from hub.notify.slack import SlackChannel, slack_payload
from hub.secrets import Secrets

if TYPE_CHECKING:
    from hub.config import Config
    from hub.metrics import HubMetrics

__all__ = ["MAX_BODY", "MAX_QUEUE", "REQUEST_TIMEOUT", "RESULTS", "RETRY_AFTER_MAX", "Channel", "Notification",
           "Notifier", "PagerDutyChannel", "SlackChannel", "dedup_key", "notifier_of", "pagerduty_event", "retry_after",
           "slack_payload"]

#: `notify.pagerduty_url`'s default
PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"


class Notifier:
    """Fans each `Notification` out to its channels; never blocks the caller.

    `slack_webhook_url` adds the Slack channel and `pagerduty_routing_key` the PagerDuty one (posting
    to `pagerduty_url`, its incidents keyed by `hub_name`), each built with the other keyword
    arguments; `channels` adds channels built by the caller. `repeat_interval` (seconds, 0 = off) is
    how often the health source reminds of a check that stays down. `audit(event, **fields)`
    receives notification_sent, notification_retry (each failed attempt), notification_failed and
    notification_dropped, each with its `channel`. Receiver URLs and the routing key are secrets:
    they appear in none of them, nor in logs or metrics.
    """

    def __init__(self, *, slack_webhook_url: str = "", pagerduty_routing_key: str = "",
                 pagerduty_url: str = PAGERDUTY_URL, hub_name: str = "hub", repeat_interval: float = 0.0,
                 secrets: Secrets | None = None, channels: Iterable[Channel] = (),
                 audit: Callable[..., None] | None = None, metrics: HubMetrics | None = None,
                 client: httpx.AsyncClient | None = None, retry_initial: float = 1.0, retry_max: float = 60.0,
                 give_up_after: float = 600.0, request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.channels: list[Channel] = []
        self.repeat_interval = repeat_interval
        if (slack_webhook_url or pagerduty_routing_key) and secrets is None:
            raise TypeError("a Slack or PagerDuty channel needs the secret registry (hub.config.secrets_of)")
        common: dict[str, Any] = dict(secrets=secrets, audit=audit, metrics=metrics, client=client,
                                      retry_initial=retry_initial, retry_max=retry_max,
                                      give_up_after=give_up_after, request_timeout=request_timeout)
        if slack_webhook_url:
            self.channels.append(SlackChannel(webhook_url=slack_webhook_url, **common))
        if pagerduty_routing_key:
            self.channels.append(PagerDutyChannel(routing_key=pagerduty_routing_key, url=pagerduty_url,
                                                  hub_name=hub_name, **common))
        self.channels += channels
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise ValueError(f"notification channels must have distinct names, got {names}")

    async def start(self) -> None:
        """Start every channel's sender."""
        for c in self.channels:
            await c.start()

    async def close(self, *, drain: float = 3.0) -> None:
        """Give every channel `drain` seconds at once for what is queued, then stop; the rest is counted dropped."""
        await asyncio.gather(*(c.close(drain=drain) for c in self.channels))

    def notify(self, event: Notification) -> None:
        """Queue `event` on every channel; returns at once (a full queue drops it there, counted and audited)."""
        for c in self.channels:
            c.notify(event)

    @property
    def pending(self) -> int:
        """Messages queued or being delivered, over all channels."""
        return sum(c.pending for c in self.channels)


def notifier_of(config: Config, *, secrets: Secrets, **options: Any) -> Notifier | None:
    """The notifier `[notify]` of `config` sets up (with `Notifier`'s other keyword `options`: audit,
    metrics, retry bounds), or None when it sets no channel."""
    n = config.notify
    if not (n.slack_webhook_url or n.pagerduty_routing_key):
        return None
    return Notifier(slack_webhook_url=n.slack_webhook_url, pagerduty_routing_key=n.pagerduty_routing_key,
                    pagerduty_url=n.pagerduty_url, hub_name=config.cluster.key_prefix,
                    repeat_interval=n.repeat_interval, secrets=secrets, **options)
