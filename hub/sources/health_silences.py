"""Alertmanager silences that quiet the direct channels: a health check whose `HubHealthCheckDown` alert is
silenced in Alertmanager is treated as muted (`MuteGate`: its messages are held, and a down one goes out
when the silence ends while the check is still down).

The Alertmanager source reports what it read each tick (`observe`); the health source asks which
checks are silenced (`silenced`) at its next collection, so the view is at most one tick old. A check
counts as silenced when

- Alertmanager holds its `HubHealthCheckDown` alert (label `check`) and says a silence covers it
  (`silencedBy`): Alertmanager's own judgement, whatever the silence's matchers; or
- an active silence, not ended by the clock, matches the alert's labels as the shipped rule makes
  them: every matcher names `alertname`, `check` or `severity` and matches `HubHealthCheckDown`, the
  check and `critical` (Alertmanager's semantics: anchored regexes, an absent label is ""). This one
  holds before the alert exists (a down is announced at once, the rule waits `for: 30s`), e.g. a
  silence set ahead of a deploy. A silence with a matcher on any other label (`job`, `instance`) is
  left to the first rule: the hub cannot know those labels.

While Alertmanager does not answer, the last view is kept (its silences still end by the clock).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

ALERT = "HubHealthCheckDown"
#: the labels the shipped rule gives the alert, apart from `check` (deploy/prometheus/hub-alerts.yml)
RULE_LABELS = {"alertname": ALERT, "severity": "critical"}
KNOWN = frozenset({*RULE_LABELS, "check"})


def _ends(text: Any) -> float | None:
    """Epoch seconds of an RFC 3339 time (None if it is not one)."""
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _matches(m: Mapping[str, Any], value: str) -> bool:
    """Whether one matcher ({name, value, isRegex, isEqual}) matches the label `value`."""
    if m.get("isRegex"):
        try:
            hit = re.fullmatch(str(m.get("value", "")), value) is not None
        except re.error:
            return False  # a regex Python cannot read: not counted (the first rule still applies)
    else:
        hit = m.get("value") == value
    return hit if m.get("isEqual", True) else not hit


def covers(matchers: Sequence[Mapping[str, Any]], check: str) -> bool:
    """Whether a silence with `matchers` covers `check`'s HubHealthCheckDown by its labels alone."""
    if not matchers or any(m.get("name") not in KNOWN for m in matchers):
        return False
    labels = {**RULE_LABELS, "check": check}
    return all(_matches(m, labels[str(m["name"])]) for m in matchers)


class AlertSilences:
    """The latest Alertmanager view of which health checks' alerts are silenced."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        #: check -> ids of the silences Alertmanager says cover its alert
        self._silenced_alerts: dict[str, list[str]] = {}
        #: active silences: id -> (end, matchers)
        self._silences: dict[str, tuple[float | None, list[dict[str, Any]]]] = {}

    def observe(self, alerts: list[dict[str, Any]] | None, silences: list[dict[str, Any]] | None) -> None:
        """Take one read's shaped `data.alerts` and `data.silences` (None: that list failed, the last is kept)."""
        if alerts is not None:
            self._silenced_alerts = {
                str(a["labels"]["check"]): list(a["silencedBy"]) for a in alerts
                if a.get("name") == ALERT and a.get("silencedBy") and "check" in a.get("labels", {})}
        if silences is not None:
            self._silences = {str(s["id"]): (_ends(s.get("endsAt")), s["matchers"])
                              for s in silences if s.get("status") == "active"}

    def silenced(self, checks: Collection[str]) -> frozenset[str]:
        """The `checks` whose alert is silenced now."""
        now = self.clock()
        ended = {i for i, (ends, _m) in self._silences.items() if ends is not None and ends <= now}
        live = [matchers for i, (_e, matchers) in self._silences.items() if i not in ended]
        return frozenset(c for c in checks
                         if any(i not in ended for i in self._silenced_alerts.get(c, ()))
                         or any(covers(ms, c) for ms in live))
