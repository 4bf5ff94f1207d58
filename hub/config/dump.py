"""A Config back to plain data: as TOML-shaped input (for overrides) or redacted (for `hub check-config`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from hub.config.spec import Spec, spec_of
from hub.secrets import redact_url, redact_webhook


def _redact(value: Any, spec: Spec | None) -> Any:
    """One leaf value with its secret hidden, per the key's declared secret kind."""
    if not spec or not spec.secret or not isinstance(value, str) or not value:
        return value
    if spec.secret == "url":
        return redact_url(value)
    if spec.secret == "webhook":
        return redact_webhook(value)
    if value.startswith("sha256:"):  # a token hash: the scheme helps, the digest is not shown
        return "sha256:<redacted>"
    return "<redacted>"


def _walk(obj: Any, spec: Spec | None, redact: bool) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _walk(getattr(obj, f.name), spec_of(f), redact) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: _walk(v, spec, redact) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return [_walk(v, spec, redact) for v in obj]
    return _redact(obj, spec) if redact else obj


def to_raw(cfg: Any) -> dict[str, Any]:
    """`cfg` as the TOML-shaped mapping that would build it again."""
    return _walk(cfg, None, False)


def redacted_dict(cfg: Any) -> dict[str, Any]:
    """The effective config as plain data with every secret replaced, for `hub check-config`."""
    return _walk(cfg, None, True)
