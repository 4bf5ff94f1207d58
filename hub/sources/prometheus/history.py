"""Range reads for the backfill: `/api/v1/query_range` within the live source's bounds.

Each answer is read with `sources.prometheus.max_response_bytes` and cut to `max_series` series
exactly as an instant answer is (`shape.keep`), so a backfill never holds more than the live
queries could.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hub.config import PrometheusSourceConfig
from hub.secrets import Secrets
from hub.sources.prometheus.fetch import Answer, Failure, decode, fetch, http_client
from hub.sources.prometheus.shape import BadAnswer, shape_result

#: Prometheus refuses a range of more than 11,000 steps per series; a longer history is cut to it
MAX_STEPS = 11_000


def job_selector(job: str) -> str:
    """`{job="<job>"}` with the job quoted as a PromQL string (JSON's escapes are PromQL's)."""
    return "{job=" + json.dumps(job) + "}"


def self_queries(job: str, step: float) -> dict[str, str]:
    """PromQL for the hub's own chart series (`rss`, `cpu` in % of one core, `conns`) as scraped under `job`."""
    sel = job_selector(job)
    # rate() needs two scrapes within its window: a minute covers every usual scrape interval.
    window = max(60, int(4 * step) + 1)
    return {
        "rss": f"max(process_resident_memory_bytes{sel})",
        "cpu": f"max(rate(process_cpu_seconds_total{sel}[{window}s])) * 100",
        "conns": f"max(hub_ws_connections{sel})",
    }


Series = list[dict[str, Any]]


class RangeReader:
    """Reads `query_range` answers with the live source's credentials, TLS and bounds."""

    def __init__(self, cfg: PrometheusSourceConfig, *, secrets: Secrets) -> None:
        self._cfg = cfg
        base = cfg.url.rstrip("/")
        self._url = f"{base}/api/v1/query_range"
        self._safe_url = secrets.redact_url(base)
        self._secrets = secrets

    async def read_all(self, queries: dict[str, str], *, start: float, end: float,
                       step: float) -> dict[str, Series | Failure]:
        """Every query over [start, end] at `step`, concurrently: name -> matrix rows, or its `Failure`."""
        async with http_client(self._cfg, connections=max(1, len(queries)),
                               user_agent="hub-prometheus-backfill") as client:
            names = list(queries)
            got = await asyncio.gather(*(self._one(client, queries[n], start, end, step) for n in names))
        return dict(zip(names, got, strict=True))

    async def _one(self, client: Any, expr: str, start: float, end: float, step: float) -> Series | Failure:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        clean = self._secrets.scrub
        got = await fetch(client, self._url, params, limit=self._cfg.max_response_bytes,
                          server=self._safe_url, clean=clean)
        if isinstance(got, Failure):
            return Failure(clean(got.message))
        return await asyncio.to_thread(self._shape, got)

    def _shape(self, got: Answer) -> Series | Failure:
        body = decode(got, server=self._safe_url, clean=self._secrets.scrub)
        if isinstance(body, Failure):
            return Failure(self._secrets.scrub(body.message))
        try:
            rows, _warnings, _cut = shape_result(body.get("data"), max_series=self._cfg.max_series)
        except BadAnswer as exc:
            return Failure(f"answer from {self._safe_url}: {exc}")
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "values" in r for r in rows):
            return Failure(f"answer from {self._safe_url}: not a range (matrix) answer")
        return rows
