"""hub_business_bookings_expected, hub_business_bookings_observed, hub_business_minutes_since_last_booking
and hub_business_anomaly{kind}: the detectors' verdict as served, exported by every replica alike.

Like hub_health_check_up (hub.health_export), the gauges follow the snapshots a replica serves, not
what it computed: a replica that stops collecting leaves no stale anomaly behind, and the shipped
rules (`max without (instance)`) make one alert of N replicas. Nothing is exported while the feed is
stalled or before a snapshot carried `data.business.anomaly`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

#: the anomaly kinds (hub.sources.business.anomaly.KINDS; not imported: metrics sit below the sources)
KINDS = ("silent", "low")

FAMILIES = {
    "hub_business_bookings_expected": "Bookings expected in the whole current hour (median of the same weekday "
                                      "and hour over the last 4 weeks), from data.business.expected.hour.",
    "hub_business_bookings_observed": "Bookings so far in the current hour, from data.business.expected.observed.",
    "hub_business_minutes_since_last_booking": "Minutes since the last booking, from data.business.anomaly.",
}
ANOMALY = "hub_business_anomaly"
ANOMALY_HELP = "1 while the bookings are in the anomaly `kind` (silent or low), else 0; from data.business.anomaly."


def _always() -> bool:
    return True


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class BusinessExport:
    """A registry collector for the four business gauges, from the latest served snapshot."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._values: dict[str, float | None] = {}
        self._state: str | None = None
        #: False while the replica's feed is stalled (set by the publisher)
        self.fresh: Callable[[], bool] = _always
        registry.register(self)

    def observe(self, data: Mapping[str, Any]) -> None:
        """Take the verdict of a served snapshot's `data`; one without it changes nothing."""
        business = data.get("business")
        if not isinstance(business, Mapping) or not isinstance(business.get("anomaly"), Mapping):
            return
        anomaly, expected = business["anomaly"], business.get("expected") or {}
        self._state = anomaly.get("state") if isinstance(anomaly.get("state"), str) else None
        self._values = {"hub_business_bookings_expected": _num(expected.get("hour")),
                        "hub_business_bookings_observed": _num(expected.get("observed")),
                        "hub_business_minutes_since_last_booking": _num(anomaly.get("minutes_since_last_booking"))}

    def describe(self) -> Iterator[Metric]:
        for name, doc in FAMILIES.items():
            yield GaugeMetricFamily(name, doc)
        yield GaugeMetricFamily(ANOMALY, ANOMALY_HELP, labels=["kind"])

    def collect(self) -> Iterator[Metric]:
        live = self.fresh() and self._state is not None
        for name, doc in FAMILIES.items():
            value = self._values.get(name) if live else None
            yield GaugeMetricFamily(name, doc, value=value) if value is not None else GaugeMetricFamily(name, doc)
        family = GaugeMetricFamily(ANOMALY, ANOMALY_HELP, labels=["kind"])
        if live:
            for kind in KINDS:
                family.add_metric([kind], 1.0 if self._state == kind else 0.0)
        yield family
