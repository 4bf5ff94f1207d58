"""Every config key, declared once: type, default, bounds, allowed values, description and secrecy."""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass

from hub.config.auth_schema import AuthConfig
from hub.config.spec import key, section
from hub.vocab import TIME_RANGES

DEFAULT_QUERIES: dict[str, str] = {
    "uptime": 'up{job=~"healthcare-.*"}',
    "requestRate": "rate(http_requests_total[5m])",
    "responseTime": "histogram_quantile(0.95, rate(http_request_duration_seconds_bucket[5m]))",
}
#: the booking API's SLO figures, from the recording rules shipped in deploy/prometheus/booking-slo.yml
DEFAULT_SLO_QUERIES: dict[str, str] = {
    "errorBudgetRemaining": 'slo:error_budget_remaining:ratio_30d{slo=~"booking-api-.*"}',
    "burnRate": 'slo:burn_rate:ratio_rate5m{slo=~"booking-api-.*"}',
}
#: the seed guide's checkApplicationHealth() targets
DEFAULT_HEALTH_CHECKS: dict[str, str] = {
    "frontend": "http://healthcare-frontend/health",
    "backend": "http://healthcare-backend/api/health",
}
MiB = 1 << 20
DAY = 86400.0
HOUR = 3600.0
MILLION = 1_000_000


def _frozen(d: dict[str, str]) -> Mapping[str, str]:
    return types.MappingProxyType(dict(d))


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    host: str = key("127.0.0.1", nonempty=True, check="host",
                    doc='address to listen on; "0.0.0.0" in a container')
    port: int = key(8080, lo=0, hi=65535, doc="HTTP + WebSocket port; 0 = an ephemeral port (the log prints it)")
    allowed_origins: tuple[str, ...] = key((), check="origin",
                                           doc="extra Origins allowed on /ws; same-origin is always allowed")
    max_connections: int = key(10000, lo=1, hi=MILLION, doc="WebSocket upgrades beyond this get HTTP 503")
    max_message_bytes: int = key(65536, lo=1, hi=64 * MiB,
                                 doc="largest client->server message; larger closes with 1009")
    client_rate_limit: float = key(20.0, gt=0, hi=MILLION,
                                   doc="client messages per second per connection; over it closes with 1008")
    client_rate_burst: int = key(40, lo=1, hi=MILLION, doc="messages a client may send in a burst")
    max_connections_per_ip: int = key(0, lo=0, hi=MILLION,
                                      doc="WebSocket connections per client address (0 = no limit); over it gets 429")
    trusted_proxies: tuple[str, ...] = key((), check="cidr",
                                           doc="CIDRs of proxies whose X-Forwarded-For names the client address")
    auth_failures_per_minute: int = key(10, lo=0, hi=MILLION,
                                        doc="failed token checks per client address per minute before 429 "
                                            "(0 = no limit)")
    handshake_timeout: float = key(10.0, gt=0, hi=HOUR, unit="seconds",
                                   doc="seconds a client has to finish the WebSocket upgrade and initial send")


@dataclass(frozen=True, kw_only=True)
class BroadcastConfig:
    interval: float = key(10.0, lo=0.1, hi=DAY, unit="seconds", doc="seconds between metrics_update broadcasts")
    history_size: int = key(360, lo=1, hi=MILLION, doc="snapshots kept in memory; served by /ws?history=N")
    history_max_bytes: int = key(64 * MiB, lo=1, hi=1 << 40,
                                 doc="encoded bytes of history kept in memory; the oldest go first")
    heartbeat: float = key(30.0, lo=0.1, hi=HOUR, unit="seconds",
                           doc="WebSocket ping interval; a peer silent for heartbeat/2 after a ping is dropped")
    max_client_buffer_bytes: int = key(MiB, lo=1, hi=1 << 34,
                                       doc="a client with more unsent bytes than this is closed with 1013")


@dataclass(frozen=True, kw_only=True)
class ProcessSourceConfig:
    enabled: bool = key(True, doc="data.application: the hub's own process stats")


