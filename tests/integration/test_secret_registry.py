"""One secret registry: every key declared secret in the schema is known, in every form, to every
component, and no secret reaches a log, a snapshot, /metrics, the audit log or a notification."""

from __future__ import annotations

import dataclasses
import logging
import typing
from pathlib import Path
from typing import Any

import orjson
import pytest

from hub.app import create_app
from hub.config import Config, build_config, secrets_of
from hub.config.spec import key, section, spec_of
from hub.context import HUB
from hub.metrics import HubMetrics
from hub.scheduler import Scheduler
from hub.sources.base import Source, SourceError, SourceResult
from tests.support import free_port
from tests.support.aio import wait_for
from tests.support.pagerduty import pagerduty_receiver
from tests.support.slack import slack_receiver

MARK = "mk7Q2xZ"  # in every secret below: any leak, in any form, contains it


def secret_keys(cls: Any = Config, prefix: str = "") -> set[str]:
    """Every key the schema declares secret, by its dotted name (lists of tables included)."""
    out: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        spec = spec_of(f)
        path = f"{prefix}{f.name}"
        if spec is not None and spec.secret:
            out.add(path)
        tp = hints[f.name]
        inner = [tp, *typing.get_args(tp)]
        for t in inner:
            if isinstance(t, type) and dataclasses.is_dataclass(t):
                out |= secret_keys(t, path + ".")
    return out


# ----------------------------------------------------------------------------- a new secret key


@dataclasses.dataclass(frozen=True, kw_only=True)
class VendorSection:
    api_key: str = key("", secret="value", doc="a new integration's key")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConfigWithAVendor(Config):
    vendor: VendorSection = section(VendorSection, "a new integration")


class EchoingSource(Source):
    """A source whose dependency echoes a credential in its errors, as misconfigured proxies do."""

    name, sections, timeout = "echo", ("system",), 1.0

    def __init__(self, echoed: str) -> None:
        self.echoed = echoed

    async def collect(self, budget: float) -> SourceResult:
        raise SourceError(f"upstream said: bad key {self.echoed} (also {self.echoed.upper()})")


async def test_a_new_secret_key_is_scrubbed_everywhere_without_touching_a_component():
    cfg = ConfigWithAVendor(vendor=VendorSection(api_key=f"{MARK}-vendor-key"))
    secrets = secrets_of(cfg)  # found through the schema's secret= flag alone
    assert f"{MARK}-vendor-key" in secrets
    # Any component handed the registry scrubs it: here the scheduler, from a source's error.
    sched = Scheduler(sources=[EchoingSource(f"{MARK}-vendor-key")], interval=1.0, metrics=HubMetrics(),
                      secrets=secrets)
    out = await sched.collect()
    error = orjson.loads(out.sources["echo"])["error"]
    assert f"{MARK}-vendor-key" not in error and "upstream said: bad key ***" in error, error


# ----------------------------------------------------------------------------- every real secret key


#: a PagerDuty routing key (32 characters, as PagerDuty's) carrying the marker
PD_KEY = f"{MARK}pdroutingkey0123456789abc"


def marked_config(tmp_path: Path, webhook: str, prometheus_auth: str, pagerduty_url: str) -> dict[str, Any]:
    closed = free_port()  # nothing listens: every dependency fails, and says so
    auth = ({"basic_auth_user": "ops", "basic_auth_password": f"{MARK}basicpw"} if prometheus_auth == "basic"
            else {"bearer_token": f"{MARK}bearertoken"})
    return {
        "broadcast": {"interval": 0.2, "heartbeat": 30.0},
        "audit": {"path": str(tmp_path / "audit.jsonl")},
        "auth": {"tokens": [{"name": "ops", "hash": f"{MARK}plaintexttoken", "actions": ["silence"]}],
                 "oidc": {"issuer": f"http://127.0.0.1:{closed}", "client_id": "hub",
                          "client_secret": f"{MARK}oidcsecret", "roles": {"oncall": {"actions": ["silence"]}}}},
        "sources": {
            "prometheus": {"url": f"http://prom:{MARK}prompw@127.0.0.1:{closed}", "timeout": 0.5, **auth},
            "business": {"mongodb_uri": f"mongodb://biz:{MARK}mongopw@127.0.0.1:{closed}/healthcare",
                         "timeout": 0.5},
            "health": {"checks": {"api": f"http://chk:{MARK}checkpw@127.0.0.1:{closed}/health"},
                       "failures_before_down": 1, "timeout": 0.5},
            "alertmanager": {"enabled": True, "url": f"http://am:{MARK}ampw@127.0.0.1:{closed}", "timeout": 0.5,
                             **{k: v.replace(MARK, f"{MARK}am") for k, v in auth.items()}},
        },
        "notify": {"slack_webhook_url": webhook, "pagerduty_routing_key": PD_KEY, "pagerduty_url": pagerduty_url},
    }


