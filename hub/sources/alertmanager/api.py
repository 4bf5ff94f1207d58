"""Alertmanager's API v2, every call bounded in time and bytes, every message capped and free of secrets."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson

from hub.config import AlertmanagerSourceConfig
from hub.secrets import Secrets
from hub.sources.prometheus.fetch import BODY_EXCERPT, Answer, Failure, fetch, http_client
from hub.vocab import ReadableError, safe_text

SERVICE = "Alertmanager"


class Unavailable(ReadableError):
    """Alertmanager cannot be reached, took too long, or failed (5xx, not its API): try again later."""


class Refused(ReadableError):
    """Alertmanager refused the request as invalid (4xx); the message quotes its reason."""


class AlertmanagerAPI:
    """The calls the hub makes: read alerts and silences, create, read and expire one silence."""

    def __init__(self, cfg: AlertmanagerSourceConfig, *, secrets: Secrets) -> None:
        self._cfg = cfg
        self._base = cfg.url.rstrip("/") + "/api/v2"
        self.safe_url = secrets.redact_url(cfg.url.rstrip("/"))
        self._secrets = secrets
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        """Create the pooled HTTP client; makes no request, so a down Alertmanager cannot fail it."""
        if self._client is None:
            # two per tick (alerts, silences) plus a few silence requests at once
            self._client = http_client(self._cfg, connections=4, user_agent="hub-alertmanager-source")

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # ------------------------------------------------------------------ calls

    async def alerts(self) -> Any:
        """/api/v2/alerts as parsed JSON (silenced and inhibited alerts included)."""
        return await self._call("GET", "/alerts")

    async def silences(self) -> Any:
        """/api/v2/silences as parsed JSON (expired ones included)."""
        return await self._call("GET", "/silences")

    async def silence(self, silence_id: str) -> Any | None:
        """One silence as parsed JSON, or None when Alertmanager does not know `silence_id`."""
        return await self._call("GET", f"/silence/{silence_id}", missing_ok=True)

    async def create(self, silence: dict[str, Any]) -> str:
        """POST a silence; its id. Refused when Alertmanager finds it invalid."""
        body = await self._call("POST", "/silences", json=silence)
        sid = body.get("silenceID") if isinstance(body, dict) else None
        if not isinstance(sid, str) or not sid:
            raise Unavailable(f"answer from {SERVICE} at {self.safe_url} has no silenceID")
        return sid

    async def expire(self, silence_id: str) -> bool:
        """Expire a silence; False when Alertmanager does not know it."""
        return await self._call("DELETE", f"/silence/{silence_id}", missing_ok=True) is not None

    # ------------------------------------------------------------------ plumbing

    async def _call(self, method: str, path: str, *, json: Any = None, missing_ok: bool = False) -> Any:
        if self._client is None:
            await self.start()
        assert self._client is not None
        timeout = self._cfg.timeout
        try:
            async with asyncio.timeout(timeout):
                got = await fetch(self._client, self._base + path, None, limit=self._cfg.max_response_bytes,
                                  server=self.safe_url, clean=self._clean, method=method, json=json,
                                  service=SERVICE)
        except TimeoutError:
            raise Unavailable(f"no answer from {SERVICE} at {self.safe_url} within {timeout:g} s") from None
        if isinstance(got, Failure):
            raise Unavailable(self._clean(got.message))
        if got.status == 404 and missing_ok:
            return None
        return self._decode(got, f"{method} {path.split('/')[1]}")

    def _decode(self, got: Answer, what: str) -> Any:
        where = f"HTTP {got.status} from {SERVICE} at {self.safe_url} ({what})"
        try:
            body = orjson.loads(got.body) if got.body else None
        except orjson.JSONDecodeError:
            excerpt = " ".join(self._clean(got.body[:BODY_EXCERPT * 4].decode("utf-8", "replace")).split())
            if 200 <= got.status < 300:
                raise Unavailable(f"{where}: not JSON: {safe_text(repr(excerpt[:BODY_EXCERPT]))}") from None
            body = excerpt[:BODY_EXCERPT]
        if 200 <= got.status < 300:
            return body if body is not None else {}
        reason = body if isinstance(body, str) else body.get("message") if isinstance(body, dict) else None
        text = f"{where}: {safe_text(self._clean(reason))}" if isinstance(reason, str) and reason else where
        if 400 <= got.status < 500 and got.status not in (401, 403, 407, 408, 429):
            raise Refused(text)
        raise Unavailable(text)

    def _clean(self, text: str) -> str:
        return self._secrets.scrub(text)