@dataclass(frozen=True, kw_only=True)
class PrometheusSourceConfig:
    enabled: bool = key(True, doc="data.system (query results) and data.alerts")
    url: str = key("http://localhost:9090", check="http_url", secret="url", doc="Prometheus base URL")
    timeout: float = key(5.0, gt=0, hi=HOUR, unit="seconds",
                         doc="budget in seconds for all queries and the alerts request together")
    queries: Mapping[str, str] = key(factory=lambda: _frozen(DEFAULT_QUERIES), nonempty=True, min_items=1,
                                     doc="name -> PromQL; each name becomes a key of data.system; "
                                         "replaces the defaults")
    slo_queries: Mapping[str, str] = key(factory=lambda: _frozen(DEFAULT_SLO_QUERIES),
                                         doc="name -> PromQL; each name becomes a key of data.slo (topic system), "
                                             "null while Prometheus answers it with no series (rules not "
                                             "loaded); replaces the defaults (the booking API's error budget "
                                             "remaining and 5-minute burn rate); empty = no data.slo")
    alerts: bool = key(True, doc="also fetch /api/v1/alerts into data.alerts; ignored when "
                                 "[sources.alertmanager] is enabled (data.alerts then comes from Alertmanager)")
    bearer_token: str = key("", secret="value", doc="sent as Authorization: Bearer (never logged)")
    basic_auth_user: str = key("", doc="HTTP basic auth user (set with basic_auth_password)")
    basic_auth_password: str = key("", secret="value", user="basic_auth_user",
                                   doc="HTTP basic auth password (never logged)")
    tls_verify: bool = key(True, doc="verify the server certificate for https URLs")
    ca_file: str = key("", check="pem_file", doc="PEM bundle to verify against instead of the system store")
    max_series: int = key(10000, lo=1, hi=100 * MILLION, doc="series kept per query answer; the rest are dropped")
    max_response_bytes: int = key(8 * MiB, lo=1024, hi=1 << 30,
                                  doc="largest answer body per request, enforced while reading")
    backfill: bool = key(True, doc="at start, fill the empty history (cluster mode: a fresh stream, once) from "
                                   "query_range over broadcast.history_size x interval, so the charts are full "
                                   "after a restart")
    backfill_timeout: float = key(30.0, gt=0, hi=HOUR, unit="seconds",
                                  doc="deadline in seconds of the backfill at start; it never delays a tick")
    self_job: str = key("", doc="job label under which this Prometheus scrapes the hub's /metrics: the backfill "
                                "then fills the hub's own RSS, CPU and connections charts, and the health checks' "
                                "uptime figures come from Prometheus; empty = off")


@dataclass(frozen=True, kw_only=True)
class AlertmanagerSourceConfig:
    enabled: bool = key(False, doc="data.alerts and data.silences from Alertmanager's API v2 (then "
                                   "sources.prometheus.alerts is ignored); POST /api/silences")
    url: str = key("http://localhost:9093", check="http_url", secret="url", doc="Alertmanager base URL")
    timeout: float = key(5.0, gt=0, hi=HOUR, unit="seconds",
                         doc="budget in seconds for the alerts and silences requests together; "
                             "also bounds each request of POST/DELETE /api/silences")
    bearer_token: str = key("", secret="value", doc="sent as Authorization: Bearer (never logged)")
    basic_auth_user: str = key("", doc="HTTP basic auth user (set with basic_auth_password)")
    basic_auth_password: str = key("", secret="value", user="basic_auth_user",
                                   doc="HTTP basic auth password (never logged)")
    tls_verify: bool = key(True, doc="verify the server certificate for https URLs")
    ca_file: str = key("", check="pem_file", doc="PEM bundle to verify against instead of the system store")
    max_response_bytes: int = key(8 * MiB, lo=1024, hi=1 << 30,
                                  doc="largest answer body per request, enforced while reading")
    max_silence_s: float = key(DAY, gt=0, hi=366 * DAY, unit="seconds",
                               doc="longest silence POST /api/silences may create, in seconds")


