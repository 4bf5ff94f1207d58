"""The fixed, realistic payload both servers broadcast in the fan-out benchmark.

The hub gets it through a fake Prometheus (`prometheus_results`, `prometheus_alerts`); the
reference server gets the `data`/`sources` of a message (`seed_message_parts`, or the hub's own
snapshot when the runner can capture one), so both send frames of about the same size.
Everything here is deterministic: the same call returns the same bytes.
"""

from __future__ import annotations

from typing import Any

# Fixed instant (2026-11-27T17:00:00Z) so every run serves identical sample values.
SAMPLE_TIME = 1795798800.0
JOBS = ("healthcare-api", "healthcare-frontend", "healthcare-auth", "healthcare-notifications")
ROUTES = (
    ("GET", "/api/appointments", "200"),
    ("POST", "/api/appointments", "201"),
    ("GET", "/api/doctors", "200"),
    ("GET", "/api/patients/:id", "200"),
    ("POST", "/api/auth/login", "200"),
    ("GET", "/api/appointments", "500"),
)
SPECIALTIES = (("cardiology", 41), ("dermatology", 33), ("pediatrics", 29), ("orthopedics", 17),
               ("neurology", 12), ("general", 9))
TARGET_FRAME_BYTES = 3300  # the "3.3 KB metrics_update"


def _instance(job: str, i: int) -> str:
    # Kubernetes-style pod names: as long as the real ones, no real addresses.
    return f"{job}-7d9f8c6b5-{'x2k4p q8m1z'.split()[i]}:3000"


def _sample(value: float, offset: float = 0.0) -> list[Any]:
    # Prometheus prints sample values as shortest decimal strings ("1", "0.182").
    return [SAMPLE_TIME + offset, f"{value:.6g}"]


def prometheus_results() -> dict[str, list[dict[str, Any]]]:
    """Instant-vector `result` lists for the seed's three queries, keyed like the seed's `system`."""
    uptime = [
        {"metric": {"__name__": "up", "instance": _instance(job, (i + i // len(JOBS)) % 2), "job": job},
         "value": _sample(1.0)}
        for i, job in enumerate(JOBS + JOBS[:2])
    ]
    request_rate = [
        {"metric": {"instance": _instance("healthcare-api", n % 2), "job": "healthcare-api",
                    "method": method, "route": route, "status_code": status},
         "value": _sample(12.5 / (n + 1))}
        for n, (method, route, status) in enumerate(ROUTES)
    ]
    response_time = [
        {"metric": {"instance": _instance("healthcare-api", i), "job": "healthcare-api"},
         "value": _sample(0.182 + 0.041 * i)}
        for i in range(2)
    ]
    return {"uptime": uptime, "requestRate": request_rate, "responseTime": response_time}


def prometheus_alerts() -> list[dict[str, Any]]:
    """Alerts in the shape of Prometheus' `GET /api/v1/alerts` `data.alerts`."""
    return [
        {"labels": {"alertname": "HighResponseTime", "severity": "warning", "job": "healthcare-api",
                    "instance": _instance("healthcare-api", 1)},
         "annotations": {"summary": "High response time on healthcare-api",
                         "description": "95th percentile response time is above 200ms for 5 minutes"},
         "state": "firing", "activeAt": "2026-11-27T16:52:30.000Z", "value": "2.23e-01"},
        {"labels": {"alertname": "AppointmentErrorsElevated", "severity": "critical",
                    "job": "healthcare-api", "route": "/api/appointments"},
         "annotations": {"summary": "Appointment API 5xx rate above 1%",
                         "description": "POST/GET /api/appointments returned 5xx for 1.4% of requests"},
         "state": "pending", "activeAt": "2026-11-27T16:58:10.000Z", "value": "1.4e-02"},
    ]


def prometheus_query_map(queries: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """PromQL text -> result list, for a fake Prometheus serving the hub's configured `queries`."""
    results = prometheus_results()
    return {promql: results.get(key, []) for key, promql in queries.items()}


def business_section() -> dict[str, Any]:
    """A seed-shaped `business` section (getAppointmentMetrics('1h')): aggregates only."""
    return {
        "timestamp": "2026-11-27T17:00:00.000Z",
        "timeRange": "1h",
        "appointments": {
            "total": sum(c for _, c in SPECIALTIES),
            "bySpecialty": [{"_id": name, "count": count} for name, count in SPECIALTIES],
            "cancellationRate": 6.4,
            "averageBookingTime": 94.7,
            "patientSatisfaction": 4.62,
        },
    }


def application_section() -> dict[str, Any]:
    """A seed-shaped `application` section (getApplicationMetrics)."""
    return {
        "activeConnections": 0,
        "memoryUsage": {"rss": 61825024, "heapTotal": 20971520, "heapUsed": 14312456,
                        "external": 2245721, "arrayBuffers": 141870},
        "uptime": 3600.25,
    }


def seed_message_parts() -> dict[str, Any]:
    """`data` and `sources` of a metrics_update as the seed would fill them, about 3.3 KB in all."""
    collected = "2026-11-27T17:00:00.000Z"
    return {
        "data": {
            "system": prometheus_results(),
            "application": application_section(),
            "business": business_section(),
            "alerts": prometheus_alerts(),
        },
        "sources": {
            name: {"status": "ok", "latency_ms": latency, "collected_at": collected, "error": None}
            for name, latency in (("process", 0.4), ("prometheus", 3.1), ("business", 7.9))
        },
    }
