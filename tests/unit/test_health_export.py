"""hub_health_check_up follows the served snapshots' check states, and is absent while the feed is stalled."""

from __future__ import annotations

from prometheus_client import generate_latest

from hub.metrics import HubMetrics


def exported(metrics: HubMetrics) -> list[str]:
    text = generate_latest(metrics.registry).decode()
    return [line for line in text.splitlines() if line.startswith("hub_health_check_up{")]


def health(**up: bool) -> dict[str, object]:
    return {"health": {"healthy": all(up.values()), "details": up,
                       "checks": {name: {"up": u, "failures": 0} for name, u in up.items()}}}


def test_every_check_of_the_served_snapshot_is_exported() -> None:
    m = HubMetrics()
    assert exported(m) == []  # nothing served yet: no state claimed
    m.health_check_up.observe(health(frontend=True, backend=False))
    assert exported(m) == ['hub_health_check_up{check="backend"} 0.0', 'hub_health_check_up{check="frontend"} 1.0']
    assert m.registry.get_sample_value("hub_health_check_up", {"check": "backend"}) == 0.0


def test_a_snapshot_without_health_keeps_the_last_states_and_a_renamed_check_goes() -> None:
    m = HubMetrics()
    m.health_check_up.observe(health(backend=False))
    for data in ({}, {"health": None}, {"health": {"checks": "junk"}}):  # disabled, or failed this tick
        m.health_check_up.observe(data)
        assert exported(m) == ['hub_health_check_up{check="backend"} 0.0']
    m.health_check_up.observe(health(api=True))  # the collector's config renamed the check
    assert exported(m) == ['hub_health_check_up{check="api"} 1.0']


def test_malformed_states_are_skipped() -> None:
    m = HubMetrics()
    m.health_check_up.observe({"health": {"checks": {"a": {"up": "yes"}, "b": None, "c": {"up": True}}}})
    assert exported(m) == ['hub_health_check_up{check="c"} 1.0']


def test_a_stalled_replica_exports_no_state() -> None:
    m = HubMetrics()
    stalled = [False]
    m.health_check_up.fresh = lambda: not stalled[0]
    m.health_check_up.observe(health(backend=False))
    assert m.health_check_up.value("backend") == 0.0
    stalled[0] = True
    assert exported(m) == [] and m.health_check_up.value("backend") is None
    assert "# TYPE hub_health_check_up gauge" in generate_latest(m.registry).decode()  # the family stays
    stalled[0] = False
    assert exported(m) == ['hub_health_check_up{check="backend"} 0.0']


def test_state_and_cert_days_follow_the_served_snapshot() -> None:
    m = HubMetrics()
    m.health_check_up.observe({"health": {"checks": {
        "api": {"up": True, "state": "degraded", "cert_days": 4.5},
        "web": {"up": False, "state": "down", "cert_days": None},
        "old": {"up": True}}}})  # a collector from before the states: its state follows from up
    text = generate_latest(m.registry).decode().splitlines()
    assert [line for line in text if line.startswith("hub_health_check_state{")] == [
        'hub_health_check_state{check="api",state="up"} 0.0',
        'hub_health_check_state{check="api",state="degraded"} 1.0',
        'hub_health_check_state{check="api",state="down"} 0.0',
        'hub_health_check_state{check="old",state="up"} 1.0',
        'hub_health_check_state{check="old",state="degraded"} 0.0',
        'hub_health_check_state{check="old",state="down"} 0.0',
        'hub_health_check_state{check="web",state="up"} 0.0',
        'hub_health_check_state{check="web",state="degraded"} 0.0',
        'hub_health_check_state{check="web",state="down"} 1.0']
    assert [line for line in text if line.startswith("hub_health_check_cert_days{")] == [
        'hub_health_check_cert_days{check="api"} 4.5']
    m.health_check_up.fresh = lambda: False  # a stalled feed: no state claimed at all
    text = generate_latest(m.registry).decode().splitlines()
    assert not [line for line in text if line.startswith(("hub_health_check_state{", "hub_health_check_cert_days{"))]