@dataclass(frozen=True, kw_only=True)
class BusinessFields:
    created_at: str = key("createdAt", nonempty=True, doc="appointment creation time")
    specialty: str = key("doctor.specialty", nonempty=True, doc='specialty; missing values count as "unknown"')
    status: str = key("status", nonempty=True, doc="appointment status")
    cancelled_value: str = key("cancelled", doc="status value that means cancelled")
    booking_completed_at: str = key("bookingCompletedAt", nonempty=True, doc="booking completion time")
    rating: str = key("review.rating", nonempty=True, doc="patient rating")


#: `sources.business.anomaly.days` names, Monday first (datetime.weekday() order)
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, kw_only=True)
class BusinessAnomalyConfig:
    enabled: bool = key(True, doc="data.business.expected and data.business.anomaly: bookings against what this "
                                  "weekday and hour usually bring (keeps 30 days of hour buckets)")
    p: float = key(0.001, gt=0, hi=0.5, doc="a silence or a low count less probable than this (Poisson, at the "
                                           "expected rate) is an anomaly")
    hours: str = key("00:00-24:00", check="hours_range",
                     doc='daily opening hours "HH:MM-HH:MM" in `timezone` (may wrap midnight); outside them '
                         'the state is ok, reason "closed"')
    days: tuple[str, ...] = key(WEEKDAYS, choices=WEEKDAYS, min_items=1,
                                doc="days on which the detectors run, in `timezone`")
    timezone: str = key("UTC", check="iana_timezone", doc='IANA time zone of `hours` and `days`, e.g. "Europe/Paris"')


@dataclass(frozen=True, kw_only=True)
class BusinessSourceConfig:
    enabled: bool = key(True, doc="data.business: appointment aggregates from MongoDB (read-only)")
    mongodb_uri: str = key("mongodb://localhost:27017/healthcare", check="mongodb_uri", secret="url",
                           doc="the database is taken from the path")
    collection: str = key("appointments", nonempty=True, doc="collection holding the appointments")
    time_range: str = key("1h", choices=TIME_RANGES, doc="window for data.business")
    timeout: float = key(5.0, gt=0, hi=HOUR, unit="seconds",
                         doc="seconds; also bounds the driver's server selection")
    min_cell_size: int = key(0, lo=0, hi=MILLION,
                             doc='fold specialties with fewer appointments into "other" (0 = off)')
    max_specialties: int = key(50, lo=1, hi=10_000,
                               doc='specialties shown; the rest fold into "other" (after min_cell_size)')
    reconcile_interval: float = key(300.0, lo=1.0, hi=DAY, unit="seconds",
                                    doc="seconds between full recounts that correct incremental drift")
    fields: BusinessFields = section(BusinessFields, "field names in the appointments collection")
    anomaly: BusinessAnomalyConfig = section(BusinessAnomalyConfig,
                                             "bookings that stop or sag against this hour's usual count")


@dataclass(frozen=True, kw_only=True)
class HealthCheckConfig:
    """One check written as a table, `name = {url = "...", slow_after = 1.0}`, beside `name = "URL"`."""

    url: str = key(check="http_url", secret="url", doc="http(s) URL answering 2xx when healthy")
    slow_after: float | None = key(None, lo=0.0, hi=HOUR, unit="seconds",
                                   doc="this check's sources.health.slow_after (0 = off); absent: the section's")


