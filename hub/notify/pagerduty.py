"""The PagerDuty channel: Events API v2, a trigger per down message and reminder, a resolve per recovery.

Every event of one check carries the same `dedup_key`, made from the hub's name (`[cluster]
key_prefix`) and the check's name, never from the routing key: PagerDuty appends a reminder to the
incident the down message opened, and a recovery resolves it. PagerDuty answers 202; a 400 (an
event it refuses) is not retried, a 429 or 5xx is, with the backoff and `Retry-After` handling of
every channel (`hub.notify.channel.Channel`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from hub.notify.channel import Channel
from hub.notify.message import Notification
from hub.vocab import utc_iso

#: PagerDuty's limits: a summary of at most 1024 characters, a dedup_key of at most 255.
MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255


class PagerDutyChannel(Channel):
    """Posts Events API v2 events to `url`; the routing key is the secret (it is in the body only)."""

    name = "pagerduty"

    def __init__(self, *, routing_key: str, url: str, hub_name: str, **kwargs: Any) -> None:
        super().__init__(url=url, **kwargs)
        self._routing_key = routing_key
        self.hub_name = hub_name

    def payload(self, n: Notification) -> dict[str, Any]:
        """The Events v2 event for `n`: `resolve` for a recovery, else `trigger`."""
        return pagerduty_event(n, routing_key=self._routing_key, hub_name=self.hub_name)


def dedup_key(hub_name: str, check: str, group: str = "health") -> str:
    """The one incident key of `check`: `<hub name>/<group>/<check>` (group health, or business for the
    bookings), hashed when longer than PagerDuty allows."""
    key = f"{hub_name}/{group}/{check}"
    if len(key) <= MAX_DEDUP_KEY:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{key[: MAX_DEDUP_KEY - len(digest) - 1]}~{digest}"


def pagerduty_event(n: Notification, *, routing_key: str, hub_name: str) -> dict[str, Any]:
    """The Events API v2 body for `n` (PagerDuty's schema: routing_key, event_action, dedup_key, payload)."""
    event: dict[str, Any] = {"routing_key": routing_key, "dedup_key": dedup_key(hub_name, n.check, n.group)}
    if n.kind == "recovered":
        return {**event, "event_action": "resolve"}
    details: dict[str, Any] = {"check": n.check, "kind": n.kind, "text": n.text}
    if n.reminder:
        details["reminder"] = n.reminder
    return {**event, "event_action": "trigger", "payload": {
        "summary": n.text[:MAX_SUMMARY],
        "source": hub_name,
        # the Events API knows critical, error, warning and info: the hub's severities are among them
        "severity": n.severity,
        "timestamp": utc_iso(n.ts),
        "component": n.check,
        "group": n.group,
        "class": "health check" if n.group == "health" else "booking anomaly",
        "custom_details": details,
    }}
