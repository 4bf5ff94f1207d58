"""How one config key is declared: `key(default, doc=..., lo=..., hi=..., ...)` puts a `Spec` in the
field's metadata."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: secret kinds: "value" is never shown; "url" is shown with its password masked; "webhook" as scheme+host only
SECRET_KINDS = (None, "value", "url", "webhook")


@dataclass(frozen=True, kw_only=True)
class Spec:
    """Everything the loader needs to know about one key besides its Python type."""

    doc: str
    lo: float | None = None  # inclusive lower bound (numbers)
    gt: float | None = None  # exclusive lower bound (numbers), for "must be > 0"
    hi: float | None = None  # inclusive upper bound (numbers)
    unit: str = ""  # shown after a bound: "must be >= 0.1 seconds"
    choices: tuple[str, ...] | None = None  # allowed values (strings, or list items)
    nonempty: bool = False  # strings: "" is an error
    check: str | None = None  # name of a check in hub.config.checks (applied to each item of a list/table)
    secret: str | None = None  # one of SECRET_KINDS
    #: for a secret password: the sibling key holding its user name (an HTTP Basic credential echoes both)
    user: str = ""
    min_items: int = 0  # lists and tables


def key(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None, doc: str,
        lo: float | None = None, gt: float | None = None, hi: float | None = None, unit: str = "",
        choices: tuple[str, ...] | None = None, nonempty: bool = False, check: str | None = None,
        secret: str | None = None, user: str = "", min_items: int = 0) -> Any:
    """A dataclass field declaring one config key: its default and every rule the loader enforces."""
    assert secret in SECRET_KINDS, secret
    assert not user or secret, "user= names the user of a secret password"
    spec = Spec(doc=doc, lo=lo, gt=gt, hi=hi, unit=unit, choices=choices, nonempty=nonempty, check=check,
                secret=secret, user=user, min_items=min_items)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"spec": spec})
    return dataclasses.field(default=default, metadata={"spec": spec})


def section(cls: type, doc: str) -> Any:
    """A dataclass field holding a nested section (a TOML table)."""
    return dataclasses.field(default_factory=cls, metadata={"doc": doc})


def spec_of(f: dataclasses.Field[Any]) -> Spec | None:
    """The Spec of a field, or None for a section."""
    return f.metadata.get("spec")
