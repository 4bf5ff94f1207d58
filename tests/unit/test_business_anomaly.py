"""The detectors' statistics without a database: Poisson probabilities, the opening hours, integration
over hours, and a simulated week of normal traffic whose false alarms stay within what `p` implies."""

from __future__ import annotations

import bisect
import datetime as dt
import math
import random

from hub.sources.business.anomaly import Schedule, evaluate
from hub.sources.business.buckets import hour_of, hour_start
from hub.sources.business.expected import WEEK_HOURS, expected_rate, p_at_most
from tests.support.components import config

UTC = dt.UTC
P = 0.001


def schedule(**keys: object) -> Schedule:
    return Schedule(config({"sources": {"business": {"anomaly": keys}}}).sources.business.anomaly)


def flat(lam: float):
    return lambda hour: (lam, 4)


def silent_minutes(lam: float) -> float:
    """The first whole minute of silence that the detector calls silent at a flat `lam` per hour."""
    t0 = dt.datetime(2024, 3, 5, 10, 0, tzinfo=UTC)
    sched = schedule()
    for m in range(1, 24 * 60):
        v = evaluate(t0 + dt.timedelta(minutes=m), p=P, schedule=sched, rate=flat(lam),
                     observed_60=10**6, last_booking=t0)
        if v.state == "silent":
            return m
    return math.inf


def test_silence_thresholds_follow_the_poisson_rate() -> None:
    # e^(-lam t / 60) < 0.001: about 10 minutes at 40 per hour, about 3.5 hours at 2 per hour
    assert silent_minutes(40) == math.ceil(60 * math.log(1000) / 40) == 11
    assert silent_minutes(2) == math.ceil(60 * math.log(1000) / 2) == 208
    assert silent_minutes(0) == math.inf  # an hour that never has bookings never pages


def test_a_silence_spanning_hours_integrates_the_rate_hour_by_hour() -> None:
    # Last booking 09:50; 09:xx expects 0, 10:xx expects 60: 6.9 expected from 10:00, so silent from 10:07.
    last = dt.datetime(2024, 3, 5, 9, 50, tzinfo=UTC)
    rate = lambda h: (60.0 if hour_start(h).hour == 10 else 0.0, 4)  # noqa: E731
    at = lambda m: evaluate(last.replace(hour=10, minute=m), p=P, schedule=schedule(), rate=rate,  # noqa: E731
                            observed_60=10**6, last_booking=last)
    assert at(6).state == "ok" and at(7).state == "silent"
    assert at(7).minutes_since_last_booking == 17.0
    assert at(7).reason.startswith("no booking for 17 min where 7 were expected: P = 0.00091 < p = 0.001")


def test_low_is_an_improbably_low_count_over_the_last_60_minutes() -> None:
    now = dt.datetime(2024, 3, 5, 10, 30, tzinfo=UTC)
    last = now - dt.timedelta(minutes=1)
    v = evaluate(now, p=P, schedule=schedule(), rate=flat(60), observed_60=30, last_booking=last)
    assert v.state == "low" and v.expected == 60 and v.observed == 30
    direct = math.fsum(math.exp(-60) * 60**k / math.factorial(k) for k in range(31))
    assert math.isclose(p_at_most(30, 60), direct, rel_tol=1e-9) and direct < P / 50  # half of 60: far below p
    assert evaluate(now, p=P, schedule=schedule(), rate=flat(60), observed_60=45, last_booking=last).state == "ok"
    # the same 50 % drop at 2 per hour is not improbable: quiet hours do not page
    assert evaluate(now, p=P, schedule=schedule(), rate=flat(2), observed_60=1, last_booking=last).state == "ok"


