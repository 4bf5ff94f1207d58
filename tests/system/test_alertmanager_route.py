"""deploy/alertmanager/route-example.yml is valid for the real amtool (0.25) and routes HubHealthCheckDown
to the on-call receiver, one group per check, with resolved notifications."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import need_program

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "alertmanager" / "route-example.yml"


@pytest.fixture(scope="module")
def amtool() -> str:
    return need_program(os.environ.get("HUB_AMTOOL_BIN", "amtool"),
                        hint="Debian/Ubuntu package 'prometheus-alertmanager' carries it")


def run(amtool: str, *args: str) -> str:
    proc = subprocess.run([amtool, *args], cwd=EXAMPLE.parent, capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"amtool {' '.join(args)} failed:\n{out}"
    return proc.stdout


def test_check_config(amtool: str) -> None:
    out = run(amtool, "check-config", EXAMPLE.name)
    assert "SUCCESS" in out and "2 receivers" in out


@pytest.mark.parametrize(("labels", "receiver"), [
    (("alertname=HubHealthCheckDown", "job=hub", "check=backend", "severity=critical"), "healthcare-oncall"),
    (("alertname=HubDown", "job=hub", "instance=hub-0:8080", "severity=critical"), "default"),
])
def test_health_alerts_reach_the_oncall_receiver(amtool: str, labels: tuple[str, ...], receiver: str) -> None:
    out = run(amtool, "config", "routes", "test", f"--config.file={EXAMPLE.name}", *labels)
    assert out.split() == [receiver]


def test_one_group_per_check_with_resolved_notifications() -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    (route,) = [r for r in doc["route"]["routes"] if r["receiver"] == "healthcare-oncall"]
    assert route["matchers"] == ['alertname = "HubHealthCheckDown"']
    assert route["group_by"] == ["alertname", "job", "check"]  # the rule's labels: no instance
    (oncall,) = [r for r in doc["receivers"] if r["name"] == "healthcare-oncall"]
    assert [c["send_resolved"] for kind in ("slack_configs", "pagerduty_configs") for c in oncall[kind]] == [True, True]
