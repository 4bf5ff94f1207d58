"""deploy/prometheus/ is valid for the real promtool: config and rules check, rule unit tests pass.

A real Prometheus (2.42, Debian's) loads every shipped rule file and evaluates it on live data.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from hub.config import secrets_of
from hub.sources.prometheus import PrometheusSource
from tests.support import need_program
from tests.support.aio import wait_for
from tests.support.components import config
from tests.support.http_targets import serve
from tests.support.prom import DEPLOY_RULES_DIR, start_prometheus

pytestmark = pytest.mark.untimed  # no timing asserted: left out of CI's hog pass

DEPLOY = DEPLOY_RULES_DIR
ALERTS = ("HubDown", "HubTargetMissing", "HubSourceFailing", "HubBroadcastSlow", "HubConnectionsNearLimit",
          "HubHealthCheckDown", "HubBookingsSilent", "HubBookingsLow")
#: the hub's business-anomaly metrics; the business alerts may read nothing else
BUSINESS_METRICS = ("hub_business_anomaly", "hub_business_bookings_expected", "hub_business_bookings_observed",
                    "hub_business_minutes_since_last_booking")

SLO_ALERTS = ("BookingApiErrorBudgetBurnFast", "BookingApiErrorBudgetBurnSlow")
SLOS = ("booking-api-availability", "booking-api-latency")
SLO_WINDOWS = ("5m", "30m", "1h", "6h", "1d", "3d")
#: one promtool test per case, named so, with the series of every SLO
SLO_CASES = ("fast burn pages within 5 minutes", "slow burn opens a ticket, not a page",
             "short blip pages nothing", "recovery resolves")
#: rule file -> its promtool unit tests
RULE_FILES = {"hub-alerts.yml": "hub-alerts.test.yml", "booking-slo.yml": "booking-slo.test.yml"}


@pytest.fixture(scope="module")
def promtool() -> str:
    return need_program(os.environ.get("HUB_PROMTOOL_BIN", "promtool"),
                        hint="Debian/Ubuntu package 'prometheus' carries it")


def run(promtool: str, *args: str, cwd: Path = DEPLOY) -> str:
    proc = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{out}"
    return out


def groups(name: str) -> list[dict[str, Any]]:
    """The rule groups of deploy/prometheus/`name`."""
    return yaml.safe_load((DEPLOY / name).read_text())["groups"]


def rules(name: str) -> list[dict[str, Any]]:
    """Every rule of deploy/prometheus/`name`, in file order."""
    return [r for g in groups(name) for r in g["rules"]]


def test_check_rules(promtool: str) -> None:
    out = run(promtool, "check", "rules", "hub-alerts.yml")
    assert f"SUCCESS: {len(ALERTS)} rules found" in out
    out = run(promtool, "check", "rules", "booking-slo.yml")
    assert f"SUCCESS: {len(rules('booking-slo.yml'))} rules found" in out


@pytest.mark.parametrize("tests", sorted(RULE_FILES.values()))
def test_rule_unit_tests(promtool: str, tests: str) -> None:
    out = run(promtool, "test", "rules", tests)
    assert "SUCCESS" in out


def test_check_example_config(promtool: str) -> None:
    out = run(promtool, "check", "config", "prometheus.yml")
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in out
    assert yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["rule_files"] == list(RULE_FILES)


def test_every_alert_has_firing_and_quiet_unit_tests() -> None:
    for rule_file, test_file in RULE_FILES.items():
        suite = yaml.safe_load((DEPLOY / test_file).read_text())
        assert suite["rule_files"] == [rule_file]
        cases = [c for t in suite["tests"] for c in t.get("alert_rule_test", [])]
        for name in [r["alert"] for r in rules(rule_file) if "alert" in r]:
            mine = [c for c in cases if c["alertname"] == name]
            assert any(c["exp_alerts"] for c in mine), f"{name}: no test where it fires"
            assert any(not c["exp_alerts"] for c in mine), f"{name}: no test where it stays quiet"
    assert tuple(r["alert"] for r in rules("hub-alerts.yml")) == ALERTS
    assert tuple(r["alert"] for r in rules("booking-slo.yml") if "alert" in r) == SLO_ALERTS


def test_every_slo_has_its_windows_and_four_cases() -> None:
    recorded = [r for r in rules("booking-slo.yml") if "record" in r]
    objectives = [r["labels"]["slo"] for r in recorded if r["record"] == "slo:objective:ratio"]
    assert tuple(objectives) == SLOS

    def records(name: str, slo: str) -> bool:
        """A rule records `name` for `slo`: one of its own, or a generic one over every SLO."""
        return any(r["record"] == name and r.get("labels", {}).get("slo", slo) == slo for r in recorded)

    for slo in SLOS:
        for window in SLO_WINDOWS:
            assert records(f"slo:sli_error:ratio_rate{window}", slo), (slo, window)
            assert records(f"slo:burn_rate:ratio_rate{window}", slo), (slo, window)
        assert records("slo:error_budget_remaining:ratio_30d", slo), slo

    tests = {t["name"]: t for t in yaml.safe_load((DEPLOY / "booking-slo.test.yml").read_text())["tests"]}
    for case in SLO_CASES:
        test = tests.get(case)
        assert test, f"no promtool test named {case!r}"
        fired = {a["exp_labels"]["slo"] for c in test["alert_rule_test"] for a in c["exp_alerts"]}
        if case == "short blip pages nothing":
            assert not fired, fired
            # ... though the blip did trip each SLO's short window
            tripped = {re.search(r'slo="([^"]+)"', e["labels"]).group(1)  # type: ignore[union-attr]
                       for t in test["promql_expr_test"] for e in t["exp_samples"]}
            assert tripped == set(SLOS), tripped
        else:
            assert fired == set(SLOS), f"{case}: shows alerts for {fired}, not for every SLO"


def test_objective_is_set_in_one_place(promtool: str, tmp_path: Path) -> None:
    """Changing only the slo:objective:ratio rule moves the budget, burn rates, alerts and their text."""
    text = (DEPLOY / "booking-slo.yml").read_text()
    assert text.count("vector(0.999)") == 1  # the availability objective, nowhere else
    api = 'http_requests_total{job="healthcare-backend", route="/api/appointments", status_code="%s"}'
    labels = {"job": "healthcare-backend", "slo": "booking-api-availability"}
    selector = '{job="healthcare-backend", slo="booking-api-availability"}'

    def check(objective: str, burn: float, pages: bool) -> None:
        """5% of requests fail for 2 hours: the 1h burn is `burn`, and the page fires or not."""
        (tmp_path / "booking-slo.yml").write_text(text.replace("vector(0.999)", f"vector({objective})"))
        page = {
            "exp_labels": {"severity": "critical", "service": "healthcare-backend", **labels},
            "exp_annotations": {
                "summary": f"Booking API SLO booking-api-availability burns its error budget {burn:g}x too fast (page)",
                "description": "Over the last hour and the last 5 minutes, bad requests are above 14.4 times the "
                               "error budget of the 99.9% objective: at that rate the 30-day budget is gone within "
                               "2 days. Budget left over 30 days: -4900%.",
            },
        }
        case = {
            "rule_files": ["booking-slo.yml"],
            "evaluation_interval": "1m",
            "tests": [{
                "interval": "1m",
                "input_series": [{"series": api % "201", "values": "0+95x120"},
                                 {"series": api % "500", "values": "0+5x120"}],
                "alert_rule_test": [{"eval_time": "120m", "alertname": "BookingApiErrorBudgetBurnFast",
                                     "exp_alerts": [page] if pages else []}],
                "promql_expr_test": [{"expr": "round(slo:burn_rate:ratio_rate1h, 0.01)", "eval_time": "120m",
                                      "exp_samples": [{"labels": selector, "value": burn}]}],
            }],
        }
        (tmp_path / "case.yml").write_text(yaml.safe_dump(case, sort_keys=False))
        run(promtool, "test", "rules", "case.yml", cwd=tmp_path)

    check("0.999", 50, pages=True)    # as shipped: 5% is 50x the 0.1% budget
    check("0.99", 5, pages=False)     # the one edit: same traffic, a tenth of the burn, no page


def test_business_rules_carry_no_document_field() -> None:
    """The business alerts read only the anomaly metrics, and their text only the job label and those."""
    (group,) = [g for g in groups("hub-alerts.yml") if g["name"] == "hub-business"]
    assert [r["alert"] for r in group["rules"]] == ["HubBookingsSilent", "HubBookingsLow"]
    for rule in group["rules"]:
        texts = [rule["expr"], *rule["annotations"].values()]
        names = {n for t in texts for n in re.findall(r"\b[a-z][a-z0-9]*_[a-z0-9_]+\b", t)}
        assert names and names <= set(BUSINESS_METRICS), (rule["alert"], names)
        assert {m for t in texts for m in re.findall(r"\$labels\.(\w+)", t)} <= {"job"}, rule["alert"]
        assert rule["for"] == "1m"


# ---------------------------------------------------------------------- a real Prometheus 2.42


async def test_real_prometheus_loads_and_evaluates_every_rule_file(tmp_path: Path) -> None:
    """Prometheus scrapes a backend whose requests half fail and a hub in a silent anomaly.

    The /metrics page is synthetic (the seed's Node.js backend cannot run here), shaped like
    prom-client's output; Prometheus, the rule files and the evaluation are real.
    """
    t0 = time.monotonic()

    async def exposition(_r: web.Request) -> web.Response:
        n = int((time.monotonic() - t0) * 100)  # 100 requests a second, half of them 500s
        base = 'method="POST",route="/api/appointments"'
        lines = [
            f'http_requests_total{{{base},status_code="201"}} {n}',
            f'http_requests_total{{{base},status_code="500"}} {n}',
            f'http_request_duration_seconds_bucket{{{base},status_code="201",le="0.5"}} {n}',
            f'http_request_duration_seconds_bucket{{{base},status_code="201",le="+Inf"}} {n}',
            f'http_request_duration_seconds_count{{{base},status_code="201"}} {n}',
            'hub_business_anomaly{kind="silent"} 1',
            'hub_business_anomaly{kind="low"} 0',
            "hub_business_bookings_expected 40",
            "hub_business_bookings_observed 3",
            "hub_business_minutes_since_last_booking 25",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", exposition)
    prom = None
    try:
        async with serve(app) as url:
            target = [url.removeprefix("http://")]
            prom = server = await asyncio.to_thread(
                start_prometheus, tmp_path / "prom", targets={"healthcare-backend": target, "hub": target},
                extra_rule_files=[DEPLOY / name for name in RULE_FILES])

            async def evaluated() -> tuple[dict[str, dict[str, Any]], dict[str, Any]] | None:
                """The alerts and rule groups once the page fires, the silent alert is at least
                pending and every rule has been evaluated at least once; else None."""
                alerts = {a["labels"]["alertname"]: a
                          for a in (await asyncio.to_thread(server.api, "alerts"))["alerts"]}
                listed = await asyncio.to_thread(server.api, "rules")
                failing = [(r["name"], r.get("lastError")) for g in listed["groups"] for r in g["rules"]
                           if r["health"] == "err"]
                assert not failing, f"rules failing in Prometheus: {failing}"
                page = alerts.get("BookingApiErrorBudgetBurnFast")
                if not (page and page["state"] == "firing" and "HubBookingsSilent" in alerts):
                    return None
                if any(r["health"] == "unknown" for g in listed["groups"] for r in g["rules"]):
                    return None
                return alerts, listed

            alerts, listed = await wait_for(evaluated, timeout=40, interval=0.5,
                                            what="the page alert firing and HubBookingsSilent pending")

            # The hub's default slo_queries read the recorded series into data.slo (the System panel's figures).
            cfg = config({"sources": {"prometheus": {"url": server.url}}})
            source = PrometheusSource(cfg.sources.prometheus, secrets=secrets_of(cfg))

            async def slo_figures() -> dict[str, Any] | None:
                res = await source.collect(source.timeout)
                slo = res.data["slo"]
                return slo if res.error is None and None not in slo.values() else None

            try:
                slo = await wait_for(slo_figures, timeout=40, interval=0.5, what="both SLO figures recorded")
            finally:
                await source.close()
    finally:
        if prom is not None:
            prom.kill()

    assert set(slo) == {"errorBudgetRemaining", "burnRate"}
    by_slo = {k: {r["metric"]["slo"]: float(r["value"][1]) for r in v} for k, v in slo.items()}
    # Half the requests fail against a 0.1% budget: burning 500x; every request is fast: burning 0x.
    assert by_slo["burnRate"]["booking-api-availability"] == pytest.approx(500, rel=0.02)
    assert by_slo["burnRate"]["booking-api-latency"] == 0
    assert by_slo["errorBudgetRemaining"]["booking-api-availability"] == pytest.approx(-499, rel=0.02)
    assert by_slo["errorBudgetRemaining"]["booking-api-latency"] == 1
    assert {r["metric"]["job"] for v in slo.values() for r in v} == {"healthcare-backend"}

    page, silent = alerts["BookingApiErrorBudgetBurnFast"], alerts["HubBookingsSilent"]
    assert page["state"] == "firing"
    assert page["labels"]["slo"] == "booking-api-availability" and page["labels"]["severity"] == "critical"
    assert re.fullmatch(r"Booking API SLO booking-api-availability burns its error budget \d+(\.\d+)?x too fast "
                        r"\(page\)", page["annotations"]["summary"]), page["annotations"]
    assert "of the 99.9% objective" in page["annotations"]["description"]
    assert silent["state"] == "pending"  # `for: 1m`
    assert silent["annotations"]["summary"] == "No booking for 25 minutes, improbable at this hour"
    assert silent["annotations"]["description"].startswith(
        "About 40 bookings are expected this hour and 3 were made so far.")

    # Every group of every shipped file is loaded, and each of its rules evaluated without error.
    loaded = {g["name"]: g for g in listed["groups"]}
    for name in RULE_FILES:
        for group in groups(name):
            got = loaded[group["name"]]
            assert [r["name"] for r in got["rules"]] == [r.get("alert") or r["record"] for r in group["rules"]]
            bad = [(r["name"], r["health"], r.get("lastError")) for r in got["rules"] if r["health"] != "ok"]
            assert not bad, f"{group['name']}: {bad}"

