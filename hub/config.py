"""Configuration: `config.toml` loaded with tomllib into frozen dataclasses, validated once at start."""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_QUERIES: dict[str, str] = {
    "uptime": 'up{job=~"healthcare-.*"}',
    "requestRate": "rate(http_requests_total[5m])",
    "responseTime": "histogram_quantile(0.95, rate(http_request_duration_seconds_bucket[5m]))",
}
TIME_RANGES: tuple[str, ...] = ("1h", "24h", "7d", "30d")
TOPICS: tuple[str, ...] = ("system", "application", "business", "alerts")
SECRET_KEYS = frozenset({"bearer_token", "basic_auth_password", "hash", "mongodb_uri", "redis_url"})


class ConfigError(ValueError):
    """A config problem; the message names the key and the offending value."""


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    allowed_origins: tuple[str, ...] = ()
    max_connections: int = 10000
    max_message_bytes: int = 65536
    client_rate_limit: float = 20.0
    client_rate_burst: int = 40
    max_connections_per_ip: int = 0


@dataclass(frozen=True, kw_only=True)
class BroadcastConfig:
    interval: float = 10.0
    history_size: int = 360
    heartbeat: float = 30.0
    max_client_buffer_bytes: int = 1048576


@dataclass(frozen=True, kw_only=True)
class ProcessSourceConfig:
    enabled: bool = True


@dataclass(frozen=True, kw_only=True)
class PrometheusSourceConfig:
    enabled: bool = True
    url: str = "http://localhost:9090"
    timeout: float = 5.0
    queries: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_QUERIES))
    alerts: bool = True
    bearer_token: str = ""
    basic_auth_user: str = ""
    basic_auth_password: str = ""
    tls_verify: bool = True
    ca_file: str = ""


@dataclass(frozen=True, kw_only=True)
class BusinessFields:
    created_at: str = "createdAt"
    specialty: str = "doctor.specialty"
    status: str = "status"
    cancelled_value: str = "cancelled"
    booking_completed_at: str = "bookingCompletedAt"
    rating: str = "review.rating"


@dataclass(frozen=True, kw_only=True)
class BusinessSourceConfig:
    enabled: bool = True
    mongodb_uri: str = "mongodb://localhost:27017/healthcare"
    collection: str = "appointments"
    time_range: str = "1h"
    timeout: float = 5.0
    min_cell_size: int = 0
    fields: BusinessFields = field(default_factory=BusinessFields)


@dataclass(frozen=True, kw_only=True)
class SourcesConfig:
    process: ProcessSourceConfig = field(default_factory=ProcessSourceConfig)
    prometheus: PrometheusSourceConfig = field(default_factory=PrometheusSourceConfig)
    business: BusinessSourceConfig = field(default_factory=BusinessSourceConfig)


@dataclass(frozen=True, kw_only=True)
class TokenConfig:
    name: str
    hash: str
    topics: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class AuthConfig:
    tokens: tuple[TokenConfig, ...] = ()
    protect_metrics: bool = False


@dataclass(frozen=True, kw_only=True)
class AuditConfig:
    path: str = ""


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    redis_url: str = ""
    key_prefix: str = "hub"
    stream_maxlen: int = 0  # 0: same as broadcast.history_size


