"""What a notification says: one health-check transition or one booking anomaly, the same for every channel."""

from __future__ import annotations

import time
from dataclasses import dataclass

#: the `check` of booking-anomaly messages (group "business")
BOOKINGS = "bookings"


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to post: `text` is already free of secrets; `ts` is when the transition happened."""

    kind: str  # "down" | "reminder" | "recovered" | "anomaly"
    check: str
    severity: str  # critical | warning | info
    text: str
    ts: float
    #: the reminder's number within its outage (1, 2, ...); 0 for a down or recovered message
    reminder: int = 0
    #: what `check` names: a health check ("health") or the bookings ("business"); keys PagerDuty incidents
    group: str = "health"

    @classmethod
    def down(cls, check: str, reason: str, *, ts: float | None = None) -> Notification:
        """A check went down: severity critical, text `Health check failed: <name>: <reason>`."""
        return cls("down", check, "critical", f"Health check failed: {check}: {reason}",
                   time.time() if ts is None else ts)

    @classmethod
    def still_down(cls, check: str, reason: str, *, down_for: float, reminder: int,
                   ts: float | None = None) -> Notification:
        """A reminder while a check stays down: severity critical, text
        `Health check still failing: <name>: <reason> (down for <duration>, reminder <n>)`."""
        return cls("reminder", check, "critical",
                   f"Health check still failing: {check}: {reason} (down for {duration(down_for)}, "
                   f"reminder {reminder})", time.time() if ts is None else ts, reminder)

    @classmethod
    def anomaly(cls, kind: str, text: str, *, ts: float) -> Notification:
        """Bookings turned `kind` ("silent": critical, "low": warning); `text` holds aggregates only."""
        return cls("anomaly", BOOKINGS, "critical" if kind == "silent" else "warning", text, ts, group="business")

    @classmethod
    def anomaly_recovered(cls, text: str, *, ts: float) -> Notification:
        """Bookings are back to what this hour usually brings: one info message (PagerDuty resolves)."""
        return cls("recovered", BOOKINGS, "info", text, ts, group="business")

    @classmethod
    def recovered(cls, check: str, *, down_for: float, ts: float | None = None) -> Notification:
        """A check is up again after `down_for` seconds: one info message."""
        return cls("recovered", check, "info",
                   f"Health check recovered: {check} (down for {duration(down_for)})",
                   time.time() if ts is None else ts)


def duration(seconds: float) -> str:
    """`seconds` as a short human duration: "45 s", "1 min 15 s", "2 h 5 min"."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s} s" if s else f"{m} min"
    h, m = divmod(m, 60)
    return f"{h} h {m} min" if m else f"{h} h"
