"""One generic converter: a TOML-shaped value to the schema's type, checked against the key's Spec."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from hub.config.checks import CHECKS
from hub.config.schema import Config
from hub.config.spec import Spec, spec_of
from hub.secrets import redact_url, redact_webhook


class ConfigError(ValueError):
    """A config problem; the message names the key (and the variable or option that set it)."""

    def __init__(self, message: str, *, key: str = "", related: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.key = key
        self.keys = (key, *related) if key else related  # every key the problem involves


# --------------------------------------------------------------------------- showing values safely


def _kind(value: Any) -> str:
    """A value's TOML kind, for messages that must not show the value itself."""
    for tp, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                     (dict, "a table"), (list, "a list")):
        if isinstance(value, tp):
            return name
    return f"a {type(value).__name__}"


def _show(value: Any, spec: Spec | None) -> str:
    """`value` as it may appear in an error message: secrets never, huge values shortened."""
    secret = spec.secret if spec else None
    if secret == "value":
        return f"{_kind(value)} (not shown: secret)"
    if isinstance(value, str) and secret == "url":
        shown = redact_url(value)
        # Only a URL whose user info was recognised is safe to show; anything else may be a bare password.
        return repr(shown[:200]) if "://" in shown and "@" not in shown.replace(":***@", "") else \
            "a value (not shown: it may hold a password)"
    if isinstance(value, str) and secret == "webhook":
        return repr(redact_webhook(value))
    if isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if abs(value) < 10**30 else f"an integer of {value.bit_length()} bits"
    if isinstance(value, str):
        return repr(value) if len(value) <= 200 else repr(value[:200]) + "..."
    return _kind(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _fail(path: str, why: str, value: Any, spec: Spec | None) -> ConfigError:
    return ConfigError(f"{path}: {why}, got {_show(value, spec)}", key=path)


# --------------------------------------------------------------------------- conversion


def _scalar(path: str, tp: Any, value: Any, spec: Spec | None) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(path, "expected true or false", value, spec)
        return value
    if tp in (int, float):
        ok = int if tp is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok):
            raise _fail(path, "expected an integer" if tp is int else "expected a number", value, spec)
        if isinstance(value, float) and not math.isfinite(value):
            raise _fail(path, "must be a finite number", value, spec)
        unit = f" {spec.unit}" if spec and spec.unit else ""
        if spec and spec.lo is not None and value < spec.lo:
            raise _fail(path, f"must be >= {_num(spec.lo)}{unit}", value, spec)
        if spec and spec.gt is not None and value <= spec.gt:
            raise _fail(path, f"must be > {_num(spec.gt)}{unit}", value, spec)
        if spec and spec.hi is not None and value > spec.hi:
            raise _fail(path, f"must be <= {_num(spec.hi)}{unit}", value, spec)
        return tp(value)  # safe now: the bounds keep it far from float overflow
    if tp is str:
        if not isinstance(value, str):
            raise _fail(path, "expected a string", value, spec)
        if spec and spec.nonempty and not value:
            raise ConfigError(f"{path}: must not be empty", key=path)
        if spec and spec.choices is not None and value not in spec.choices:
            raise _fail(path, f"must be one of {', '.join(spec.choices)}", value, spec)
        if spec and spec.check:
            why = CHECKS[spec.check](value)
            if why:
                raise _fail(path, why, value, spec)
        return value
    raise ConfigError(f"{path}: unsupported type {tp!r}", key=path)  # pragma: no cover - schema bug


