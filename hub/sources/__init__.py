"""Data sources: one module per source behind the `Source` interface in `base`."""

from __future__ import annotations

from hub.sources.base import Source, SourceError, SourceResult

__all__ = ["Source", "SourceError", "SourceResult"]
