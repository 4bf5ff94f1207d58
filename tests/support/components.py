"""Components built the way the hub builds them: from a validated config, with its secret registry.

Tests use these instead of calling constructors with hand-made values, so no test proves a path
the config loader would refuse (hub/config is the one place that validates).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hub.config import Config, build_config, secrets_of
from hub.notify import Notifier, notifier_of
from hub.sources.business import BusinessSource
from hub.sources.health import HealthSource
from hub.sources.health_prom import PromUptime
from hub.sources.prometheus import PrometheusSource
from hub.state.redis_store import RedisStore


def config(data: Mapping[str, Any]) -> Config:
    """`data` (TOML-shaped) through the loader, with no environment overrides."""
    return build_config(dict(data), environ={})


def make_notifier(url: str, **options: Any) -> Notifier:
    """A Notifier posting to the Slack webhook `url` (validated as `notify.slack_webhook_url`)."""
    cfg = config({"notify": {"slack_webhook_url": url}})
    return Notifier(slack_webhook_url=cfg.notify.slack_webhook_url, secrets=secrets_of(cfg), **options)


def make_notifier_from(notify: Mapping[str, Any], *, key_prefix: str = "hub", **options: Any) -> Notifier:
    """The Notifier `[notify]` = `notify` sets up (PagerDuty, Slack, repeat_interval), as the hub builds it;
    `options` are Notifier's other keyword arguments (audit, metrics, retry bounds)."""
    cfg = config({"notify": dict(notify), "cluster": {"key_prefix": key_prefix}})
    notifier = notifier_of(cfg, secrets=secrets_of(cfg), **options)
    assert notifier is not None, "[notify] sets no channel"
    return notifier


def make_health_source(checks: Mapping[str, Any], *, database_ping: Any = None, metrics: Any = None,
                       notifier: Notifier | None = None, store: Any = None,
                       prometheus: Mapping[str, Any] | None = None, **keys: Any) -> HealthSource:
    """A HealthSource for `checks` and `[sources.health]` `keys` (timeout, failures_before_down,
    successes_before_up, ca_file); with `prometheus` (`[sources.prometheus]` keys with `self_job`), its
    uptime figures come from that Prometheus as the app wires it."""
    cfg = config({"sources": {"health": {"checks": dict(checks), **keys},
                              "prometheus": dict(prometheus or {}),
                              "business": {"enabled": database_ping is not None}}})
    prom_uptime = PromUptime(cfg.sources.prometheus, secrets=secrets_of(cfg)) if prometheus else None
    return HealthSource(cfg.sources.health, secrets=secrets_of(cfg), database_ping=database_ping,
                        metrics=metrics, notifier=notifier, store=store, prom_uptime=prom_uptime)


def make_redis_store(url: str, *, key_prefix: str = "hub") -> RedisStore:
    """The store a clustered hub with `[cluster] redis_url = url` uses."""
    cfg = config({"cluster": {"redis_url": url, "key_prefix": key_prefix}})
    return RedisStore(cfg.cluster.redis_url, key_prefix=cfg.cluster.key_prefix, secrets=secrets_of(cfg))


def make_prometheus_source(url: str, **keys: Any) -> PrometheusSource:
    """A PrometheusSource for `url` and `[sources.prometheus]` `keys` (one query and no SLO query unless given)."""
    keys.setdefault("queries", {"one": "vector(1)"})
    keys.setdefault("slo_queries", {})
    cfg = config({"sources": {"prometheus": {"url": url, **keys}}})
    return PrometheusSource(cfg.sources.prometheus, secrets=secrets_of(cfg))


def make_business_source(uri: str, *, client_options: Mapping[str, Any] | None = None, metrics: Any = None,
                         notifier: Any = None, store: Any = None, clock: Any = None,
                         **keys: Any) -> BusinessSource:
    """A BusinessSource for `mongodb_uri = uri` and `[sources.business]` `keys` (with `anomaly` a table)."""
    cfg = config({"sources": {"business": {"mongodb_uri": uri, **keys}}})
    return BusinessSource(cfg.sources.business, secrets=secrets_of(cfg), client_options=client_options,
                          metrics=metrics, notifier=notifier, store=store, clock=clock)