#: the secret keys each test below sets to a marker; a new secret key fails the first test until added
MARKED = {"sources.prometheus.url", "sources.prometheus.bearer_token", "sources.prometheus.basic_auth_password",
          "sources.business.mongodb_uri", "sources.health.checks", "auth.tokens.hash", "notify.slack_webhook_url",
          "notify.pagerduty_routing_key", "cluster.redis_url", "sources.alertmanager.url",
          "sources.alertmanager.bearer_token", "sources.alertmanager.basic_auth_password",
          "auth.oidc.client_secret"}


def test_every_secret_key_of_the_schema_is_marked_below():
    assert secret_keys() == MARKED


def assert_no_marker(**places: str) -> None:
    for where, text in places.items():
        assert MARK not in text, f"a secret reached {where}: {text[max(0, text.find(MARK) - 200):][:400]}"


@pytest.mark.parametrize("prometheus_auth", ["basic", "bearer"])
async def test_every_secret_set_to_a_marker_reaches_no_log_snapshot_metric_audit_or_message(
        aiohttp_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, prometheus_auth: str) -> None:
    caplog.set_level(logging.DEBUG)
    # The webhook's token part carries the marker; the receiver echoes the URL in its 500s.
    # The PagerDuty stand-in echoes the routing key in its 5xx and 400 answers, as a proxy might.
    async with slack_receiver(path=f"/services/T0/B0/{MARK}hook") as slack, pagerduty_receiver() as pd:
        slack.script = [(500, {}, f"no such hook {slack.url}")] * 2
        pd.script = [(503, {}, f"busy: {PD_KEY}"), (400, {}, f'{{"errors":["routing_key {PD_KEY}"]}}')]
        cfg = build_config(marked_config(tmp_path, slack.url, prometheus_auth, pd.url), environ={})
        client = await aiohttp_client(create_app(cfg))
        hub = client.app[HUB]
        await wait_for(lambda: len(slack.attempts) >= 2, timeout=15, what="notification attempts")
        await wait_for(lambda: len(pd.attempts) >= 2, timeout=15, what="PagerDuty attempts")
        assert pd.attempts[0][2]["routing_key"] == PD_KEY  # sent where it belongs, and nowhere else
        await wait_for(lambda: hub.feed.seq >= 5, timeout=10, what="ticks with every source failing")
        snapshot = await (await client.get("/api/metrics/snapshot",
                                           headers={"Authorization": f"Bearer {MARK}plaintexttoken"})).text()
        silence = await client.post("/api/silences", headers={"Authorization": f"Bearer {MARK}plaintexttoken"},
                                    json={"matchers": [{"name": "alertname", "value": "X", "isRegex": False}],
                                          "duration_s": 60, "comment": "c"})
        assert silence.status == 503
        refused = await silence.text()
        bad = await client.get("/api/metrics/snapshot", headers={"Authorization": f"Bearer {MARK}wrong"})
        assert bad.status == 401
        login = await client.get("/auth/login", allow_redirects=False)
        assert login.status == 503  # the provider cannot be reached
        refused += await login.text()
        metrics = await (await client.get("/metrics")).text()
    snap = orjson.loads(snapshot)
    assert {snap["sources"][s]["status"] for s in ("prometheus", "business", "alertmanager")} == {"error"}, \
        snap["sources"]
    assert "cannot reach Alertmanager at http://am:***@127.0.0.1:" in refused, refused
    assert snap["data"]["health"]["checks"]["api"]["error"]
    sent = orjson.dumps([body for _t, _s, body in slack.attempts]).decode()
    assert "Health check failed: api" in sent  # the message went out, without the check's password
    assert_no_marker(log=caplog.text, snapshot=snapshot, metrics=metrics, silence=refused,
                     audit=(tmp_path / "audit.jsonl").read_text(), notification=sent)


async def test_a_redis_url_set_to_a_marker_reaches_no_log_status_or_metric(
        aiohttp_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"redis://:{MARK}redispw@127.0.0.1:{free_port()}/0"  # nothing listens
    cfg = build_config({"broadcast": {"interval": 0.2}, "cluster": {"redis_url": url},
                        "sources": {"prometheus": {"enabled": False}, "business": {"enabled": False},
                                    "health": {"enabled": False}}}, environ={})
    client = await aiohttp_client(create_app(cfg))
    hub = client.app[HUB]
    await wait_for(lambda: hub.publisher.status()["redis"] == "down", timeout=10, what="Redis reported down")
    ready = await (await client.get("/ready")).text()
    metrics = await (await client.get("/metrics")).text()
    assert "unreachable" in caplog.text and "redis" in ready
    assert_no_marker(log=caplog.text, ready=ready, metrics=metrics)
