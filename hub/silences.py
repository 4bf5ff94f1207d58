"""POST /api/silences and DELETE /api/silences/{id}: silences in Alertmanager, set from the hub.

Who may: tokens with `actions = ["silence"]` and the `alerts` topic (`views.actor`). What is sent
is checked here first (`parse`), so bad input gets a 400 naming what is wrong and nothing reaches
Alertmanager; each silence created or expired is one audit line.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from hub.context import HUB, Hub
from hub.errors import JSONHTTPError, json_response
from hub.sources.alertmanager import AlertmanagerAPI, Refused, Unavailable
from hub.sources.alertmanager.shape import shape_silence
from hub.views import actor
from hub.vocab import iso_of, safe_text

MAX_COMMENT = 1024
MAX_MATCHERS = 64
MAX_TEXT = 1024  # a matcher's name or value, a fingerprint
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_BODY_KEYS = {"fingerprint", "matchers", "duration_s", "endsAt", "comment"}
_MATCHER_KEYS = {"name", "value", "isRegex", "isEqual"}
#: a label value no real alert has: a matcher that matches it (and the empty value) selects nothing in particular
_PROBE = "zq-hub-probe-" + uuid.uuid4().hex


class BadRequest(Exception):
    """What is wrong with a request body, in a sentence for the caller."""


@dataclass(frozen=True, slots=True)
class Wanted:
    """A checked request: a fingerprint or matchers, when it ends and why."""

    fingerprint: str | None
    matchers: list[dict[str, Any]] | None
    ends_at: dt.datetime
    comment: str


def parse(body: Any, *, max_seconds: float, now: dt.datetime) -> Wanted:
    """Check a POST /api/silences body; BadRequest naming the first thing wrong."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    if unknown := sorted(set(body) - _BODY_KEYS):
        raise BadRequest(f"unknown field(s) {', '.join(repr(safe_text(k, limit=40)) for k in unknown[:5])}; "
                         f"known: {', '.join(sorted(_BODY_KEYS))}")
    if ("fingerprint" in body) == ("matchers" in body):
        raise BadRequest('give exactly one of "fingerprint" and "matchers"')
    fingerprint = body.get("fingerprint")
    matchers = None
    if "fingerprint" in body:
        if not isinstance(fingerprint, str) or not fingerprint or len(fingerprint) > MAX_TEXT:
            raise BadRequest('"fingerprint" must be a non-empty string (an alert\'s fingerprint)')
    else:
        matchers = _matchers(body["matchers"])
    comment = body.get("comment")
    if not isinstance(comment, str) or not comment.strip():
        raise BadRequest('"comment" is required: say why (a non-empty string)')
    if len(comment) > MAX_COMMENT:
        raise BadRequest(f'"comment" is longer than {MAX_COMMENT} characters')
    return Wanted(fingerprint, matchers, _ends_at(body, max_seconds, now), comment.strip())


def _ends_at(body: dict[str, Any], max_seconds: float, now: dt.datetime) -> dt.datetime:
    limit = f"sources.alertmanager.max_silence_s, {max_seconds:g} s"
    if ("duration_s" in body) == ("endsAt" in body):
        raise BadRequest('give exactly one of "duration_s" (seconds) and "endsAt" (RFC 3339)')
    if "duration_s" in body:
        d = body["duration_s"]
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d):
            raise BadRequest('"duration_s" must be a number of seconds')
        if d <= 0:
            raise BadRequest(f'"duration_s" must be more than 0, got {d:g}')
        if d > max_seconds:
            raise BadRequest(f'"duration_s" {d:g} is longer than the longest silence allowed ({limit})')
        return now + dt.timedelta(seconds=d)
    raw = body["endsAt"]
    try:
        if not isinstance(raw, str) or len(raw) > 64:
            raise ValueError
        ends = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest('"endsAt" must be an RFC 3339 time such as 2026-11-27T08:00:00Z') from None
    if ends.tzinfo is None:
        raise BadRequest('"endsAt" must carry a time zone (Z or +01:00)')
    if ends <= now:
        raise BadRequest('"endsAt" is not in the future')
    if (ends - now).total_seconds() > max_seconds:
        raise BadRequest(f'"endsAt" is further away than the longest silence allowed ({limit})')
    return ends


def _matchers(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise BadRequest('"matchers" must be a non-empty list of {"name", "value", "isRegex", "isEqual"}')
    if len(raw) > MAX_MATCHERS:
        raise BadRequest(f'"matchers" holds more than {MAX_MATCHERS} matchers')
    out = []
    for i, m in enumerate(raw):
        where = f"matchers[{i}]"
        if not isinstance(m, dict) or set(m) - _MATCHER_KEYS or not {"name", "value", "isRegex"} <= set(m):
            raise BadRequest(f'{where} must be an object with "name", "value", "isRegex" and optionally "isEqual"')
        name, value, is_regex, is_equal = m["name"], m["value"], m["isRegex"], m.get("isEqual", True)
        if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name) or len(name) > MAX_TEXT:
            raise BadRequest(f"{where}.name must be a label name ([a-zA-Z_][a-zA-Z0-9_]*)")
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise BadRequest(f"{where}.value must be a string of at most {MAX_TEXT} characters")
        if not isinstance(is_regex, bool) or not isinstance(is_equal, bool):
            raise BadRequest(f"{where}.isRegex and .isEqual must be true or false")
        if is_regex:
            try:
                re.compile(value)
            except re.error as exc:
                raise BadRequest(f"{where}.value is not a valid regular expression ({exc})") from None
        out.append({"name": name, "value": value, "isRegex": is_regex, "isEqual": is_equal})
    if not any(_selective(m) for m in out):
        raise BadRequest("these matchers would match every alert: at least one must select something, e.g. "
                         '{"name": "alertname", "value": "<name>", "isRegex": false}')
    return out


