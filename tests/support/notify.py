"""What notification tests read back: the audit events a notifier wrote and its counters."""

from __future__ import annotations

import re
from typing import Any

from hub.metrics import HubMetrics
from tests.support.slack import Receiver

RESULTS = ("sent", "retried", "failed", "dropped")


class AuditLog:
    """An audit sink that keeps every event as a dict (`event` plus its fields)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: str, **fields: Any) -> None:
        self.events.append({"event": event, **fields})

    def names(self) -> list[str]:
        """The event names, in order."""
        return [e["event"] for e in self.events]


def notify_count(metrics: HubMetrics, channel: str, result: str) -> float:
    """`hub_notifications_total{channel, result}`, 0 when never counted."""
    return metrics.registry.get_sample_value("hub_notifications_total",
                                             {"channel": channel, "result": result}) or 0.0


def notify_counts(metrics: HubMetrics, channel: str) -> dict[str, float]:
    """Every result's count for `channel`."""
    return {r: notify_count(metrics, channel, r) for r in RESULTS}


#: a reminder for the check "backend" failing with HTTP 503; group 1 is its number
REMINDER = re.compile(r"Health check still failing: backend: HTTP 503 \(down for [^,]+, reminder (\d+)\)")


def kinds(slack: Receiver) -> list[str]:
    """Each delivered Slack message about "backend" as "down", "r<n>" (reminder n) or "up"; others as sent."""
    out = []
    for text in slack.texts():
        if m := REMINDER.fullmatch(text):
            out.append(f"r{m[1]}")
        elif text == "Health check failed: backend: HTTP 503":
            out.append("down")
        elif text.startswith("Health check recovered: backend (down for "):
            out.append("up")
        else:
            out.append(text)
    return out
