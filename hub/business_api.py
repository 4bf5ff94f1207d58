"""GET /api/metrics/business?timeRange=1h|24h|7d|30d: the seed's endpoint, backed by BusinessSource."""

from __future__ import annotations

from aiohttp import web

from hub.sources.base import SourceError
from hub.sources.business import ALLOWED_RANGES, BusinessSource

#: the app's business source, or None when `sources.business.enabled` is false
BUSINESS_SOURCE_KEY: web.AppKey[BusinessSource | None] = web.AppKey("business_source", BusinessSource)
DEFAULT_TIME_RANGE = "24h"  # the seed's default for this endpoint (the tick uses sources.business.time_range)

_NO_STORE = {"Cache-Control": "no-store"}


async def business_handler(request: web.Request) -> web.Response:
    """200 with the metrics object; 400 {"error","allowed"} for a bad timeRange; 503 {"error"} when unavailable."""
    time_range = request.query.get("timeRange", DEFAULT_TIME_RANGE)
    if time_range not in ALLOWED_RANGES:
        return web.json_response({"error": f"invalid timeRange {time_range[:32]!r}", "allowed": list(ALLOWED_RANGES)},
                                 status=400, headers=_NO_STORE)
    source = request.config_dict.get(BUSINESS_SOURCE_KEY)
    if source is None:
        return web.json_response({"error": "business source is disabled (sources.business.enabled = false)"},
                                 status=503, headers=_NO_STORE)
    try:
        data = await source.metrics_for(time_range)
    except SourceError as exc:
        return web.json_response({"error": str(exc)}, status=503, headers=_NO_STORE)
    return web.json_response(data, headers=_NO_STORE)
