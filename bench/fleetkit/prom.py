"""A fake Prometheus answering the hub's default queries with N realistic series each.

A stand-in (not a real Prometheus) because the benchmark needs a fleet of a chosen size with
fixed values; the hub's own tests run against a real Prometheus. Responses are encoded once, so
serving them costs the benchmark process almost nothing per tick.
"""

from __future__ import annotations

import itertools
from typing import Any


from bench.fanout.payload import SAMPLE_TIME
from bench.fanout.run import FakePrometheus

JOBS = ("healthcare-api", "healthcare-frontend", "healthcare-auth", "healthcare-notifications",
        "healthcare-scheduling", "healthcare-billing", "healthcare-records", "healthcare-search")
ROUTES = ("/api/appointments", "/api/appointments/:id", "/api/doctors", "/api/doctors/:id/slots",
          "/api/patients/:id", "/api/auth/login", "/api/auth/refresh", "/api/notifications",
          "/api/search", "/api/invoices/:id", "/health", "/metrics")
METHODS = ("GET", "POST", "PUT", "DELETE")
STATUSES = ("200", "201", "204", "400", "401", "404", "500", "503")
PODS = 40  # instances per job: Kubernetes pod names, as long as real ones


def _labels(n: int) -> list[dict[str, str]]:
    """`n` distinct label sets over job x instance x method x route x status, spread over every job."""
    combos = itertools.product(range(PODS), METHODS, ROUTES, STATUSES)
    out: list[dict[str, str]] = []
    for pod, method, route, status in combos:
        for job in JOBS:
            out.append({"job": job, "instance": f"{job}-7d9f8c6b5-{pod:05x}:3000",
                        "method": method, "route": route, "status": status})
            if len(out) == n:
                return out
    raise ValueError(f"at most {len(out)} distinct series")


def _value(i: int, scale: float) -> str:
    # Prometheus prints sample values as shortest decimal strings.
    return f"{scale * (1 + (i * 7919) % 997) / 997:.6g}"


def fleet_results(n: int) -> dict[str, list[dict[str, Any]]]:
    """The three default queries' instant vectors at `n` series each (one `up` is 0: a down target)."""
    labels = _labels(n)
    up = [{"metric": {"__name__": "up", **lab}, "value": [SAMPLE_TIME, "0" if i == n // 2 else "1"]}
          for i, lab in enumerate(labels)]
    rate = [{"metric": lab, "value": [SAMPLE_TIME, _value(i, 25.0)]} for i, lab in enumerate(labels)]
    p95 = [{"metric": lab, "value": [SAMPLE_TIME, _value(i + 1, 0.9)]} for i, lab in enumerate(labels)]
    return {"uptime": up, "requestRate": rate, "responseTime": p95}


def fleet_alerts(n: int) -> list[dict[str, Any]]:
    """Firing alerts for a fleet of `n` series: one per 100 series (at least two)."""
    out = []
    for i, lab in enumerate(_labels(max(2, n // 100))):
        out.append({"labels": {"alertname": "HighResponseTime" if i % 2 else "ErrorRateHigh",
                               "severity": "warning" if i % 3 else "critical", **lab},
                    "annotations": {"summary": f"{lab['route']} on {lab['job']} is degraded",
                                    "description": "95th percentile above 500ms for 5 minutes"},
                    "state": "firing", "activeAt": "2026-11-27T16:52:30.000Z", "value": "5.1e-01"})
    return out


class FleetPrometheus(FakePrometheus):
    """`/api/v1/query` for `queries` (name -> PromQL) and `/api/v1/alerts`, `n` series per query."""

    def __init__(self, n: int, *, queries: dict[str, str]) -> None:
        results = fleet_results(n)
        super().__init__(results={promql: results.get(name, []) for name, promql in queries.items()},
                         alerts=fleet_alerts(n))
        self.n = n