@dataclass(frozen=True, kw_only=True)
class HealthSourceConfig:
    enabled: bool = key(True, doc="HTTP health checks of the platform's services")
    timeout: float = key(5.0, gt=0, hi=HOUR, unit="seconds", doc="seconds per check request")
    failures_before_down: int = key(3, lo=1, hi=1000, doc="consecutive failures before a service counts as down")
    successes_before_up: int = key(1, lo=1, hi=1000,
                                   doc="consecutive successes before a service that is down counts as up again")
    ca_file: str = key("", check="pem_file", doc="PEM bundle to verify https checks against")
    checks: Mapping[str, str | HealthCheckConfig] = key(
        factory=lambda: _frozen(DEFAULT_HEALTH_CHECKS), check="http_url", secret="url", min_items=1,
        doc='name -> http(s) URL answering 200 when healthy, or {url = "...", slow_after = s}; '
            'replaces the defaults')
    slow_after: float = key(0.0, lo=0.0, hi=HOUR, unit="seconds",
                            doc="a check answering 2xx slower than this is degraded, not down (0 = off)")
    cert_warn_days: float = key(14.0, lo=0.0, hi=3650.0, unit="days",
                                doc="an https check whose certificate expires within this many days is "
                                    "degraded (0 = off); an expired or untrusted one is down")
    max_mute_s: float = key(DAY, gt=0, hi=365 * DAY, unit="seconds",
                            doc="longest mute of a check (POST /api/mutes) in seconds")


@dataclass(frozen=True, kw_only=True)
class SourcesConfig:
    process: ProcessSourceConfig = section(ProcessSourceConfig, "the hub's own process")
    prometheus: PrometheusSourceConfig = section(PrometheusSourceConfig, "Prometheus queries and alerts")
    business: BusinessSourceConfig = section(BusinessSourceConfig, "MongoDB appointment aggregates")
    health: HealthSourceConfig = section(HealthSourceConfig, "HTTP health checks")
    alertmanager: AlertmanagerSourceConfig = section(AlertmanagerSourceConfig, "Alertmanager alerts and silences")


@dataclass(frozen=True, kw_only=True)
class AuditConfig:
    path: str = key("", doc="JSON-lines audit log file; empty = stderr")


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    redis_url: str = key("", check="redis_url", secret="url",
                         doc='empty: single process; "redis://host:6379/0" to run several replicas')
    key_prefix: str = key("hub", nonempty=True, doc="prefix of every Redis key this hub uses")
    stream_maxlen: int = key(0, lo=0, hi=100 * MILLION, doc="snapshots kept in Redis; 0 = broadcast.history_size")
    stream_max_bytes: int = key(0, lo=0, hi=1 << 40,
                                doc="snapshot bytes kept in Redis, the oldest go first; "
                                    "0 = broadcast.history_max_bytes")


@dataclass(frozen=True, kw_only=True)
class StateConfig:
    dir: str = key("", doc="directory keeping health-check states and the notification ledger across restarts "
                           "of a single process; empty = nothing kept. Clustered, Redis keeps them")


@dataclass(frozen=True, kw_only=True)
class NotifyConfig:
    slack_webhook_url: str = key("", check="https_url", secret="webhook",
                                 doc="Slack incoming webhook for alerts; empty = off (never logged)")
    pagerduty_routing_key: str = key("", secret="value",
                                     doc="PagerDuty Events API v2 routing (integration) key; empty = off "
                                         "(never logged)")
    pagerduty_url: str = key("https://events.pagerduty.com/v2/enqueue", nonempty=True, check="https_url",
                             doc="PagerDuty Events API v2 endpoint")
    repeat_interval: float = key(0.0, lo=0.0, hi=7 * DAY, unit="seconds",
                                 doc="seconds between reminders on every channel while a check stays down; 0 = off")


@dataclass(frozen=True, kw_only=True)
class Config:
    server: ServerConfig = section(ServerConfig, "HTTP and WebSocket server")
    broadcast: BroadcastConfig = section(BroadcastConfig, "the metrics_update broadcast")
    sources: SourcesConfig = section(SourcesConfig, "data sources")
    auth: AuthConfig = section(AuthConfig, "access tokens")
    audit: AuditConfig = section(AuditConfig, "audit log")
    cluster: ClusterConfig = section(ClusterConfig, "several replicas through Redis")
    state: StateConfig = section(StateConfig, "state kept across restarts")
    notify: NotifyConfig = section(NotifyConfig, "notifications")
