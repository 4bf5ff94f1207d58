"""The small interface every data source implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from hub.vocab import ReadableError


class SourceError(ReadableError):
    """A collection failure whose message is already readable and free of secrets."""


@dataclass(slots=True, frozen=True)
class SourceResult:
    """What one collection produced: `data` maps section name -> value.

    `error` set together with `data` means a partial result (some parts failed);
    `warnings` are passed on to clients as-is.
    """

    data: dict[str, Any]
    error: str | None = None
    warnings: tuple[str, ...] = ()


class Source(abc.ABC):
    """A data source: named, filling fixed `data` sections, collected once per tick."""

    #: key in the snapshot's "sources" object
    name: str = ""
    #: keys of the snapshot's "data" object this source fills (null when it fails)
    sections: tuple[str, ...] = ()
    #: the time this source asks for per collection, in seconds; the scheduler owns the budget
    #: and grants min(timeout, its share of the interval)
    timeout: float = 5.0

    async def start(self) -> None:
        """Open long-lived clients; must not fail when the dependency is down."""

    @abc.abstractmethod
    async def collect(self, budget: float) -> SourceResult:
        """Collect once within `budget` seconds. Raise on failure (SourceError for a readable reason).

        The scheduler cancels the collection a little after `budget`; a source that stops its own
        work at `budget` keeps what finished and reports a readable reason instead.
        """

    async def close(self) -> None:
        """Release clients; called once at shutdown."""


@runtime_checkable
class WindowedMetrics(Protocol):
    """A source that also answers for any time window on request (`/api/metrics/business`)."""

    async def metrics_for(self, time_range: str) -> dict[str, Any]:
        """The section's object for `time_range`; SourceError when unavailable, ValueError for an unknown range."""
        ...