def test_outside_the_hours_and_days_the_state_is_ok_closed() -> None:
    sched = schedule(hours="07:00-19:00", days=["mon", "tue", "wed", "thu", "fri"], timezone="Europe/Paris")
    tue_0630_utc = dt.datetime(2024, 3, 5, 6, 30, tzinfo=UTC)  # 07:30 in Paris (UTC+1 in March)
    assert sched.is_open(tue_0630_utc) and not sched.is_open(tue_0630_utc - dt.timedelta(hours=1))
    assert not sched.is_open(dt.datetime(2024, 3, 9, 12, 0, tzinfo=UTC))  # Saturday
    v = evaluate(dt.datetime(2024, 3, 9, 12, 0, tzinfo=UTC), p=P, schedule=sched, rate=flat(60), observed_60=0,
                 last_booking=None)
    assert (v.state, v.reason) == ("ok", "closed")
    night = schedule(hours="22:00-06:00", days=["fri"])  # Friday night into Saturday morning
    assert night.is_open(dt.datetime(2024, 3, 8, 23, 0, tzinfo=UTC))
    assert night.is_open(dt.datetime(2024, 3, 9, 5, 0, tzinfo=UTC))
    assert not night.is_open(dt.datetime(2024, 3, 8, 5, 0, tzinfo=UTC))  # Friday early morning: Thursday's night


def test_expected_is_the_median_of_the_same_hour_over_the_weeks_kept() -> None:
    h = hour_of(dt.datetime(2024, 3, 5, 10, 0, tzinfo=UTC))
    counts = {h - WEEK_HOURS: 50, h - 2 * WEEK_HOURS: 70, h - 3 * WEEK_HOURS: 10, h - 4 * WEEK_HOURS: 60,
              h - 5 * WEEK_HOURS: 1000, h - 1: 5}
    assert expected_rate(counts)(h) == (55.0, 4)
    assert expected_rate(counts, history_from=h - 2 * WEEK_HOURS)(h) == (60.0, 2)  # younger history: 2 weeks
    assert expected_rate({})(h) == (None, 0)


# ---------------------------------------------------------------------- a simulated week

def seasonal(t: dt.datetime) -> float:
    """Bookings per hour of a typical week: busy weekday mornings and afternoons, quiet nights."""
    if t.weekday() >= 5:
        return 8.0 if 9 <= t.hour < 18 else 1.0
    return {8: 30.0, 9: 50.0, 10: 60.0, 11: 55.0, 12: 35.0, 13: 45.0, 14: 55.0, 15: 50.0, 16: 40.0,
            17: 25.0, 18: 12.0}.get(t.hour, 1.5)


def test_a_week_of_normal_poisson_traffic_keeps_false_alarms_within_what_p_implies() -> None:
    rng = random.Random(24)
    start = dt.datetime(2024, 1, 1, tzinfo=UTC)  # a Monday; 4 weeks of history, then the week evaluated
    times: list[dt.datetime] = []
    for h in range(5 * WEEK_HOURS):
        t0 = start + dt.timedelta(hours=h)
        n = _poisson(rng, seasonal(t0))
        times += sorted(t0 + dt.timedelta(seconds=rng.random() * 3600) for _ in range(n))
    counts: dict[int, int] = {}
    for t in times:
        counts[hour_of(t)] = counts.get(hour_of(t), 0) + 1
    week = start + dt.timedelta(weeks=4)
    evaluations = alarms = episodes = 0
    state = "ok"
    sched = schedule()
    rates = {}
    for m in range(7 * 24 * 60):
        now = week + dt.timedelta(minutes=m)
        if hour_of(now) not in rates:  # the buckets a hub keeps: closed hours only
            rates[hour_of(now)] = expected_rate({h: c for h, c in counts.items() if h < hour_of(now)})
        rate = rates[hour_of(now)]
        i = bisect.bisect_right(times, now)
        n60 = i - bisect.bisect_left(times, now - dt.timedelta(hours=1))
        v = evaluate(now, p=P, schedule=sched, rate=rate, observed_60=n60, last_booking=times[i - 1] if i else None)
        evaluations += 1
        alarms += v.state != "ok"
        episodes += v.state != "ok" and state == "ok"
        state = v.state
    # Each evaluation's chance of a false alarm is at most p per detector, so at most 2 p n of the n
    # evaluations (20.2 here) are expected in alarm. Observed with seed 24: 3 evaluations in alarm,
    # in 1 episode.
    print(f"simulated week: {evaluations} evaluations, {alarms} in alarm, {episodes} episodes "
          f"(p = {P}: at most {2 * P * evaluations:.1f} expected)")
    assert evaluations == 10080
    assert alarms <= 2 * P * evaluations, alarms
    assert episodes <= alarms