def _convert(path: str, tp: Any, value: Any, spec: Spec | None) -> Any:
    """Convert one TOML value to the annotated type, or raise ConfigError naming `path`."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a table, got {_kind(value)}", key=path)
        return _build(tp, value, path)
    origin = typing.get_origin(tp)
    if origin is typing.Union or isinstance(tp, types.UnionType):
        return _union(path, typing.get_args(tp), value, spec)
    if origin is tuple:
        item_tp = typing.get_args(tp)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {_kind(value)}", key=path)
        if spec and len(value) < spec.min_items:
            raise ConfigError(f"{path}: must hold at least {spec.min_items} item(s)", key=path)
        return tuple(_convert(f"{path}[{i}]", item_tp, v, spec) for i, v in enumerate(value))
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a table, got {_kind(value)}", key=path)
        if spec and len(value) < spec.min_items:
            raise ConfigError(f"{path}: must hold at least {spec.min_items} entry(ies)", key=path)
        v_tp = typing.get_args(tp)[1]
        out = {}
        for k, v in value.items():
            if not k.strip():
                raise ConfigError(f"{path}: names must not be empty", key=path)
            out[k] = _convert(f"{path}.{k}", v_tp, v, spec)
        return types.MappingProxyType(out)
    return _scalar(path, tp, value, spec)


def _union(path: str, args: tuple[Any, ...], value: Any, spec: Spec | None) -> Any:
    """`X | None` (None only as written back by `to_raw`: TOML has no null) and `str | Table`
    (a string, or a table of the dataclass's keys, e.g. a health check)."""
    if value is None and type(None) in args:
        return None
    rest = [a for a in args if a is not type(None)]
    table = next((a for a in rest if isinstance(a, type) and dataclasses.is_dataclass(a)), None)
    if table is None or len(rest) == 1:
        return _convert(path, rest[0], value, spec)
    if isinstance(value, dict):
        return _build(table, value, path)
    if not isinstance(value, str):
        raise _fail(path, f"expected a string or a table (keys: {', '.join(_fields(table))})", value, spec)
    return _scalar(path, str, value, spec)


def _fields(cls: type) -> dict[str, tuple[Any, Spec | None]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], spec_of(f)) for f in dataclasses.fields(cls)}


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    fields = _fields(cls)
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        path = f"{prefix}.{name}" if prefix else name
        if name not in fields:
            raise ConfigError(f"{path}: unknown key (known keys here: {', '.join(sorted(fields))})", key=path)
        tp, spec = fields[name]
        kwargs[name] = _convert(path, tp, value, spec)
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{prefix or 'config'}: missing required key(s) {', '.join(missing)}", key=prefix)
    return cls(**kwargs)


def _relations(cfg: Config) -> None:
    """The few rules that tie two keys together."""
    p = cfg.sources.prometheus
    if bool(p.basic_auth_user) != bool(p.basic_auth_password):
        raise ConfigError("sources.prometheus.basic_auth_user/basic_auth_password: set both or neither",
                          key="sources.prometheus", related=("sources.prometheus.basic_auth_user",
                                                             "sources.prometheus.basic_auth_password"))
    if p.bearer_token and p.basic_auth_user:
        raise ConfigError("sources.prometheus: bearer_token and basic_auth_user are mutually exclusive",
                          key="sources.prometheus", related=("sources.prometheus.bearer_token",
                                                             "sources.prometheus.basic_auth_user"))
    health, business = cfg.sources.health, cfg.sources.business
    if health.enabled and business.enabled and "database" in health.checks:
        raise ConfigError("sources.health.checks.database: the name is taken by the MongoDB ping of the business "
                          "source; choose another name", key="sources.health.checks.database")
    _oidc_relations(cfg)
    names: set[str] = set()
    for i, tok in enumerate(cfg.auth.tokens):
        if tok.name in names:
            raise ConfigError(f"auth.tokens[{i}].name: duplicate token name, got {tok.name!r}",
                              key=f"auth.tokens[{i}].name")
        names.add(tok.name)


def _oidc_relations(cfg: Config) -> None:
    """[auth.oidc]: with an issuer, a client id, the openid scope and at least one mapped group."""
    o = cfg.auth.oidc
    if not o.issuer:
        others = [k for k in ("client_id", "client_secret", "redirect_url") if getattr(o, k)]
        if others or o.roles:
            named = others + (["roles"] if o.roles else [])
            raise ConfigError(f"auth.oidc.issuer: required when auth.oidc.{named[0]} is set (sign-in needs the "
                              "identity provider's issuer URL)", key="auth.oidc.issuer",
                              related=tuple(f"auth.oidc.{k}" for k in named))
        return
    if not o.client_id:
        raise ConfigError("auth.oidc.client_id: required with auth.oidc.issuer", key="auth.oidc.client_id")
    if "openid" not in o.scopes:
        raise ConfigError(f"auth.oidc.scopes: must include \"openid\", got {list(o.scopes)!r}", key="auth.oidc.scopes")
    if not o.roles:
        raise ConfigError("auth.oidc.roles: map at least one group of the identity provider "
                          "([auth.oidc.roles.<group>] with topics and actions); without one nobody may sign in",
                          key="auth.oidc.roles")
