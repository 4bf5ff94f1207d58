"""Expected bookings per hour: the median of the same weekday and hour over the last 4 weeks, from the
closed hours' counts the bucket store keeps, and the Poisson probabilities the detectors test.

Hours are the bucket store's (UTC, milliseconds since the epoch // 3600000): "the same weekday and
hour" a week earlier is 168 hours earlier. Only counts are read, never a document.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hub.sources.business.buckets import HOUR_MS, hour_of, hour_start

WEEK_HOURS = 168
#: the weeks the median looks back
WEEKS = 4
#: a silence is integrated over at most this many past hours (the kept buckets cover 30 days, and a
#: silence of a day at any non-zero rate is improbable long before this)
MAX_SILENCE_HOURS = 24
HOUR_S = HOUR_MS / 1000

#: the expected count of one hour and the weeks of history behind it (None with no week)
Rate = Callable[[int], tuple[float | None, int]]


def expected_rate(counts: Mapping[int, int], *, history_from: int | None = None) -> Rate:
    """The expected count of an hour: the median of the same weekday and hour over the last WEEKS weeks
    found in `counts` (hour -> bookings); a week before `history_from` (the hour of the first booking,
    when known) is no history and not counted."""

    def rate(hour: int) -> tuple[float | None, int]:
        found = [counts[h] for k in range(1, WEEKS + 1)
                 if (h := hour - k * WEEK_HOURS) in counts and (history_from is None or h >= history_from)]
        return (float(statistics.median(found)) if found else None), len(found)

    return rate


def elapsed(now: dt.datetime) -> float:
    """The fraction of the current hour that has passed at `now`, in [0, 1)."""
    return (now - hour_start(hour_of(now))) / dt.timedelta(hours=1)


def integrated(rate: Rate, start: dt.datetime, end: dt.datetime) -> float:
    """The expected bookings in [start, end): the hourly expected counts integrated hour by hour (an hour
    without history counts 0, so it never makes a silence look improbable)."""
    if end <= start:
        return 0.0
    start = max(start, end - dt.timedelta(hours=MAX_SILENCE_HOURS))
    total = 0.0
    for h in range(hour_of(start), hour_of(end) + 1):
        a, b = max(start, hour_start(h)), min(end, hour_start(h + 1))
        if b > a:
            lam = rate(h)[0] or 0.0
            total += lam * (b - a).total_seconds() / HOUR_S
    return total


def p_none(mu: float) -> float:
    """P(no booking) when `mu` are expected: e^(-mu)."""
    return math.exp(-mu)


def p_at_most(k: int, mu: float) -> float:
    """P(X <= k) for X ~ Poisson(mu), summed in log space (stable for large mu)."""
    if mu <= 0:
        return 1.0
    if k < 0:
        return 0.0
    if k > mu + 40 * math.sqrt(mu) + 40:  # the tail beyond is below 1e-300: not worth k terms
        return 1.0
    log_mu = math.log(mu)
    terms = [i * log_mu - mu - math.lgamma(i + 1) for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


@dataclass(frozen=True, slots=True)
class Expected:
    """`data.business.expected`: the current hour's expected count, the bookings so far in it, the
    fraction of it that has passed and the weeks of history behind the expectation."""

    hour: float | None
    observed: int
    elapsed: float
    weeks: int

    def to_dict(self) -> dict[str, float | int | None]:
        return {"hour": None if self.hour is None else round(self.hour, 3), "observed": self.observed,
                "elapsed": round(self.elapsed, 4), "weeks": self.weeks}