@dataclass(frozen=True, kw_only=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    broadcast: BroadcastConfig = field(default_factory=BroadcastConfig)
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


# --------------------------------------------------------------------------- loading


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(path: str, tp: Any, value: Any) -> Any:
    """Convert one TOML value to the annotated type, or raise ConfigError naming `path`."""
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a table, got {value!r}")
        return _build(tp, value, path)
    origin = typing.get_origin(tp)
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return tuple(_convert(f"{path}[{i}]", item_tp, v) for i, v in enumerate(value))
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a table, got {value!r}")
        _k, v_tp = typing.get_args(tp)
        return types.MappingProxyType({str(k): _convert(f"{path}.{k}", v_tp, v) for k, v in value.items()})
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported type {tp!r}")  # pragma: no cover - schema bug


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in hints:
            known = ", ".join(sorted(hints))
            raise ConfigError(f"{path}: unknown key (known keys here: {known})")
        kwargs[key] = _convert(path, hints[key], value)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        raise ConfigError(f"{prefix or 'config'}: missing required key(s) {', '.join(missing)}") from exc


def _set_path(raw: dict[str, Any], parts: list[str], value: Any) -> None:
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _lookup_type(parts: list[str]) -> Any | None:
    """The annotated type at a dotted path of the schema, or None if the path is not a key."""
    tp: Any = Config
    for part in parts:
        if not dataclasses.is_dataclass(tp):
            return None
        hints = _hints(tp)
        if part not in hints:
            return None
        tp = hints[part]
    return None if dataclasses.is_dataclass(tp) else tp


def _parse_env(name: str, tp: Any, text: str) -> Any:
    if tp is str:
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: cannot parse {text!r} as a TOML value ({exc})") from None


def env_overrides(environ: Mapping[str, str]) -> list[tuple[list[str], Any, str]]:
    """The (path, value, variable name) overrides that `environ` holds for real config keys."""
    found: list[tuple[list[str], Any, str]] = []
    # The seed's own variable names, applied first so HUB_* spellings win.
    for name, parts in (("PROMETHEUS_URL", ["sources", "prometheus", "url"]),
                        ("MONGODB_URI", ["sources", "business", "mongodb_uri"])):
        if environ.get(name):
            found.append((parts, environ[name], name))
    for name, text in sorted(environ.items()):
        if not name.startswith("HUB_") or "__" not in name:
            continue
        parts = [p.lower() for p in name[4:].split("__")]
        tp = _lookup_type(parts)
        if tp is None:
            continue  # not a config key (e.g. HUB_REQUIRE_SERVICES); never an override
        found.append((parts, _parse_env(name, tp, text), name))
    return found


def _validate(cfg: Config) -> None:
    def bad(key: str, value: Any, why: str) -> ConfigError:
        if key.split(".")[-1] in SECRET_KEYS:
            value = "<redacted>"
        return ConfigError(f"{key}: {why}, got {value!r}")

    s, b = cfg.server, cfg.broadcast
    if not 0 <= s.port <= 65535:
        raise bad("server.port", s.port, "must be between 0 and 65535")
    for key, value in (("server.max_connections", s.max_connections),
                       ("server.max_message_bytes", s.max_message_bytes),
                       ("server.client_rate_burst", s.client_rate_burst),
                       ("broadcast.history_size", b.history_size),
                       ("broadcast.max_client_buffer_bytes", b.max_client_buffer_bytes)):
        if value < 1:
            raise bad(key, value, "must be >= 1")
    if s.max_connections_per_ip < 0:
        raise bad("server.max_connections_per_ip", s.max_connections_per_ip, "must be >= 0 (0 = off)")
    if s.client_rate_limit <= 0:
        raise bad("server.client_rate_limit", s.client_rate_limit, "must be > 0")
    if b.interval < 0.1:
        raise bad("broadcast.interval", b.interval, "must be >= 0.1 seconds")
    if b.heartbeat < 0.1:
        raise bad("broadcast.heartbeat", b.heartbeat, "must be >= 0.1 seconds")
    for origin in s.allowed_origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise bad("server.allowed_origins", origin, "must be an origin like https://ops.example.com")
    p = cfg.sources.prometheus
    if urlsplit(p.url).scheme not in ("http", "https") or not urlsplit(p.url).netloc:
        raise bad("sources.prometheus.url", redact_url(p.url), "must be an http(s) URL")
    if p.timeout <= 0:
        raise bad("sources.prometheus.timeout", p.timeout, "must be > 0")
    if not p.queries:
        raise bad("sources.prometheus.queries", {}, "must hold at least one query")
    if bool(p.basic_auth_user) != bool(p.basic_auth_password):
        raise ConfigError("sources.prometheus.basic_auth_user/basic_auth_password: set both or neither")
    if p.bearer_token and p.basic_auth_user:
        raise ConfigError("sources.prometheus: bearer_token and basic_auth_user are mutually exclusive")
    if p.ca_file and not Path(p.ca_file).is_file():
        raise bad("sources.prometheus.ca_file", p.ca_file, "file does not exist")
    bz = cfg.sources.business
    if bz.time_range not in TIME_RANGES:
        raise bad("sources.business.time_range", bz.time_range, f"must be one of {', '.join(TIME_RANGES)}")
    if bz.timeout <= 0:
        raise bad("sources.business.timeout", bz.timeout, "must be > 0")
    if not bz.mongodb_uri.startswith(("mongodb://", "mongodb+srv://")):
        raise bad("sources.business.mongodb_uri", redact_url(bz.mongodb_uri), "must be a mongodb:// URI")
    if not bz.collection:
        raise bad("sources.business.collection", bz.collection, "must not be empty")
    if bz.min_cell_size < 0:
        raise bad("sources.business.min_cell_size", bz.min_cell_size, "must be >= 0 (0 = off)")
    names: set[str] = set()
    for i, tok in enumerate(cfg.auth.tokens):
        key = f"auth.tokens[{i}]"
        if not tok.name:
            raise bad(f"{key}.name", tok.name, "must not be empty")
        if tok.name in names:
            raise bad(f"{key}.name", tok.name, "duplicate token name")
        names.add(tok.name)
        if not tok.hash:
            raise ConfigError(f"{key}.hash: must not be empty")
        if tok.hash.startswith("sha256:"):
            hexpart = tok.hash[7:]
            if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart.lower()):
                raise ConfigError(f"{key}.hash: 'sha256:' must be followed by 64 hex digits")
        for topic in tok.topics:
            if topic not in TOPICS:
                raise bad(f"{key}.topics", topic, f"unknown topic (known: {', '.join(TOPICS)})")
    c = cfg.cluster
    if c.redis_url and urlsplit(c.redis_url).scheme not in ("redis", "rediss", "unix"):
        raise bad("cluster.redis_url", redact_url(c.redis_url), "must be a redis:// or rediss:// URL")
    if c.stream_maxlen < 0:
        raise bad("cluster.stream_maxlen", c.stream_maxlen, "must be >= 0")
    if not c.key_prefix:
        raise bad("cluster.key_prefix", c.key_prefix, "must not be empty")