def _selective(m: dict[str, Any]) -> bool:
    """False for a matcher that lets through an alert without the label and one with any value."""

    def hit(v: str) -> bool:
        # Alertmanager anchors regular expressions at both ends.
        matched = re.fullmatch(m["value"], v) is not None if m["isRegex"] else v == m["value"]
        return matched == m["isEqual"]

    return not (hit("") or hit(_PROBE))


def shown(matchers: list[dict[str, Any]]) -> list[str]:
    """Matchers as Alertmanager writes them: name="value", name!="value", name=~"re", name!~"re"."""
    ops = {(False, True): "=", (False, False): "!=", (True, True): "=~", (True, False): "!~"}
    return [f'{m["name"]}{ops[(m["isRegex"], m["isEqual"])]}{orjson.dumps(m["value"]).decode()}' for m in matchers]


# ------------------------------------------------------------------------------ handlers


def _api(hub: Hub) -> AlertmanagerAPI:
    if hub.alertmanager is None:
        raise JSONHTTPError(503, "the Alertmanager source is disabled in this hub's config "
                                 "([sources.alertmanager] enabled = false): silences cannot be set here")
    return hub.alertmanager


async def create(request: web.Request) -> web.Response:
    """POST /api/silences: 201 {"silenceID"}; 400 for bad input (nothing created), 503 without Alertmanager."""
    hub = request.app[HUB]
    who = await actor(request, "silence", "alerts")
    api = _api(hub)
    now = dt.datetime.now(dt.UTC)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise JSONHTTPError(400, f"the body is not valid JSON ({exc})") from None
    try:
        wanted = parse(body, max_seconds=hub.config.sources.alertmanager.max_silence_s, now=now)
    except BadRequest as exc:
        raise JSONHTTPError(400, str(exc)) from None
    try:
        matchers = wanted.matchers or await _matchers_of(api, wanted.fingerprint or "")
        sid = await api.create({"matchers": matchers, "startsAt": iso_of(now), "endsAt": iso_of(wanted.ends_at),
                                "createdBy": who.created_by, "comment": wanted.comment})
    except Refused as exc:
        raise JSONHTTPError(400, f"Alertmanager refused the silence: {exc}") from None
    except Unavailable as exc:
        raise JSONHTTPError(503, str(exc)) from None
    hub.audit.event("silence_created", request, remote=hub.client_address(request), name=who.name,
                    **who.person_fields(), silence_id=sid, fingerprint=wanted.fingerprint, matchers=shown(matchers),
                    until=iso_of(wanted.ends_at), comment=wanted.comment)
    return json_response({"silenceID": sid}, status=201)


async def _matchers_of(api: AlertmanagerAPI, fingerprint: str) -> list[dict[str, Any]]:
    """Equality matchers on every label of the alert Alertmanager now holds with `fingerprint`."""
    alerts = await api.alerts()
    for a in alerts if isinstance(alerts, list) else []:
        if isinstance(a, dict) and a.get("fingerprint") == fingerprint and isinstance(a.get("labels"), dict):
            return [{"name": k, "value": v, "isRegex": False, "isEqual": True}
                    for k, v in sorted(a["labels"].items()) if isinstance(v, str)]
    raise JSONHTTPError(400, f"unknown fingerprint {safe_text(fingerprint, limit=80)!r}: "
                             "Alertmanager holds no alert with it now")


async def expire(request: web.Request) -> web.Response:
    """DELETE /api/silences/{id}: expire an active or pending silence, whoever set it; 404 for another id."""
    hub = request.app[HUB]
    who = await actor(request, "silence", "alerts")
    api = _api(hub)
    raw = request.match_info["id"]
    missing = JSONHTTPError(404, f"no active or pending silence {safe_text(raw, limit=80)!r} in Alertmanager")
    try:
        sid = str(uuid.UUID(raw)) if len(raw) <= 64 else ""
    except ValueError:
        sid = ""
    if not sid:
        raise missing
    try:
        current = shape_silence(await api.silence(sid))
        if current is None or current["status"] not in ("active", "pending"):
            raise missing
        if not await api.expire(sid):
            raise missing
    except (Refused, Unavailable) as exc:
        raise JSONHTTPError(503, str(exc)) from None
    hub.audit.event("silence_expired", request, remote=hub.client_address(request), name=who.name,
                    **who.person_fields(), silence_id=sid, created_by=current["createdBy"],
                    matchers=shown(current["matchers"]), until=current["endsAt"], comment=current["comment"])
    return json_response({"silenceID": sid, "status": "expired"})
