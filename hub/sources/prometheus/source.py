"""PrometheusSource: every query and the alerts, concurrently, within the tick's budget."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from hub.config import PrometheusSourceConfig
from hub.secrets import Secrets
from hub.sources.base import Source, SourceError, SourceResult
from hub.sources.prometheus.fetch import Answer, Failure, decode, fetch, http_client
from hub.sources.prometheus.shape import BadAnswer, shape_alerts, shape_result, text_warnings
from hub.tasks import cancel_and_wait
from hub.vocab import safe_text

logger = logging.getLogger(__name__)

#: defaults of sources.prometheus.max_series / max_response_bytes (see docs/prometheus.md)


class PrometheusSource(Source):
    """Runs `cfg.queries` (data.system) and `cfg.slo_queries` (data.slo) through /api/v1/query and reads
    /api/v1/alerts, all within the tick's budget."""

    name = "prometheus"

    def __init__(self, cfg: PrometheusSourceConfig, *, secrets: Secrets) -> None:
        self._cfg = cfg
        self.sections = ("system", *(("alerts",) if cfg.alerts else ()), *(("slo",) if cfg.slo_queries else ()))
        self.timeout = cfg.timeout
        self._max_series = cfg.max_series
        self._max_bytes = cfg.max_response_bytes
        base = cfg.url.rstrip("/")
        self._query_url = f"{base}/api/v1/query"
        self._alerts_url = f"{base}/api/v1/alerts"
        self._safe_url = secrets.redact_url(base)
        self._secrets = secrets
        self._client: httpx.AsyncClient | None = None
        # internal errors seen in the previous collection: each is logged (with its traceback)
        # when it appears, not once per tick while it lasts
        self._bugs: set[str] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Create the pooled HTTP client; makes no request, so a down Prometheus cannot fail it."""
        if self._client is None:
            self._client = self._make_client()

    def _make_client(self) -> httpx.AsyncClient:
        connections = len(self._cfg.queries) + len(self._cfg.slo_queries) + 1
        return http_client(self._cfg, connections=connections, user_agent="hub-prometheus-source")

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # ------------------------------------------------------------------ collect

    async def collect(self, budget: float) -> SourceResult:
        """Every query and the alerts concurrently; what finished within `budget` is kept."""
        if self._client is None:
            await self.start()
        # Every query by (section, name); messages say "query 'name'" for data.system's, "slo query 'name'"
        # for data.slo's.
        queries = {**{("system", n): q for n, q in self._cfg.queries.items()},
                   **{("slo", n): q for n, q in self._cfg.slo_queries.items()}}
        label = {k: f"query {k[1]!r}" if k[0] == "system" else f"slo query {k[1]!r}" for k in queries}
        # Plain create_task (the caller's context): these are this call's own parts, awaited below
        # before it returns or raises, so none outlives it.
        tasks: dict[tuple[str, str], asyncio.Task[Any]] = {
            name: asyncio.create_task(self._query(expr), name=f"hub-prometheus-query:{name[0]}:{name[1]}")
            for name, expr in queries.items()
        }
        alerts_task = (asyncio.create_task(self._alerts(), name="hub-prometheus-alerts")
                       if self._cfg.alerts else None)
        every = [*tasks.values(), *([alerts_task] if alerts_task else [])]
        t0 = time.monotonic()
        try:
            _done, pending = await asyncio.wait(every, timeout=budget)
        finally:
            # Also reached when the scheduler cancels us: never leave requests running, and wait
            # until they have stopped, so that no task of this call is pending once it is over.
            await cancel_and_wait(every)
        elapsed = time.monotonic() - t0
        timed_out = Failure(f"no answer from Prometheus at {self._safe_url} within the {budget:g} s budget")
        bugs: set[str] = set()

        def outcome(task: asyncio.Task[Any]) -> Any:
            if task in pending:
                return timed_out
            exc = task.exception()
            if exc is not None:  # a bug in our parsing, not a Prometheus problem
                text = self._quote(f"internal error: {type(exc).__name__}: {exc}")
                if text not in self._bugs:
                    logger.error("prometheus source: %s", text, exc_info=exc)
                bugs.add(text)
                return Failure(text)
            return task.result()

        results = {name: outcome(task) for name, task in tasks.items()}
        alerts = outcome(alerts_task) if alerts_task is not None else None
        self._bugs = bugs
        failed = {name: r for name, r in results.items() if isinstance(r, Failure)}
        if len(failed) == len(results):
            if all(f is timed_out for f in failed.values()):
                raise SourceError(f"timed out after {budget:g} s waiting for Prometheus "
                                  f"at {self._safe_url}")
            messages = {f.message for f in failed.values()}
            if len(messages) == 1:  # e.g. Prometheus down: say it once, not once per query
                raise SourceError(messages.pop())
            raise SourceError("; ".join(f"{label[n]}: {f.message}" for n, f in failed.items()))

        warnings: list[str] = []
        errors = [f"{label[n]} failed: {f.message}" for n, f in failed.items()]
        system: dict[str, Any] = {}
        slo: dict[str, Any] = {}
        for name, r in results.items():
            if isinstance(r, Failure):
                continue
            result, warns, cut = r
            if name[0] == "slo":
                # No series (the rules are not loaded, or record nothing yet): null, not an empty list,
                # so that a client tells "Prometheus has no such figure" from a figure.
                slo[name[1]] = result or None
            else:
                system[name[1]] = result
            warnings += [f"{label[name]}: {w}" for w in warns]
            if cut is not None:
                returned, kept = cut
                errors.append(f"{label[name]} cut to {kept} of {returned} series "
                              "(sources.prometheus.max_series)")
                warnings.append(
                    f"{label[name]} returned {returned} series, kept {kept} "
                    f"(sources.prometheus.max_series; NaN/Inf and zero values first, then the largest): "
                    f"aggregate it, e.g. sum by (job) ({safe_text(queries[name], limit=200)})")

        data: dict[str, Any] = {"system": system}
        if self._cfg.slo_queries:
            data["slo"] = slo
        if alerts is not None:
            if isinstance(alerts, Failure):
                # Alerts are a separate section: null it, keep the good system data, say why.
                data["alerts"] = None
                errors.append(f"alerts failed: {alerts.message}")
            else:
                data["alerts"], warns = alerts
                warnings += warns
        logger.debug("prometheus source: %d/%d queries ok in %.3f s", len(system) + len(slo), len(results),
                     elapsed)
        return SourceResult(data=data, error="; ".join(errors) or None,
                            warnings=tuple(dict.fromkeys(self._clean(w) for w in warnings)))

    async def _query(self, expr: str) -> tuple[Any, list[str], tuple[int, int] | None] | Failure:
        got = await self._fetch(self._query_url, {"query": expr})
        if isinstance(got, Failure):
            return got
        # Parsing and checking a fleet-sized answer is CPU work (tens of ms per 10k series): in a
        # worker thread the loop keeps serving clients between the GIL's switch intervals.
        return await asyncio.to_thread(self._shape_query, got)

    def _shape_query(self, got: Answer) -> tuple[Any, list[str], tuple[int, int] | None] | Failure:
        body = self._decode(got)
        if isinstance(body, Failure):
            return body
        try:
            result, warns, cut = shape_result(body.get("data"), max_series=self._max_series)
        except BadAnswer as exc:
            return Failure(f"answer from {self._safe_url}: {exc}")
        return result, text_warnings(body, self._clean) + warns, cut

    async def _alerts(self) -> tuple[list[dict[str, Any]], list[str]] | Failure:
        got = await self._fetch(self._alerts_url, None)
        if isinstance(got, Failure):
            return got
        return await asyncio.to_thread(self._shape_alerts, got)

    def _shape_alerts(self, got: Answer) -> tuple[list[dict[str, Any]], list[str]] | Failure:
        body = self._decode(got)
        if isinstance(body, Failure):
            return body
        try:
            alerts, warns = shape_alerts(body.get("data"))
        except BadAnswer as exc:
            return Failure(f"answer from {self._safe_url}: {exc}")
        return alerts, text_warnings(body, self._clean) + warns

    async def _fetch(self, url: str, params: dict[str, str] | None) -> Answer | Failure:
        """GET one API endpoint with the byte limit; the raw answer, or a readable `Failure`."""
        assert self._client is not None
        got = await fetch(self._client, url, params, limit=self._max_bytes, server=self._safe_url,
                          clean=self._clean)
        return Failure(self._clean(got.message)) if isinstance(got, Failure) else got

    def _decode(self, got: Answer) -> dict[str, Any] | Failure:
        body = decode(got, server=self._safe_url, clean=self._clean)
        return Failure(self._clean(body.message)) if isinstance(body, Failure) else body

    def _clean(self, text: str) -> str:
        return self._secrets.scrub(text)

    def _quote(self, text: str) -> str:
        return safe_text(self._clean(text))
