"""HTTP handlers muting health checks: POST /api/mutes and DELETE /api/mutes/{id}.

Both need a token with the `silence` action and the `health` topic (`views.actor`), work on any
replica (mutes go straight to the state store) and write exactly one audit line when they change
something. The collector shows the mutes in `data.health.mutes` at its next tick.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Collection
from typing import Any

import orjson
from aiohttp import web

from hub.auth import Principal
from hub.context import HUB
from hub.errors import JSONHTTPError, json_error, json_response
from hub.sources.health_mutes import MAX_COMMENT, Mute, MuteBook, TooManyMutes
from hub.state import StoreUnavailable
from hub.views import actor
from hub.vocab import utc_iso

#: the health source's mutes; absent when `[sources.health] enabled = false`
MUTES = web.AppKey("mutes", MuteBook)

FIELDS = ("check", "duration_s", "until", "comment")
_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})")


def parse_rfc3339(text: str) -> float:
    """An RFC 3339 date-time with its offset, as epoch seconds; ValueError otherwise."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError("not an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micro = int((m.group(7) or "0")[:6].ljust(6, "0"))
    off = m.group(8)
    tz = dt.UTC if off in ("Z", "z") else dt.timezone(
        (1 if off[0] == "+" else -1) * dt.timedelta(hours=int(off[1:3]), minutes=int(off[4:6])))
    return dt.datetime(year, month, day, hour, minute, min(second, 59), micro, tzinfo=tz).timestamp()


def parse_mute(body: Any, *, checks: Collection[str], max_mute_s: float, now: float) -> tuple[str, float, str]:
    """(check, until, comment) from a POST /api/mutes body; ValueError naming the field otherwise."""
    if not isinstance(body, dict):
        raise ValueError('the body must be a JSON object {"check", "duration_s" | "until", "comment"}')
    unknown = [k for k in body if k not in FIELDS]
    if unknown:
        raise ValueError(f"unknown field {str(unknown[0])[:64]!r}; allowed: {list(FIELDS)}")
    check = body.get("check")
    if not isinstance(check, str):
        raise ValueError("'check' must be a string naming a check of sources.health.checks")
    if check not in checks:
        raise ValueError(f"'check': unknown check {check[:64]!r}; known: {sorted(checks)}")
    if ("duration_s" in body) == ("until" in body):
        raise ValueError("give exactly one of 'duration_s' and 'until'")
    if "duration_s" in body:
        d = body["duration_s"]
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d):
            raise ValueError("'duration_s' must be a number of seconds")
        if d <= 0:
            raise ValueError(f"'duration_s' must be more than 0, got {d:g}")
        if d > max_mute_s:
            raise ValueError(f"'duration_s' must be at most {max_mute_s:g} (sources.health.max_mute_s), got {d:g}")
        until = now + d
    else:
        u = body["until"]
        if not isinstance(u, str):
            raise ValueError("'until' must be an RFC 3339 date-time string, e.g. \"2026-01-01T08:00:00Z\"")
        try:
            until = parse_rfc3339(u)
        except (ValueError, OverflowError):
            raise ValueError(f"'until' is not an RFC 3339 date-time with an offset: {u[:64]!r}") from None
        if until <= now:
            raise ValueError(f"'until' is in the past: {u[:64]!r}")
        if until - now > max_mute_s:
            raise ValueError(f"'until' is more than {max_mute_s:g} s from now (sources.health.max_mute_s)")
    comment = body.get("comment")
    if not isinstance(comment, str):
        raise ValueError("'comment' must be a string saying why")
    comment = comment.strip()
    if not comment:
        raise ValueError("'comment' must not be empty: say why the check is muted")
    if len(comment) > MAX_COMMENT:
        raise ValueError(f"'comment' must be at most {MAX_COMMENT} characters")
    return check, until, comment


def _book(request: web.Request) -> MuteBook:
    book = request.app.get(MUTES)
    if book is None:
        raise JSONHTTPError(503, "the health source is disabled in this hub's config: there is nothing to mute")
    return book


def _audit(request: web.Request, event: str, who: Principal, mute: Mute) -> None:
    hub = request.app[HUB]
    hub.audit.event(event, request, remote=hub.client_address(request), name=who.name, **who.person_fields(),
                    mute_id=mute.id,
                    check=mute.check, until=utc_iso(mute.until), comment=mute.comment)


async def create(request: web.Request) -> web.Response:
    """POST /api/mutes: 201 {"muteID"}; 400 naming the field (nothing created); 401/403; 409 too many; 503."""
    who = await actor(request, "silence", "health")
    book = _book(request)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return json_error(400, f"the body is not valid JSON: {exc}"[:200])
    try:
        check, until, comment = parse_mute(body, checks=book.checks, max_mute_s=book.max_mute_s, now=book.clock())
    except ValueError as exc:
        return json_error(400, str(exc))
    try:
        mute = await book.create(check, until, created_by=who.created_by, comment=comment)
    except TooManyMutes as exc:
        return json_error(409, str(exc))
    except StoreUnavailable as exc:
        return json_error(503, f"the state store is unavailable: {exc}")
    _audit(request, "mute_created", who, mute)
    return json_response({"muteID": mute.id}, status=201)


async def end(request: web.Request) -> web.Response:
    """DELETE /api/mutes/{id}: 200 {"muteID", "ended": true}; 404 unknown id; 401/403; 503."""
    who = await actor(request, "silence", "health")
    book = _book(request)
    mute_id = request.match_info["id"]
    try:
        mute = await book.end(mute_id)
    except StoreUnavailable as exc:
        return json_error(503, f"the state store is unavailable: {exc}")
    if mute is None:
        return json_error(404, f"no active mute {mute_id[:64]!r}")
    _audit(request, "mute_ended", who, mute)
    return json_response({"muteID": mute.id, "ended": True})
