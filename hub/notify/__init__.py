"""Notifications of health-check transitions: queued per channel, bounded, retried, never in a tick.

`Notifier.notify` hands a `Notification` to every channel and returns at once. Each channel
(`channel.Channel`: Slack today) has its own queue and sender task, so a slow or hostile receiver
delays only its own messages. Every attempt is bounded by `http.post_json`; the retry policy and
the counting (`hub_notifications_total{channel, result}`) are `Channel`'s, shared by all channels.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import httpx

from hub.notify.channel import MAX_QUEUE, REQUEST_TIMEOUT, RESULTS, Channel
from hub.notify.http import MAX_BODY, RETRY_AFTER_MAX, retry_after
from hub.notify.message import Notification
from hub.notify.slack import SlackChannel, slack_payload
from hub.secrets import Secrets

if TYPE_CHECKING:
    from hub.metrics import HubMetrics

__all__ = ["MAX_BODY", "MAX_QUEUE", "REQUEST_TIMEOUT", "RESULTS", "RETRY_AFTER_MAX", "Channel", "Notification",
           "Notifier", "SlackChannel", "retry_after", "slack_payload"]


class Notifier:
    """Fans each `Notification` out to its channels; never blocks the caller.

    `slack_webhook_url` adds the Slack channel, built with the other keyword arguments; `channels`
    adds channels built by the caller. `audit(event, **fields)` receives notification_sent,
    notification_retry (each failed attempt), notification_failed and notification_dropped, each
    with its `channel`. Receiver URLs are secrets: they appear in none of them, nor in logs or metrics.
    """

    def __init__(self, *, slack_webhook_url: str = "", secrets: Secrets | None = None,
                 channels: Iterable[Channel] = (),
                 audit: Callable[..., None] | None = None, metrics: HubMetrics | None = None,
                 client: httpx.AsyncClient | None = None, retry_initial: float = 1.0, retry_max: float = 60.0,
                 give_up_after: float = 600.0, request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.channels: list[Channel] = []
        if slack_webhook_url:
            if secrets is None:
                raise TypeError("a Slack channel needs the secret registry (hub.config.secrets_of)")
            self.channels.append(SlackChannel(
                webhook_url=slack_webhook_url, secrets=secrets, audit=audit, metrics=metrics, client=client,
                retry_initial=retry_initial, retry_max=retry_max, give_up_after=give_up_after,
                request_timeout=request_timeout))
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