def _poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth; lam is at most 60 here)."""
    limit, k, prod = math.exp(-lam), 0, rng.random()
    while prod > limit:
        k += 1
        prod *= rng.random()
    return k


# ---------------------------------------------------------------------- one message per transition, cluster-wide

class Recorder:
    """Stands in for the Notifier (its channels have their own tests)."""

    repeat_interval = 0.0

    def __init__(self) -> None:
        self.sent: list = []

    def notify(self, n: object) -> None:
        self.sent.append(n)


async def test_two_collectors_sharing_the_store_announce_each_transition_once() -> None:
    from hub.notify.pagerduty import pagerduty_event
    from hub.sources.business.anomaly import Verdict
    from hub.sources.business.expected import Expected
    from hub.sources.business.watch import AnomalyWatch
    from hub.state import MemoryStore

    store, a, b = MemoryStore(), Recorder(), Recorder()
    one, two = (AnomalyWatch(schedule(), store=store, notifier=r) for r in (a, b))
    t = dt.datetime(2024, 3, 5, 10, 7, tzinfo=UTC)
    exp = Expected(hour=60.0, observed=3, elapsed=7 / 60, weeks=4)
    silent = Verdict("silent", 53, 60.0, 7.5, "no booking for 8 min")
    low = Verdict("low", 30, 60.0, 1.0, "30 bookings")
    ok = Verdict("ok", 55, 60.0, 0.5, "as expected")
    assert (await one.update(silent, exp, t))["state"] == "silent"
    shown = await two.update(silent, exp, t + dt.timedelta(seconds=10))  # the other collector continues it
    assert shown["since"] == "2024-03-05T10:07:00.000Z"
    await two.update(low, exp, t + dt.timedelta(minutes=5))  # within the episode: no message
    await one.update(ok, exp, t + dt.timedelta(minutes=20))
    await two.update(ok, exp, t + dt.timedelta(minutes=21))
    sent = a.sent + b.sent
    assert [(n.kind, n.severity, n.check, n.group) for n in sent] == [
        ("anomaly", "critical", "bookings", "business"), ("recovered", "info", "bookings", "business")]
    assert sent[0].text == ("Bookings silent: no booking for 8 min, improbable at this hour (hour 2024-03-05 "
                            "10:00-11:00 UTC: about 60 bookings expected, 3 so far; 53 in the last 60 min; "
                            "last booking: 8 min ago)")
    assert sent[1].text.startswith("Bookings back to normal after 20 min (hour 2024-03-05 10:00-11:00 UTC")
    # PagerDuty: the episode's trigger and resolve share one incident, apart from any health check's
    events = [pagerduty_event(n, routing_key="k", hub_name="hub") for n in sent]
    assert [(e["event_action"], e["dedup_key"]) for e in events] == [("trigger", "hub/business/bookings"),
                                                                     ("resolve", "hub/business/bookings")]


def test_the_business_gauges_follow_the_served_snapshot() -> None:
    from prometheus_client import generate_latest

    from hub.metrics import HubMetrics

    m = HubMetrics()
    lines = lambda: sorted(ln for ln in generate_latest(m.registry).decode().splitlines()  # noqa: E731
                           if ln.startswith(("hub_business_bookings", "hub_business_minutes", "hub_business_anomaly")))
    assert lines() == []  # nothing before a snapshot carried the verdict
    m.business_export.observe({"business": {"expected": {"hour": 60.0, "observed": 12, "elapsed": 0.5, "weeks": 4},
                                            "anomaly": {"state": "low", "minutes_since_last_booking": 2.5}}})
    assert lines() == ['hub_business_anomaly{kind="low"} 1.0', 'hub_business_anomaly{kind="silent"} 0.0',
                       "hub_business_bookings_expected 60.0", "hub_business_bookings_observed 12.0",
                       "hub_business_minutes_since_last_booking 2.5"]
    m.business_export.fresh = lambda: False  # a stalled replica exports no verdict
    assert lines() == []
