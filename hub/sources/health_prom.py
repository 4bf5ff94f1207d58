"""Uptime and p95 latency per health check over 24 h, 7 d and 30 d, as Prometheus computes them from
the hub's own series where it scrapes the hub (`sources.prometheus.self_job`).

Per window, one query answers for every check (`W` = 24h, 7d, 30d, `J` = the job):

- uptime: `avg by (check) (avg_over_time(hub_health_check_up{job="J"}[W]))`, the fraction of scrapes
  in which the check counted as up (the per-check `avg_over_time(hub_health_check_up{job="J",
  check="<name>"}[W])` when one replica is scraped; replicas export the same value);
- p95: `max by (check) (quantile_over_time(0.95, hub_health_check_latency_seconds{job="J"}[W]))`,
  in ms, over the scraped durations of the checks' last attempts (failed ones included);
- since: `min by (check) (min_over_time(timestamp(hub_health_check_up{job="J"})[30d:5m]))`, the
  oldest sample on a 5-minute grid (null in a series' first minutes).

Every query is evaluated at one time, a whole second `EVAL_LAG_S` seconds in the past (a scrape still being appended
would otherwise make the figures depend on when they were read) and the figures carry it as `at`.
A refresh runs in the background (`hub.tasks.spawn`), at most every `REFRESH_S` seconds, within its
own deadline `DEADLINE_S`; a tick never waits for it. Until the first answer, after a failure (logged
once per streak) or for a check Prometheus has no uptime of, the hub's own record is shown instead.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from hub.config import PrometheusSourceConfig
from hub.secrets import Secrets
from hub.sources.prometheus.fetch import Failure, decode, fetch, http_client
from hub.sources.prometheus.history import job_selector
from hub.sources.prometheus.shape import BadAnswer, shape_result
from hub.tasks import cancel_and_wait, spawn
from hub.vocab import safe_text, utc_iso

logger = logging.getLogger("hub.sources.health")

REFRESH_S = 60.0
DEADLINE_S = 20.0
EVAL_LAG_S = 5.0
WINDOWS = ("24h", "7d", "30d")
#: every check's figures (one series per check) fit many times over in this
MAX_CHECKS = 10_000


def uptime_query(job: str, window: str) -> str:
    return f"avg by (check) (avg_over_time(hub_health_check_up{job_selector(job)}[{window}]))"


def p95_query(job: str, window: str) -> str:
    return ("max by (check) (quantile_over_time(0.95, "
            f"hub_health_check_latency_seconds{job_selector(job)}[{window}]))")


def since_query(job: str) -> str:
    return f"min by (check) (min_over_time(timestamp(hub_health_check_up{job_selector(job)})[30d:5m]))"


class PromUptime:
    """The figures Prometheus answered last (by check), refreshed in the background."""

    def __init__(self, cfg: PrometheusSourceConfig, *, secrets: Secrets) -> None:
        self._cfg = cfg
        self._job = cfg.self_job
        base = cfg.url.rstrip("/")
        self._url = f"{base}/api/v1/query"
        self._server = secrets.redact_url(base)
        self._secrets = secrets
        self._task: asyncio.Task[None] | None = None
        self._started = -math.inf
        self._figures: dict[str, dict[str, Any]] = {}
        self._error: str | None = None

    def poke(self, now: float) -> None:
        """Start a refresh when none runs and the last one started `REFRESH_S` or more ago."""
        if (self._task is None or self._task.done()) and now - self._started >= REFRESH_S:
            self._started = now
            self._task = spawn(self.refresh(), name="hub-health-uptime")

    def shown(self, name: str) -> dict[str, Any] | None:
        """{"uptime": {..., "source": "prometheus", "since", "at"}, "p95_ms": {...}}, or None (use the hub's)."""
        return self._figures.get(name)

    async def close(self) -> None:
        await cancel_and_wait([self._task] if self._task is not None else [])

    async def refresh(self) -> None:
        """Ask Prometheus within `DEADLINE_S`; keep its figures, or drop them all after a failure."""
        try:
            async with asyncio.timeout(DEADLINE_S):
                figures = await self._read(float(math.floor(time.time() - EVAL_LAG_S)))  # whole seconds: exact in ISO
        except TimeoutError:
            self._failed(f"no answer within {DEADLINE_S:g} s")
            return
        except Exception as exc:  # a bug must not end the checks: the hub's own figures stay shown
            self._failed(safe_text(self._secrets.scrub(f"{type(exc).__name__}: {exc}")))
            logger.debug("uptime refresh failed", exc_info=exc)
            return
        if isinstance(figures, Failure):
            self._failed(figures.message)
            return
        self._figures = figures
        if self._error is not None:
            logger.info("health: uptime figures from Prometheus again")
            self._error = None

    def _failed(self, reason: str) -> None:
        self._figures = {}
        if self._error is None:
            logger.warning("health: cannot read the uptime figures from Prometheus (%s); showing the hub's own",
                           reason)
        self._error = reason

    async def _read(self, at: float) -> dict[str, dict[str, Any]] | Failure:
        queries = {f"up {w}": uptime_query(self._job, w) for w in WINDOWS}
        queries |= {f"p95 {w}": p95_query(self._job, w) for w in WINDOWS}
        queries["since"] = since_query(self._job)
        async with http_client(self._cfg, connections=len(queries), user_agent="hub-health-uptime") as client:
            got = await asyncio.gather(*(self._one(client, q, at) for q in queries.values()))
        answers = dict(zip(queries, got, strict=True))
        for value in answers.values():
            if isinstance(value, Failure):
                return value
        return _figures(answers, at)  # type: ignore[arg-type]

    async def _one(self, client: Any, query: str, at: float) -> dict[str, float] | Failure:
        clean = self._secrets.scrub
        got = await fetch(client, self._url, {"query": query, "time": f"{at:.3f}"},
                          limit=self._cfg.max_response_bytes, server=self._server, clean=clean)
        if isinstance(got, Failure):
            return got
        body = decode(got, server=self._server, clean=clean)
        if isinstance(body, Failure):
            return body
        try:
            rows, _warnings, _cut = shape_result(body.get("data"), max_series=MAX_CHECKS)
        except BadAnswer as exc:
            return Failure(f"answer from {self._server}: {exc}")
        if not isinstance(rows, list):
            return Failure(f"answer from {self._server}: not an instant vector")
        out: dict[str, float] = {}
        for row in rows:
            check, value = row["metric"].get("check"), float(row["value"][1])
            if isinstance(check, str) and math.isfinite(value):
                out[check] = value
        return out


def _figures(answers: dict[str, dict[str, float]], at: float) -> dict[str, dict[str, Any]]:
    """The figures by check, for the checks Prometheus has a 24 h uptime of."""
    out: dict[str, dict[str, Any]] = {}
    for check in answers["up 24h"]:
        uptime: dict[str, Any] = {w: _round(answers[f"up {w}"].get(check), 6) for w in WINDOWS}
        since = answers["since"].get(check)
        uptime |= {"source": "prometheus", "since": None if since is None else utc_iso(since), "at": utc_iso(at)}
        p95 = {w: _round(None if (s := answers[f"p95 {w}"].get(check)) is None else s * 1000, 1) for w in WINDOWS}
        out[check] = {"uptime": uptime, "p95_ms": p95}
    return out


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
