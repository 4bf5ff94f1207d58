"""The Alertmanager source and silences from the hub, against a real Prometheus firing rules into a
real Alertmanager 0.25 whose webhook receiver records every notification."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from hub.app import create_app
from hub.auth import hash_token
from hub.context import HUB
from tests.support.aio import recv_type, wait_for
from tests.support.alertmanager import AlertmanagerServer, start_alertmanager
from tests.support.components import config
from tests.support.prom import PrometheusServer, start_prometheus
from tests.support.timing import WAIT

ACTOR, READER = "act-token-5e0c1d2a9b", "read-token-77f0aa31c4"
#: two alerts in one Alertmanager group (grouped by `hubtest`): one notification carries what is not silenced
RULES = """\
groups:
  - name: hub-am-test
    interval: 1s
    rules:
      - alert: HubTestSilenceMe
        expr: vector(1)
        labels: {severity: warning, hubtest: am}
        annotations: {summary: To be silenced from the hub}
      - alert: HubTestKeepMe
        expr: vector(1)
        labels: {severity: critical, hubtest: am}
        annotations: {summary: Never silenced}
"""
#: long enough for the hub to see the alerts and the test to silence one before the group's first notification
GROUP_WAIT = "10s"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[AlertmanagerServer, PrometheusServer]]:
    am = start_alertmanager(tmp_path / "am", group_wait=GROUP_WAIT, group_by=("hubtest",))
    try:
        prom = start_prometheus(tmp_path / "prom", rules=RULES, alertmanagers=[am.address])
        try:
            yield am, prom
        finally:
            prom.kill()
    finally:
        am.stop()


def hub_config(tmp_path: Path, am_url: str, prom_url: str = "", **am: Any) -> Any:
    return config({
        "broadcast": {"interval": 0.5, "heartbeat": 30.0},
        "audit": {"path": str(tmp_path / "audit.jsonl")},
        "auth": {"tokens": [{"name": "alice", "hash": hash_token(ACTOR), "actions": ["silence"]},
                            {"name": "wall", "hash": hash_token(READER), "topics": ["alerts"]}]},
        "sources": {"prometheus": {"enabled": bool(prom_url), "url": prom_url or "http://127.0.0.1:9",
                                   "queries": {"one": "vector(1)"}},
                    "business": {"enabled": False}, "health": {"enabled": False},
                    "alertmanager": {"enabled": True, "url": am_url, **am}},
    })


def audit(tmp_path: Path, event: str) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(orjson.loads, lines) if r["event"] == event]


def by_name(update: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in update["data"]["alerts"] or []}


async def test_a_silence_set_from_the_hub_reaches_every_client_and_alertmanager_stays_quiet(
        aiohttp_client: Any, tmp_path: Path, stack: tuple[AlertmanagerServer, PrometheusServer]) -> None:
    am, prom = stack
    client = await aiohttp_client(create_app(hub_config(tmp_path, am.url, prom.url)))
    hub = client.app[HUB]
    act = {"Authorization": f"Bearer {ACTOR}"}
    async with client.ws_connect("/ws", headers={"Authorization": f"Bearer {READER}"}) as wall:
        # The hub shows Alertmanager's alerts (not Prometheus's: no pending one, and the new fields).
        while True:
            update = await recv_type(wall, "metrics_update", timeout=WAIT)
            alerts = by_name(update)
            if {"HubTestSilenceMe", "HubTestKeepMe"} <= set(alerts):
                break
        assert set(update["data"]) == {"alerts", "silences"}  # a token limited to alerts gets silences too
        assert update["sources"]["alertmanager"]["status"] == "ok" and "prometheus" not in update["sources"]
        assert update["data"]["silences"] == []
        target = alerts["HubTestSilenceMe"]
        assert target["state"] == "firing" and target["severity"] == "warning"
        assert target["summary"] == "To be silenced from the hub"
        assert target["labels"] == {"alertname": "HubTestSilenceMe", "severity": "warning", "hubtest": "am"}
        assert target["amState"] == "active" and target["silencedBy"] == [] and target["inhibitedBy"] == []
        assert len(target["fingerprint"]) == 16 and target["activeAt"].endswith("Z")
        assert am.receiver.posts == [], "the group's first notification came before the test could silence"

        resp = await client.post("/api/silences", headers=act,
                                 json={"fingerprint": target["fingerprint"], "duration_s": 3600,
                                       "comment": "known noisy, ticket OPS-12"})
        seq_after = hub.feed.seq
        assert resp.status == 201, await resp.text()
        sid = (await resp.json())["silenceID"]
        (held,) = am.silences("active")
        assert held["id"] == sid and held["createdBy"] == "alice" and held["comment"] == "known noisy, ticket OPS-12"
        ends = dt.datetime.fromisoformat(held["endsAt"]) - dt.datetime.fromisoformat(held["startsAt"])
        assert abs(ends.total_seconds() - 3600) < 5
        assert {(m["name"], m["value"], m["isRegex"]) for m in held["matchers"]} == {
            ("alertname", "HubTestSilenceMe", False), ("severity", "warning", False), ("hubtest", "am", False)}

        # Within 2 ticks every client shows it silenced, with the token's name.
        while True:
            update = await recv_type(wall, "metrics_update", timeout=WAIT)
            silenced = by_name(update)["HubTestSilenceMe"]
            if silenced["amState"] == "suppressed":
                break
        assert update["seq"] <= seq_after + 2, (update["seq"], seq_after)
        assert silenced["silencedBy"] == [sid] and by_name(update)["HubTestKeepMe"]["amState"] == "active"
        (shown,) = update["data"]["silences"]
        assert shown["id"] == sid and shown["createdBy"] == "alice" and shown["status"] == "active"
        assert shown["comment"] == "known noisy, ticket OPS-12" and shown["endsAt"] == held["endsAt"]
        assert {m["name"] for m in shown["matchers"]} == {"alertname", "severity", "hubtest"}

    # The group's first notification carries the other alert, and not the silenced one.
    await wait_for(lambda: am.receiver.posts, timeout=WAIT, what="Alertmanager's first notification")
    assert am.receiver.notified() == [("HubTestKeepMe", "firing")]

    (line,) = await wait_for(lambda: audit(tmp_path, "silence_created"), timeout=WAIT, what="the audit line")
    assert line["name"] == "alice" and line["silence_id"] == sid and line["fingerprint"] == target["fingerprint"]
    assert line["comment"] == "known noisy, ticket OPS-12" and line["until"].endswith("Z")
    assert sorted(line["matchers"]) == ['alertname="HubTestSilenceMe"', 'hubtest="am"', 'severity="warning"']

    # DELETE expires it, whoever set it; once gone it is unknown.
    resp = await client.delete(f"/api/silences/{sid}", headers=act)
    assert resp.status == 200 and await resp.json() == {"silenceID": sid, "status": "expired"}
    assert [s["id"] for s in am.silences("expired")] == [sid] and am.silences("active", "pending") == []
    gone = await client.delete(f"/api/silences/{sid}", headers=act)
    assert gone.status == 404
    assert await gone.json() == {"error": f"no active or pending silence '{sid}' in Alertmanager"}
    (line,) = await wait_for(lambda: audit(tmp_path, "silence_expired"), timeout=WAIT, what="the audit line")
    assert line["name"] == "alice" and line["silence_id"] == sid and line["created_by"] == "alice"
    assert line["comment"] == "known noisy, ticket OPS-12" and line["until"] == held["endsAt"]
    assert len(audit(tmp_path, "silence_created")) == 1

    async def unsilenced() -> bool:
        body = await (await client.get("/api/metrics/snapshot", headers=act)).json()
        return body["data"]["silences"] == [] and by_name(body)["HubTestSilenceMe"]["amState"] == "active"

    await wait_for(unsilenced, timeout=WAIT, what="the expired silence gone from the snapshot")


async def test_a_read_only_token_gets_403_and_nothing_is_created(
        aiohttp_client: Any, tmp_path: Path) -> None:
    am = start_alertmanager(tmp_path / "am")
    try:
        am.post_alerts([{"labels": {"alertname": "HubTestDirect", "severity": "info"}}])
        fp = am.api("alerts")[0]["fingerprint"]
        client = await aiohttp_client(create_app(hub_config(tmp_path, am.url)))
        resp = await client.post("/api/silences", headers={"Authorization": f"Bearer {READER}"},
                                 json={"fingerprint": fp, "duration_s": 3600, "comment": "from the wall"})
        assert resp.status == 403
        assert await resp.json() == {"error": "forbidden: token 'wall' may not silence (its actions: [])"}
        resp = await client.post("/api/silences", json={"fingerprint": fp, "duration_s": 60, "comment": "x"})
        assert resp.status == 401
        assert am.silences() == []
        (refused,) = await wait_for(lambda: audit(tmp_path, "action_refused"), timeout=WAIT, what="audit")
        assert refused["name"] == "wall" and refused["action"] == "silence"
    finally:
        am.stop()


NOW_PLUS = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
PAST = "2001-01-01T00:00:00Z"
ALERT_MATCHER = {"name": "alertname", "value": "HubTestDirect", "isRegex": False}
#: (body, the exact 400 message)
BAD: list[tuple[Any, str]] = [
    ({"fingerprint": "0123456789abcdef", "duration_s": 3600, "comment": "c"},
     "unknown fingerprint '0123456789abcdef': Alertmanager holds no alert with it now"),
    ({"matchers": [], "duration_s": 3600, "comment": "c"},
     '"matchers" must be a non-empty list of {"name", "value", "isRegex", "isEqual"}'),
    ({"matchers": [{"name": "alertname", "value": ".*", "isRegex": True}], "duration_s": 3600, "comment": "c"},
     "these matchers would match every alert: at least one must select something, e.g. "
     '{"name": "alertname", "value": "<name>", "isRegex": false}'),
    ({"matchers": [{"name": "alertname", "value": ".+", "isRegex": True},
                   {"name": "severity", "value": "(.*)", "isRegex": True}], "duration_s": 3600, "comment": "c"},
     "these matchers would match every alert: at least one must select something, e.g. "
     '{"name": "alertname", "value": "<name>", "isRegex": false}'),
    ({"matchers": [{"name": "alertname", "value": "x", "isRegex": False, "isEqual": False}],
      "duration_s": 3600, "comment": "c"},
     "these matchers would match every alert: at least one must select something, e.g. "
     '{"name": "alertname", "value": "<name>", "isRegex": false}'),
    ({"matchers": [ALERT_MATCHER], "duration_s": 0, "comment": "c"}, '"duration_s" must be more than 0, got 0'),
    ({"matchers": [ALERT_MATCHER], "duration_s": -60, "comment": "c"}, '"duration_s" must be more than 0, got -60'),
    ({"matchers": [ALERT_MATCHER], "duration_s": 7201, "comment": "c"},
     '"duration_s" 7201 is longer than the longest silence allowed (sources.alertmanager.max_silence_s, 7200 s)'),
    ({"matchers": [ALERT_MATCHER], "endsAt": PAST, "comment": "c"}, '"endsAt" is not in the future'),
    ({"matchers": [ALERT_MATCHER], "duration_s": 60, "comment": "   "},
     '"comment" is required: say why (a non-empty string)'),
    ({"matchers": [ALERT_MATCHER], "duration_s": 60}, '"comment" is required: say why (a non-empty string)'),
    ({"matchers": [ALERT_MATCHER], "duration_s": "60", "comment": "c"}, '"duration_s" must be a number of seconds'),
    ({"matchers": [ALERT_MATCHER], "duration_s": True, "comment": "c"}, '"duration_s" must be a number of seconds'),
    ({"matchers": "alertname=x", "duration_s": 60, "comment": "c"},
     '"matchers" must be a non-empty list of {"name", "value", "isRegex", "isEqual"}'),
    ({"fingerprint": 5, "duration_s": 60, "comment": "c"},
     "\"fingerprint\" must be a non-empty string (an alert's fingerprint)"),
    ([ALERT_MATCHER], "the body must be a JSON object"),
    (b'{"matchers": [', None),  # malformed JSON: the message quotes the parser
]


async def test_bad_input_gets_400_and_alertmanager_holds_no_silence(aiohttp_client: Any, tmp_path: Path) -> None:
    am = start_alertmanager(tmp_path / "am")
    try:
        am.post_alerts([{"labels": {"alertname": "HubTestDirect", "severity": "info"}}])
        client = await aiohttp_client(create_app(hub_config(tmp_path, am.url, max_silence_s=7200)))
        act = {"Authorization": f"Bearer {ACTOR}"}
        for body, message in BAD:
            data = body if isinstance(body, bytes) else orjson.dumps(body)
            resp = await client.post("/api/silences", headers=act, data=data)
            assert resp.status == 400, (body, await resp.text())
            error = (await resp.json())["error"]
            if message is None:
                assert error.startswith("the body is not valid JSON ("), error
            else:
                assert error == message, body
            assert am.silences() == [], body
        # The same token and a good body do create one (the cases above failed for their own reason).
        resp = await client.post("/api/silences", headers=act,
                                 json={"matchers": [ALERT_MATCHER], "endsAt": NOW_PLUS, "comment": "fine"})
        assert resp.status == 201, await resp.text()
        assert [s["createdBy"] for s in am.silences("active")] == ["alice"]
    finally:
        am.stop()
