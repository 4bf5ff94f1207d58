"""deploy/prometheus/ is valid for the real promtool: config and rules check, rule unit tests pass."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.prom import DEPLOY_RULES_DIR
from tests.support import need_program

DEPLOY = DEPLOY_RULES_DIR
ALERTS = ("HubDown", "HubTargetMissing", "HubSourceFailing", "HubBroadcastSlow", "HubConnectionsNearLimit",
          "HubHealthCheckDown")


@pytest.fixture(scope="module")
def promtool() -> str:
    return need_program(os.environ.get("HUB_PROMTOOL_BIN", "promtool"),
                        hint="Debian/Ubuntu package 'prometheus' carries it")


def run(promtool: str, *args: str) -> str:
    proc = subprocess.run([promtool, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{out}"
    return out


def test_check_rules(promtool: str) -> None:
    out = run(promtool, "check", "rules", "hub-alerts.yml")
    assert f"SUCCESS: {len(ALERTS)} rules found" in out


def test_rule_unit_tests(promtool: str) -> None:
    out = run(promtool, "test", "rules", "hub-alerts.test.yml")
    assert "SUCCESS" in out


def test_check_example_config(promtool: str) -> None:
    out = run(promtool, "check", "config", "prometheus.yml")
    assert "SUCCESS: 1 rule files found" in out


def test_every_alert_has_firing_and_quiet_unit_tests() -> None:
    import yaml

    tests = yaml.safe_load((DEPLOY / "hub-alerts.test.yml").read_text())["tests"]
    rules = yaml.safe_load((DEPLOY / "hub-alerts.yml").read_text())["groups"][0]["rules"]
    assert tuple(r["alert"] for r in rules) == ALERTS
    cases = [c for t in tests for c in t["alert_rule_test"]]
    for name in ALERTS:
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no test where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no test where it stays quiet"
