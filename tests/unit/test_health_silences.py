"""Which health checks an Alertmanager view silences (hub.sources.health_silences)."""

from __future__ import annotations

from typing import Any

import pytest

from hub.sources.health_silences import AlertSilences, covers

NOW = 1_780_000_000.0  # 2026-05-28T20:26:40Z
LATER = "2026-05-28T21:26:40Z"
EARLIER = "2026-05-28T19:26:40Z"


def m(name: str, value: str, *, regex: bool = False, equal: bool = True) -> dict[str, Any]:
    return {"name": name, "value": value, "isRegex": regex, "isEqual": equal}


def silence(sid: str, *matchers: dict[str, Any], ends: str = LATER, status: str = "active") -> dict[str, Any]:
    return {"id": sid, "matchers": list(matchers), "endsAt": ends, "status": status}


@pytest.mark.parametrize(("matchers", "expected"), [
    ([m("alertname", "HubHealthCheckDown"), m("check", "backend")], True),
    ([m("alertname", "HubHealthCheckDown")], True),  # every check's alert, as in Alertmanager
    ([m("alertname", "HubHealth.*", regex=True), m("check", "back|front", regex=True)], False),  # anchored
    ([m("alertname", "HubHealth.*", regex=True), m("check", "back.*|front.*", regex=True)], True),
    ([m("alertname", "HubHealthCheckDown"), m("check", "backend", equal=False)], False),
    ([m("alertname", "HubHealthCheckDown"), m("check", "frontend")], False),
    ([m("alertname", "HubDown"), m("check", "backend")], False),
    ([m("alertname", "HubHealthCheckDown"), m("severity", "critical"), m("check", "backend")], True),
    ([m("alertname", "HubHealthCheckDown"), m("check", "backend"), m("job", "hub")], False),  # unknown to the hub
    ([m("alertname", "HubHealthCheckDown"), m("check", "(", regex=True)], False),  # unreadable regex
    ([], False),
])
def test_matchers_against_the_rules_labels(matchers: list[dict[str, Any]], expected: bool) -> None:
    assert covers(matchers, "backend") is expected


def test_active_unended_silences_count_and_a_failed_read_keeps_the_last_view() -> None:
    now = [NOW]
    view = AlertSilences(clock=lambda: now[0])
    assert view.silenced({"backend", "frontend"}) == frozenset()
    view.observe([], [silence("a", m("alertname", "HubHealthCheckDown"), m("check", "backend")),
                      silence("p", m("alertname", "HubHealthCheckDown"), m("check", "frontend"), status="pending"),
                      silence("e", m("alertname", "HubHealthCheckDown"), m("check", "frontend"), ends=EARLIER)])
    assert view.silenced({"backend", "frontend"}) == {"backend"}
    view.observe(None, None)  # Alertmanager did not answer
    assert view.silenced({"backend", "frontend"}) == {"backend"}
    now[0] += 7200  # ...and the silence ended meanwhile
    assert view.silenced({"backend", "frontend"}) == frozenset()


def test_alertmanagers_own_judgement_of_the_alert_counts_whatever_the_matchers() -> None:
    view = AlertSilences(clock=lambda: NOW)
    job_silence = silence("j", m("alertname", "HubHealthCheckDown"), m("job", "hub"))
    alert = {"name": "HubHealthCheckDown", "labels": {"alertname": "HubHealthCheckDown", "check": "backend",
                                                       "job": "hub"}, "silencedBy": ["j"]}
    other = {"name": "HubDown", "labels": {"check": "frontend"}, "silencedBy": ["j"]}
    view.observe([alert, other], [job_silence])
    assert view.silenced({"backend", "frontend"}) == {"backend"}
    view.observe([{**alert, "silencedBy": []}], None)
    assert view.silenced({"backend"}) == frozenset()
