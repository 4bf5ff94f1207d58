"""Audit log: connects, disconnects, auth failures and policy violations as JSON lines.

Records are handed to a queue and written by a listener thread, so a slow disk never stalls the
event loop; the logger is private to the instance and released with it.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
from typing import Any

import orjson
from aiohttp import web

from hub.config import ConfigError
from hub.vocab import utc_iso


class Audit:
    """Writes one JSON object per line to stderr or `path`; never token values or message bodies."""

    def __init__(self, *, path: str = "") -> None:
        try:
            handler: logging.Handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
        except OSError as exc:  # a config problem: report it like one, not as a traceback
            raise ConfigError(f"audit.path: cannot open {path!r} for appending: {exc.strerror}") from None
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._handler = handler
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        # Not from logging.getLogger: a registered logger lives for the whole process.
        self._log = logging.Logger("hub.audit", logging.INFO)
        self._log.addHandler(logging.handlers.QueueHandler(self._queue))
        self._listener = logging.handlers.QueueListener(self._queue, handler)
        self._listener.start()

    def event(self, event: str, request: web.BaseRequest | None = None, *, remote: str | None = None,
              **fields: Any) -> None:
        """Record `event` with the client address (`remote`, else the peer), origin and user agent."""
        rec: dict[str, Any] = {"time": utc_iso(), "event": event}
        if request is not None:
            rec["remote"] = remote or request.remote
            rec["origin"] = request.headers.get("Origin")
            rec["user_agent"] = request.headers.get("User-Agent")
        elif remote is not None:
            rec["remote"] = remote
        rec.update(fields)
        self._log.info("%s", orjson.dumps(rec, default=str).decode())

    def close(self) -> None:
        """Write what is queued, then close the file."""
        self._listener.stop()
        self._handler.close()
