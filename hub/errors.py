"""JSON answers and errors for every HTTP endpoint, built one way."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response encoded with orjson."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json",
                        headers=headers)


def json_error(status: int, error: str, *, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    """A JSON error body {"error": ..., ...extra} with `status`."""
    return json_response({"error": error, **extra}, status=status, headers=headers)


class JSONHTTPError(web.HTTPException):
    """An HTTP error raised from deep inside a handler, answered as {"error": ...}."""

    def __init__(self, status: int, error: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        self.status_code = status
        super().__init__(text=orjson.dumps({"error": error, **extra}).decode(), content_type="application/json",
                         headers=headers)


def int_param(request: web.Request, name: str, *, default: int, lo: int, hi: int) -> int:
    """Query parameter `name` as an int in lo..hi, `default` when absent; 400 naming it otherwise."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise JSONHTTPError(400, f"query parameter {name!r} must be an integer, got {raw[:64]!r}") from None
    if not lo <= value <= hi:
        raise JSONHTTPError(400, f"query parameter {name!r} must be between {lo} and {hi}, got {value}")
    return value
