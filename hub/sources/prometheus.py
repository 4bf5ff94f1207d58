"""Prometheus source: instant queries (`data.system`) and active alerts (`data.alerts`)."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from hub.config import PrometheusSourceConfig, redact_url, scrub
from hub.sources.base import Source, SourceError, SourceResult

logger = logging.getLogger(__name__)

#: Idle pooled connections are kept this long. Longer than the default tick (10 s) so each
#: tick reuses the previous tick's connections, shorter than common proxy idle limits (60 s).
KEEPALIVE_EXPIRY = 30.0
#: At most this many alerts go into a snapshot; the rest are counted in a warning, because
#: every snapshot is sent to every client and an alert storm must not bloat each frame.
MAX_ALERTS = 200
#: How much of an unexpected response body is quoted in an error message.
BODY_EXCERPT = 200
_STATE_ORDER = {"firing": 0, "pending": 1}


@dataclass(slots=True)
class _Failure:
    """One request's readable failure message (already free of secrets)."""

    message: str


class PrometheusSource(Source):
    """Runs `cfg.queries` through /api/v1/query and reads /api/v1/alerts, all within `cfg.timeout`."""

    name = "prometheus"

    def __init__(self, cfg: PrometheusSourceConfig, *, secrets: Iterable[str] = ()) -> None:
        self._cfg = cfg
        self.sections = ("system", "alerts") if cfg.alerts else ("system",)
        self.timeout = cfg.timeout
        base = cfg.url.rstrip("/")
        self._query_url = f"{base}/api/v1/query"
        self._alerts_url = f"{base}/api/v1/alerts"
        self._safe_url = _strip_userinfo(redact_url(base))
        url_password = _url_password(cfg.url)
        self._secrets = [s for s in (*secrets, cfg.bearer_token, cfg.basic_auth_password, url_password) if s]
        self._client: httpx.AsyncClient | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Create the pooled HTTP client; makes no request, so a down Prometheus cannot fail it."""
        if self._client is None:
            self._client = self._make_client()

    def _make_client(self) -> httpx.AsyncClient:
        cfg = self._cfg
        headers = {"Accept": "application/json", "User-Agent": "hub-prometheus-source"}
        auth: httpx.Auth | None = None
        if cfg.bearer_token:
            headers["Authorization"] = f"Bearer {cfg.bearer_token}"
        elif cfg.basic_auth_user:
            auth = httpx.BasicAuth(cfg.basic_auth_user, cfg.basic_auth_password)
        verify: ssl.SSLContext | bool
        if cfg.ca_file:
            verify = ssl.create_default_context(cafile=cfg.ca_file)
            if not cfg.tls_verify:
                verify.check_hostname = False
                verify.verify_mode = ssl.CERT_NONE
        else:
            verify = cfg.tls_verify
        n = len(cfg.queries) + 1
        return httpx.AsyncClient(
            headers=headers,
            auth=auth,
            verify=verify,
            # Per-read bound only; the whole collection is bounded by the scheduler's budget in collect().
            timeout=httpx.Timeout(cfg.timeout),
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n,
                                keepalive_expiry=KEEPALIVE_EXPIRY),
            follow_redirects=False,
            trust_env=False,  # HTTP(S)_PROXY from the environment would silently reroute queries
        )

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # ------------------------------------------------------------------ collect

    async def collect(self, budget: float) -> SourceResult:
        """Every query and the alerts concurrently; what finished within `budget` is kept."""
        if self._client is None:
            await self.start()
        names = list(self._cfg.queries)
        tasks: dict[str, asyncio.Task[Any]] = {
            name: asyncio.create_task(self._query(self._cfg.queries[name])) for name in names
        }
        alerts_task = asyncio.create_task(self._alerts()) if self._cfg.alerts else None
        every = [*tasks.values(), *([alerts_task] if alerts_task else [])]
        t0 = time.monotonic()
        try:
            done, pending = await asyncio.wait(every, timeout=budget)
        finally:
            # Also reached when the scheduler cancels us: never leave requests running.
            for task in every:
                task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        elapsed = time.monotonic() - t0
        timed_out = _Failure(f"no answer from Prometheus at {self._safe_url} "
                             f"within the {budget:g} s budget")

        def outcome(task: asyncio.Task[Any]) -> Any:
            if task in pending:
                return timed_out
            exc = task.exception()
            if exc is not None:  # a bug in our parsing, not a Prometheus problem
                logger.exception("prometheus source: unexpected error", exc_info=exc)
                return _Failure(self._clean(f"internal error: {type(exc).__name__}: {exc}"))
            return task.result()

        results = {name: outcome(task) for name, task in tasks.items()}
        failed = {name: r for name, r in results.items() if isinstance(r, _Failure)}
        if len(failed) == len(results):
            if all(f is timed_out for f in failed.values()):
                raise SourceError(f"timed out after {budget:g} s waiting for Prometheus "
                                  f"at {self._safe_url}")
            messages = {f.message for f in failed.values()}
            if len(messages) == 1:  # e.g. Prometheus down: say it once, not once per query
                raise SourceError(messages.pop())
            raise SourceError("; ".join(f"query {n!r}: {f.message}" for n, f in failed.items()))

        warnings: list[str] = []
        system: dict[str, Any] = {}
        for name, r in results.items():
            if isinstance(r, _Failure):
                continue
            result, warns = r
            system[name] = result
            warnings += [f"query {name!r}: {w}" for w in warns]
        errors = [f"query {n!r} failed: {f.message}" for n, f in failed.items()]

        data: dict[str, Any] = {"system": system}
        if alerts_task is not None:
            a = outcome(alerts_task)
            if isinstance(a, _Failure):
                # Alerts are a separate section: null it, keep the good system data, say why.
                data["alerts"] = None
                errors.append(f"alerts failed: {a.message}")
            else:
                alerts, warns = a
                data["alerts"] = alerts
                warnings += warns
        logger.debug("prometheus source: %d/%d queries ok in %.3f s", len(system), len(results), elapsed)
        return SourceResult(data=data, error="; ".join(errors) or None,
                            warnings=tuple(dict.fromkeys(self._clean(w) for w in warnings)))

    async def _query(self, expr: str) -> tuple[Any, list[str]] | _Failure:
        body = await self._get(self._query_url, {"query": expr})
        if isinstance(body, _Failure):
            return body
        data = body.get("data")
        if not isinstance(data, dict) or "result" not in data:
            return _Failure(f"answer from {self._safe_url} has no data.result")
        return data["result"], _warnings(body)

    async def _alerts(self) -> tuple[list[dict[str, Any]], list[str]] | _Failure:
        body = await self._get(self._alerts_url, None)
        if isinstance(body, _Failure):
            return body
        data = body.get("data")
        raw = data.get("alerts") if isinstance(data, dict) else None
        if not isinstance(raw, list):
            return _Failure(f"answer from {self._safe_url} has no data.alerts")
        alerts = [_alert(a) for a in raw if isinstance(a, dict) and a.get("state") in _STATE_ORDER]
        alerts.sort(key=lambda a: (_STATE_ORDER[a["state"]], a["activeAt"] or "", a["name"]))
        warnings = _warnings(body)
        if len(alerts) > MAX_ALERTS:
            warnings.append(f"{len(alerts) - MAX_ALERTS} more active alerts not shown "
                            f"(limit {MAX_ALERTS})")
            alerts = alerts[:MAX_ALERTS]
        return alerts, warnings

    async def _get(self, url: str, params: dict[str, str] | None) -> dict[str, Any] | _Failure:
        """GET one API endpoint; the parsed success body, or a readable `_Failure`."""
        assert self._client is not None
        try:
            resp = await self._client.get(url, params=params)
        except httpx.HTTPError as exc:
            return _Failure(self._clean(f"cannot reach Prometheus at {self._safe_url}: {_transport_reason(exc)}"))
        where = f"HTTP {resp.status_code} from Prometheus at {self._safe_url}"
        try:
            body = resp.json()
        except ValueError:
            excerpt = " ".join(resp.text[:BODY_EXCERPT].split())
            kind = resp.headers.get("content-type", "no content type")
            return _Failure(self._clean(f"{where}: not a Prometheus API answer ({kind}): {excerpt!r}"))
        if not isinstance(body, dict):
            return _Failure(self._clean(f"{where}: not a Prometheus API answer (JSON {type(body).__name__})"))
        if body.get("status") == "success" and resp.status_code == 200:
            return body
        if body.get("status") == "error":
            # Prometheus's own words, e.g. "bad_data: 1:5: parse error: unexpected <op:*>"
            return _Failure(self._clean(f"{where}: {body.get('errorType', 'error')}: {body.get('error', '')}"))
        return _Failure(self._clean(f"{where}: not a Prometheus API answer (no status field)"))

    def _clean(self, text: str) -> str:
        return scrub(text, self._secrets)


# ---------------------------------------------------------------------- helpers


def _alert(a: dict[str, Any]) -> dict[str, Any]:
    labels = a.get("labels") if isinstance(a.get("labels"), dict) else {}
    annotations = a.get("annotations") if isinstance(a.get("annotations"), dict) else {}
    return {
        "name": labels.get("alertname", ""),
        "state": a["state"],
        "severity": labels.get("severity"),
        "activeAt": a.get("activeAt"),
        "summary": annotations.get("summary") or annotations.get("description"),
        "labels": labels,
    }


def _warnings(body: dict[str, Any]) -> list[str]:
    warns = body.get("warnings")
    return [str(w) for w in warns] if isinstance(warns, list) else []


def _transport_reason(exc: httpx.HTTPError) -> str:
    """A short human reason for a transport failure (walks the cause chain: httpx wraps OS errors)."""
    if isinstance(exc, httpx.TimeoutException):
        kind = {httpx.ConnectTimeout: "connect", httpx.ReadTimeout: "read",
                httpx.WriteTimeout: "write", httpx.PoolTimeout: "pool"}.get(type(exc), "")
        return f"{kind} timeout".strip()
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, socket.gaierror):
            return f"DNS lookup failed ({e.strerror or e})"
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed ({e.verify_message or e})"
        if isinstance(e, ssl.SSLError):
            return f"TLS error ({e.reason or e})"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"connection closed by the server ({exc})"
    return f"{type(exc).__name__}: {exc or 'no details'}"


def _url_password(url: str) -> str:
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


def _strip_userinfo(url: str) -> str:
    """`url` without any user:password@ part: error messages name the server, not the account."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
