"""Loading: the TOML file, then HUB_* variables, then CLI options, all through the one converter."""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hub.config.convert import ConfigError, _build, _fields, _kind, _relations, _show
from hub.config.schema import Config
from hub.config.spec import Spec

# --------------------------------------------------------------------------- overrides


def _lookup(parts: list[str]) -> tuple[Any, Spec | None] | None:
    """(type, spec) of the key at a dotted path, or None if the path is not a key (sections are not keys)."""
    tp: Any = Config
    spec: Spec | None = None
    for part in parts:
        if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
            return None
        fields = _fields(tp)
        if part not in fields:
            return None
        tp, spec = fields[part]
    return None if dataclasses.is_dataclass(tp) else (tp, spec)


def _is_secret_or_container(tp: Any, spec: Spec | None) -> bool:
    return bool(spec and spec.secret) or typing.get_origin(tp) is not None or tp is Mapping


def _parse_env(name: str, key: str, tp: Any, spec: Spec | None, text: str) -> Any:
    if tp is str:
        return text
    try:
        parsed = tomllib.loads(f"v = {text}")
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        # The text itself is echoed only for plain scalar keys: a list or table may hold secrets.
        shown = "" if _is_secret_or_container(tp, spec) else f" {_show(text, spec)}"
        raise ConfigError(f"{name} ({key}): cannot parse{shown} as a TOML value ({exc})", key=key) from None
    if set(parsed) != {"v"}:
        raise ConfigError(f"{name} ({key}): must hold exactly one TOML value", key=key)
    return parsed["v"]


#: the seed's own variable names; applied first so the HUB_* spellings win
SEED_VARIABLES = (("PROMETHEUS_URL", "sources.prometheus.url"), ("MONGODB_URI", "sources.business.mongodb_uri"))


def env_overrides(environ: Mapping[str, str]) -> list[tuple[list[str], Any, str]]:
    """The (path, value, variable name) overrides in `environ`; a HUB_SECTION__TYPO is a ConfigError."""
    found: list[tuple[list[str], Any, str]] = []
    for name, key in SEED_VARIABLES:
        if environ.get(name):
            found.append((key.split("."), environ[name], name))
    sections = {f.name for f in dataclasses.fields(Config)}
    for name, text in sorted(environ.items()):
        if not name.startswith("HUB_") or "__" not in name:
            continue
        parts = [p.lower() for p in name[4:].split("__")]
        if parts[0] not in sections:
            continue  # not ours (e.g. a HUB_FOO__BAR of another tool); a typo in a section name is not caught
        found_key = _lookup(parts)
        key = ".".join(parts)
        if found_key is None:
            raise ConfigError(f"{name}: {key} is not a config key (see config.toml for the keys)", key=key)
        tp, spec = found_key
        found.append((parts, _parse_env(name, key, tp, spec, text), name))
    return found


def _set_path(raw: dict[str, Any], parts: list[str], value: Any, label: str) -> None:
    node = raw
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            key = ".".join(parts[: i + 1])
            raise ConfigError(f"{key}: expected a table, got {_kind(node)} (while applying {label})", key=key)
    node[parts[-1]] = value


def _labelled(exc: ConfigError, labels: Mapping[str, str]) -> ConfigError:
    """`exc` prefixed with the variable or option that set its key, if one did."""
    found = [label for key, label in labels.items()
             for k in exc.keys if k == key or k.startswith((key + ".", key + "["))]
    if found:
        return ConfigError(f"{', '.join(dict.fromkeys(found))}: {exc}", key=exc.key, related=exc.keys[1:])
    return exc


def _build_all(data: dict[str, Any], labels: Mapping[str, str]) -> Config:
    try:
        cfg = _build(Config, data, "")
        _relations(cfg)
    except ConfigError as exc:
        raise _labelled(exc, labels) from None
    return cfg


def build_config(raw: Mapping[str, Any], *, environ: Mapping[str, str] | None = None) -> Config:
    """Build and validate a Config from a parsed TOML mapping plus environment overrides."""
    data = _deepcopy(raw)
    labels: dict[str, str] = {}
    for parts, value, name in env_overrides(os.environ if environ is None else environ):
        _set_path(data, parts, value, name)
        labels[".".join(parts)] = name
    return _build_all(data, labels)


def with_overrides(cfg: Config, overrides: Mapping[str, Any], *,
                   labels: Mapping[str, str] | None = None) -> Config:
    """`cfg` with dotted keys replaced (e.g. {"server.port": 0}), validated exactly like the file.

    `labels` names where each override came from (e.g. {"server.port": "--port"}) for error messages.
    """
    from hub.config.dump import to_raw

    data = to_raw(cfg)
    names = {key: (labels or {}).get(key, key) for key in overrides}
    for key, value in overrides.items():
        parts = key.split(".")
        if _lookup(parts) is None:
            raise ConfigError(f"{names[key]}: {key} is not a config key", key=key)
        _set_path(data, parts, value, names[key])
    return _build_all(data, {k: v for k, v in names.items() if v != k})


def _deepcopy(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy(v) if isinstance(v, Mapping) else v for k, v in raw.items()}


# --------------------------------------------------------------------------- files


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """`$HUB_CONFIG` if set, else ./config.toml."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("HUB_CONFIG") or "config.toml")


def load_config(path: str | os.PathLike[str] | None = None, *,
                environ: Mapping[str, str] | None = None) -> Config:
    """Load, override from the environment and validate; raise ConfigError on any problem."""
    p = Path(path) if path is not None else default_config_path(environ)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {str(p)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not UTF-8 text "
                          f"(byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's digit limit
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {str(exc)[:200]}") from None
    return build_config(raw, environ=environ)
