"""The secrets of a config, found through the schema: every key declared `secret=` there, in every form
it may be echoed in. The one place that walks a `Config` for secrets; `hub.secrets` takes plain values."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from hub.config.spec import Spec, spec_of
from hub.secrets import Secrets, credential_forms, url_secrets, webhook_secrets


def secrets_of(cfg: Any) -> Secrets:
    """The registry of every secret in `cfg` (a `Config`, or any dataclass declared with `key()`)."""
    values: list[str] = []
    _walk(cfg, values)
    return Secrets(values)


def _walk(obj: Any, out: list[str]) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        spec = spec_of(f)
        if spec is not None and spec.secret:
            out += _forms(spec, value, obj)
        items = value.values() if isinstance(value, Mapping) else value if isinstance(value, tuple) else [value]
        for item in items:  # sections, and lists of tables ([[auth.tokens]])
            if dataclasses.is_dataclass(item) and not isinstance(item, type):
                _walk(item, out)


def _forms(spec: Spec, value: Any, parent: Any) -> list[str]:
    if isinstance(value, Mapping):
        texts = [v for v in value.values() if isinstance(v, str)]
    elif isinstance(value, (tuple, list)):
        texts = [v for v in value if isinstance(v, str)]
    else:
        texts = [value] if isinstance(value, str) else []
    out: list[str] = []
    for text in filter(None, texts):
        if spec.secret == "url":  # a URL is secret only in its user info
            out += url_secrets(text)
        elif spec.secret == "webhook":  # the whole URL, its path and its token segment
            out += webhook_secrets(text)
        else:
            out.append(text)
        if spec.user:
            out += credential_forms(str(getattr(parent, spec.user, "")), text)
    return out