def build_config(raw: Mapping[str, Any], *, environ: Mapping[str, str] | None = None) -> Config:
    """Build and validate a Config from a parsed TOML mapping plus environment overrides."""
    data = _deepcopy(raw)
    if environ is None:
        environ = os.environ
    for parts, value, _name in env_overrides(environ):
        _set_path(data, parts, value)
    cfg = _build(Config, data, "")
    _validate(cfg)
    return cfg


def _deepcopy(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy(v) if isinstance(v, Mapping) else v for k, v in raw.items()}


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """`$HUB_CONFIG` if set, else ./config.toml."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("HUB_CONFIG") or "config.toml")


def load_config(path: str | os.PathLike[str] | None = None, *,
                environ: Mapping[str, str] | None = None) -> Config:
    """Load, override from the environment and validate; raise ConfigError on any problem."""
    p = Path(path) if path is not None else default_config_path(environ)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(p)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from None
    return build_config(raw, environ=environ)


# --------------------------------------------------------------------------- secrets


def redact_url(url: str) -> str:
    """`url` with any password replaced by '***' (user names are kept; they help debugging)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def secrets_of(cfg: Config) -> list[str]:
    """Every secret string in `cfg`, for scrubbing error messages that might echo them."""
    out: list[str] = []
    p = cfg.sources.prometheus
    out += [p.bearer_token, p.basic_auth_password]
    for url in (cfg.sources.business.mongodb_uri, cfg.cluster.redis_url):
        try:
            pw = urlsplit(url).password
        except ValueError:
            pw = None
        if pw:
            out.append(pw)
    out += [t.hash for t in cfg.auth.tokens if not t.hash.startswith("sha256:")]
    return [s for s in out if s]


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with every secret in `secrets` replaced by '***'."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text


def redacted_dict(cfg: Config) -> dict[str, Any]:
    """The effective config as plain data with every secret replaced, for `hub check-config`."""

    def walk(obj: Any, key: str = "") -> Any:
        if dataclasses.is_dataclass(obj):
            return {f.name: walk(getattr(obj, f.name), f.name) for f in dataclasses.fields(obj)}
        if isinstance(obj, Mapping):
            return {k: walk(v) for k, v in obj.items()}
        if isinstance(obj, tuple):
            return [walk(v, key) for v in obj]
        if key in SECRET_KEYS and isinstance(obj, str) and obj:
            if key in ("mongodb_uri", "redis_url"):
                return redact_url(obj)
            if key == "hash" and obj.startswith("sha256:"):
                return "sha256:<redacted>"
            return "<redacted>"
        return obj

    return walk(cfg)
