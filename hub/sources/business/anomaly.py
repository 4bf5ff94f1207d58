"""The two booking detectors and their verdict, `data.business.anomaly`.

*silent*: the bookings expected since the last one (the hourly expected counts integrated hour by
hour) make "no booking since" less probable than `p`: P = e^(-expected) < p.
*low*: the bookings of the last 60 minutes are improbably few: P(X <= observed) < p for X Poisson
with the count expected over those 60 minutes. A silence is the stronger finding and wins.
Outside the configured hours and days the state is ok with the reason "closed".
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import Any

from hub.config import BusinessAnomalyConfig
from hub.config.checks import parse_hours
from hub.config.schema import WEEKDAYS
from hub.sources.business.buckets import hour_of
from hub.sources.business.expected import Rate, elapsed, integrated, p_at_most, p_none

STATES = ("ok", "low", "silent")
#: the anomaly kinds (hub_business_anomaly{kind}, exported by hub.business_export)
KINDS = ("silent", "low")


class Schedule:
    """When the detectors run: `hours` on `days`, both in `timezone` (a validated config)."""

    def __init__(self, cfg: BusinessAnomalyConfig) -> None:
        # cfg was validated by hub/config; parse_hours cannot fail on it.
        self.start, self.end = parse_hours(cfg.hours)
        self.days = frozenset(WEEKDAYS.index(d) for d in cfg.days)
        self.tz = zoneinfo.ZoneInfo(cfg.timezone)
        self.tz_name = cfg.timezone

    def local(self, t: dt.datetime) -> dt.datetime:
        return t.astimezone(self.tz)

    def is_open(self, t: dt.datetime) -> bool:
        """True when `t` is within the hours on one of the days; hours wrapping midnight belong to the
        day they start on."""
        local = self.local(t)
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            return local.weekday() in self.days and self.start <= minute < self.end
        if minute >= self.start:  # the evening part of an overnight range
            return local.weekday() in self.days
        return minute < self.end and (local.weekday() - 1) % 7 in self.days

    def hour_label(self, t: dt.datetime) -> str:
        """The hour `t` falls in, in the schedule's time zone: "2024-03-05 10:00-11:00 UTC"."""
        local = self.local(t).replace(minute=0, second=0, microsecond=0)
        end = (local + dt.timedelta(hours=1)).strftime("%H:%M")
        return f"{local:%Y-%m-%d %H:%M}-{end} {self.tz_name}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One evaluation: the state and what it rests on (aggregates only: counts, minutes, probabilities)."""

    state: str
    #: bookings in the last 60 minutes, and the count expected over them (None without history)
    observed: int
    expected: float | None
    minutes_since_last_booking: float | None
    reason: str

    def to_dict(self, since: str | None) -> dict[str, Any]:
        return {"state": self.state, "since": since, "observed": self.observed,
                "expected": None if self.expected is None else round(self.expected, 3),
                "minutes_since_last_booking": self.minutes_since_last_booking, "reason": self.reason}


def evaluate(now: dt.datetime, *, p: float, schedule: Schedule, rate: Rate, observed_60: int,
             last_booking: dt.datetime | None) -> Verdict:
    """The verdict at `now` from the hourly expected counts (`rate`), the bookings of the last 60
    minutes and the time of the last booking (None: none on record)."""
    minutes = None if last_booking is None else round(max(0.0, (now - last_booking).total_seconds()) / 60, 1)
    h = hour_of(now)
    (cur, weeks), (prev, _) = rate(h), rate(h - 1)
    mu = None
    if cur is not None:
        e = elapsed(now)
        mu = (1 - e) * (prev if prev is not None else cur) + e * cur

    def ok(reason: str) -> Verdict:
        return Verdict("ok", observed_60, mu, minutes, reason)

    if not schedule.is_open(now):
        return ok("closed")
    if cur is None or mu is None:
        return ok("no history for this hour yet")
    if last_booking is not None:
        since_last = integrated(rate, last_booking, now)
        p0 = p_none(since_last)
        if p0 < p:
            return Verdict("silent", observed_60, mu, minutes,
                           f"no booking for {minutes:.0f} min where {since_last:.3g} were expected: "
                           f"P = {p0:.2g} < p = {p:g}")
    p_low = p_at_most(observed_60, mu)
    if p_low < p:
        return Verdict("low", observed_60, mu, minutes,
                       f"{observed_60} bookings in the last 60 min where {mu:.3g} were expected: "
                       f"P(X <= {observed_60}) = {p_low:.2g} < p = {p:g}")
    if last_booking is None:
        return ok("no booking on record")
    return ok(f"as expected at this hour ({weeks} week{'s' if weeks != 1 else ''} of history)")
