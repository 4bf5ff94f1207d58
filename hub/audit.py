"""Audit log: connects, disconnects, auth failures and policy violations as JSON lines."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
from aiohttp import web

from hub.config import ConfigError
from hub.scheduler import utc_iso


class Audit:
    """Writes one JSON object per line to stderr or `path`; never token values or message bodies."""

    def __init__(self, *, path: str = "", name: str = "hub.audit") -> None:
        self._log = logging.getLogger(f"{name}.{id(self)}")
        self._log.propagate = False
        self._log.setLevel(logging.INFO)
        try:
            handler: logging.Handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
        except OSError as exc:  # a config problem: report it like one, not as a traceback
            raise ConfigError(f"audit.path: cannot open {path!r} for appending: {exc.strerror}") from None
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._handler = handler
        self._log.addHandler(handler)

    def event(self, event: str, request: web.BaseRequest | None = None, **fields: Any) -> None:
        """Record `event` with the request's remote address, origin and user agent."""
        rec: dict[str, Any] = {"time": utc_iso(), "event": event}
        if request is not None:
            rec["remote"] = request.remote
            rec["origin"] = request.headers.get("Origin")
            rec["user_agent"] = request.headers.get("User-Agent")
        rec.update(fields)
        self._log.info("%s", orjson.dumps(rec).decode())

    def close(self) -> None:
        """Flush and close the handler."""
        self._log.removeHandler(self._handler)
        self._handler.close()
