"""Configuration: every key declared once (schema), loaded from TOML and the environment (load), frozen."""

from hub.config.auth_schema import AuthConfig, TokenConfig
from hub.config.convert import ConfigError
from hub.config.dump import redacted_dict, to_raw
from hub.config.load import (
    build_config,
    default_config_path,
    env_overrides,
    load_config,
    with_overrides,
)
from hub.config.registry import secrets_of
from hub.config.schema import (
    DEFAULT_HEALTH_CHECKS,
    DEFAULT_QUERIES,
    DEFAULT_SLO_QUERIES,
    AlertmanagerSourceConfig,
    AuditConfig,
    BroadcastConfig,
    BusinessAnomalyConfig,
    BusinessFields,
    BusinessSourceConfig,
    ClusterConfig,
    Config,
    HealthSourceConfig,
    NotifyConfig,
    ProcessSourceConfig,
    PrometheusSourceConfig,
    ServerConfig,
    SourcesConfig,
    StateConfig,
)
from hub.secrets import Secrets, redact_url, scrub  # re-exported for existing importers
from hub.vocab import TIME_RANGES, TOPICS  # re-exported for existing importers

__all__ = [
    "DEFAULT_HEALTH_CHECKS", "DEFAULT_QUERIES", "DEFAULT_SLO_QUERIES", "TIME_RANGES", "TOPICS",
    "AlertmanagerSourceConfig",
    "AuditConfig", "AuthConfig", "BroadcastConfig", "BusinessAnomalyConfig", "BusinessFields", "BusinessSourceConfig",
    "ClusterConfig",
    "Config", "ConfigError", "HealthSourceConfig", "NotifyConfig", "ProcessSourceConfig",
    "PrometheusSourceConfig", "Secrets", "ServerConfig", "SourcesConfig", "StateConfig", "TokenConfig",
    "build_config", "default_config_path", "env_overrides", "load_config", "redact_url", "redacted_dict",
    "scrub", "secrets_of", "to_raw", "with_overrides",
]
