"""A stand-in for PagerDuty's Events API v2 (`POST /v2/enqueue`) over https: checks each event against
the Events v2 schema, records it, and answers as PagerDuty does (202, 400 for an invalid event) or
from a script (429 with Retry-After, 5xx): no real PagerDuty can be asked to rate-limit on cue, and
a test must not page anyone.
"""

from __future__ import annotations

import datetime as dt
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.http_targets import serve
from tests.support.tls import trusted_server_context

#: a routing key shaped like PagerDuty's (32 characters)
ROUTING_KEY = "R0UTINGk3yN0tRealPd0123456789abc"
PATH = "/v2/enqueue"

TOP_KEYS = {"routing_key", "event_action", "dedup_key", "payload", "images", "links", "client", "client_url"}
PAYLOAD_KEYS = {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"}
SEVERITIES = {"critical", "error", "warning", "info"}
ACTIONS = {"trigger", "acknowledge", "resolve"}


def schema_errors(event: Any) -> list[str]:
    """Why `event` is not a valid Events API v2 event ([] when it is)."""
    if not isinstance(event, dict):
        return ["the body must be a JSON object"]
    errors = [f"unknown field {k!r}" for k in sorted(set(event) - TOP_KEYS)]
    if not isinstance(event.get("routing_key"), str) or len(event["routing_key"]) != 32:
        errors.append("routing_key must be a 32-character string")
    action = event.get("event_action")
    if action not in ACTIONS:
        errors.append(f"event_action must be one of {sorted(ACTIONS)}")
    key = event.get("dedup_key")
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 255):
        errors.append("dedup_key must be a string of 1 to 255 characters")
    if action in ("acknowledge", "resolve") and key is None:
        errors.append(f"{action} needs a dedup_key")
    if action == "trigger":
        p = event.get("payload")
        if not isinstance(p, dict):
            return [*errors, "trigger needs a payload object"]
        errors += [f"unknown payload field {k!r}" for k in sorted(set(p) - PAYLOAD_KEYS)]
        if not isinstance(p.get("summary"), str) or not 0 < len(p["summary"]) <= 1024:
            errors.append("payload.summary must be a string of 1 to 1024 characters")
        if not isinstance(p.get("source"), str) or not p["source"]:
            errors.append("payload.source must be a non-empty string")
        if p.get("severity") not in SEVERITIES:
            errors.append(f"payload.severity must be one of {sorted(SEVERITIES)}")
        if "timestamp" in p:
            try:
                dt.datetime.fromisoformat(p["timestamp"])
            except (TypeError, ValueError):
                errors.append("payload.timestamp must be ISO 8601")
        for k in ("component", "group", "class"):
            if k in p and not isinstance(p[k], str):
                errors.append(f"payload.{k} must be a string")
        if "custom_details" in p and not isinstance(p["custom_details"], dict):
            errors.append("payload.custom_details must be an object")
    elif "payload" in event:
        errors.append(f"{action} takes no payload")
    return errors


@dataclass
class PagerDuty:
    """The Events API: answers from `script` (status, headers, body) first, then as PagerDuty would."""

    script: list[tuple[int, dict[str, str], str]] = field(default_factory=list)
    #: (monotonic, status, event) per request
    attempts: list[tuple[float, int, Any]] = field(default_factory=list)
    #: the schema errors of every event PagerDuty would refuse
    invalid: list[list[str]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        event = await request.json()
        errors = schema_errors(event)
        if self.script:
            status, headers, text = self.script.pop(0)
            self.attempts.append((time.monotonic(), status, event))
            return web.Response(status=status, headers=headers, text=text)
        if errors:
            self.invalid.append(errors)
            self.attempts.append((time.monotonic(), 400, event))
            return web.json_response({"status": "invalid event", "message": "Event object is invalid",
                                      "errors": errors}, status=400)
        self.attempts.append((time.monotonic(), 202, event))
        return web.json_response({"status": "success", "message": "Event processed",
                                  "dedup_key": event.get("dedup_key")}, status=202)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The events accepted, in arrival order."""
        return [e for _t, s, e in self.attempts if s == 202]

    def actions(self) -> list[tuple[str, str, str]]:
        """(event_action, component or "", dedup_key) of each accepted event."""
        return [(e["event_action"], (e.get("payload") or {}).get("component", ""), e["dedup_key"])
                for e in self.events]


@asynccontextmanager
async def pagerduty_receiver(*, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[PagerDuty]:
    """A PagerDuty stand-in over https on a free port; its `url` is the Events API URL.

    With no `ssl_context`, a certificate of the test process's private CA, which SSL_CERT_FILE trusts
    while the receiver runs (as `tests.support.slack.slack_receiver`).
    """
    pd = PagerDuty()
    app = web.Application()
    app.router.add_post(PATH, pd.handle)
    with trusted_server_context(ssl_context) as ctx:
        async with serve(app, ssl_context=ctx) as base:
            pd.url = base + PATH
            yield pd
