"""Data sources: one module per source behind the `Source` interface in `base`."""

from __future__ import annotations

from hub.sources.base import Source, SourceError, SourceResult
from hub.sources.sniffio_absent import cache_missing_sniffio

# Before any httpx client runs: the Prometheus, Alertmanager and health sources make several
# httpx requests per tick (see bench/README.md, "Profiles").
cache_missing_sniffio()

__all__ = ["Source", "SourceError", "SourceResult"]
