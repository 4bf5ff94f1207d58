"""hub_health_check_up{check}, hub_health_check_state{check,state} and hub_health_check_cert_days{check}:
the health checks' states as served, exported by every replica alike.

Only the collector runs the checks, but the gauge follows the snapshots a replica *serves*, not the
checks it ran: every replica of a cluster exports the same value for a check within a tick, a
replica that stops being the collector keeps following the new one's snapshots (nothing stale is
left behind), and survivors keep the series through a fail-over (the collector's death leaves no
gap for an alert to resolve in). The shipped rule aggregates across replicas
(`min by (job, check)`), so N replicas make one alert (docs/prometheus.md). A replica whose feed
is stalled (`Publisher.stalled`) exports no state at all: what it last served may be outdated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

NAME = "hub_health_check_up"
SERVED = "From the latest snapshot this replica served (the collector's checks), absent while its feed is stalled."
HELP = ("1 when the health check counts as up; 0 after sources.health.failures_before_down failures in a row. "
        + SERVED)
STATE_NAME = "hub_health_check_state"
STATE_HELP = "1 for the health check's current state (up, degraded or down), 0 for the others. " + SERVED
STATES = ("up", "degraded", "down")
CERT_NAME = "hub_health_check_cert_days"
CERT_HELP = "Days left on the https check's served certificate (negative once expired). " + SERVED


def _always() -> bool:
    return True


class HealthUpExport:
    """A registry collector: one `hub_health_check_up` sample per check of the latest served snapshot."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._up: dict[str, bool] = {}
        self._state: dict[str, str] = {}
        self._cert: dict[str, float] = {}
        #: False while the replica's feed is stalled: then no sample is exported (set by the publisher)
        self.fresh: Callable[[], bool] = _always
        registry.register(self)

    def observe(self, data: Mapping[str, Any]) -> None:
        """Take the check states of a served snapshot's `data`; one without a health section (the
        source disabled, or failed this tick) changes nothing."""
        health = data.get("health")
        checks = health.get("checks") if isinstance(health, Mapping) else None
        if not isinstance(checks, Mapping):
            return
        # A check gone from the snapshot (renamed in the collector's config) stops being exported.
        self._up = {name: c["up"] for name, c in checks.items()
                    if isinstance(name, str) and isinstance(c, Mapping) and isinstance(c.get("up"), bool)}
        # A snapshot of a collector older than the states says only up or not: its state follows from it.
        self._state = {name: c["state"] if c.get("state") in STATES else "up" if up else "down"
                       for name, up in self._up.items() if isinstance(c := checks[name], Mapping)}
        self._cert = {name: float(days) for name in self._up
                      if isinstance(days := checks[name].get("cert_days"), (int, float)) and not isinstance(days, bool)}

    def value(self, check: str) -> float | None:
        """The exported value for `check` (None when not exported): what a scrape reads now."""
        if not self.fresh() or check not in self._up:
            return None
        return 1.0 if self._up[check] else 0.0

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(NAME, HELP, labels=["check"])
        yield GaugeMetricFamily(STATE_NAME, STATE_HELP, labels=["check", "state"])
        yield GaugeMetricFamily(CERT_NAME, CERT_HELP, labels=["check"])

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(NAME, HELP, labels=["check"])
        states = GaugeMetricFamily(STATE_NAME, STATE_HELP, labels=["check", "state"])
        cert = GaugeMetricFamily(CERT_NAME, CERT_HELP, labels=["check"])
        if self.fresh():
            for name in sorted(self._up):
                family.add_metric([name], 1.0 if self._up[name] else 0.0)
                for state in STATES:
                    states.add_metric([name, state], 1.0 if self._state.get(name) == state else 0.0)
                if name in self._cert:
                    cert.add_metric([name], self._cert[name])
        yield family
        yield states
        yield cert
