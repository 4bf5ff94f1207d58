"""One bounded POST to a notification receiver, and Retry-After read as HTTP defines it.

Every channel (Slack today; PagerDuty and Alertmanager-style receivers later) posts through
`post_json`, so the bounds hold for all of them: one deadline from connect to the last byte read,
at most `MAX_BODY` bytes of any answer read, and a `Retry-After` that is either understood or
ignored, never an error.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

#: Bytes of an answer's body read at most (plus what one network read brings in): enough for any
#: error text worth quoting. The rest is never read, and the connection is closed, so an endless
#: body costs nothing.
MAX_BODY = 4096
#: Characters of an answer's body quoted in an error reason.
QUOTE = 100
#: Seconds: a longer Retry-After (delta or date) counts as this long, a date in the past as 0.
RETRY_AFTER_MAX = 3600.0
#: Ask for the body as is: a compressed one could expand a thousandfold inside a single read.
HEADERS = {"Accept-Encoding": "identity"}


@dataclass(frozen=True, slots=True)
class Answer:
    """A receiver's answer as far as it was read within the bounds."""

    status: int
    #: seconds the receiver asked to wait (`retry_after`); None when absent or not understood
    retry_after: float | None
    #: the start of the body (at most `MAX_BODY` bytes, decoded, whitespace collapsed); "" when encoded
    body: str
    #: why the body was not read to its end; "" when it was
    cut: str


async def post_json(client: httpx.AsyncClient, url: str, payload: Any, *, timeout: float) -> Answer:
    """POST `payload` as JSON; all within `timeout` seconds, connect to last byte.

    Raises TimeoutError when no status line came in time, and httpx.HTTPError for a transport
    failure before it. Once the status line is in, a late, broken or oversized body only cuts
    `Answer.body`: the status is the receiver's answer.
    """
    status: int | None = None
    wait: float | None = None
    encoded = False
    body = bytearray()
    cut = ""
    try:
        # One deadline for everything: httpx's own timeouts are per read, so a receiver sending a
        # byte every few seconds would never trip them.
        async with asyncio.timeout(timeout), client.stream("POST", url, json=payload, headers=HEADERS) as resp:
            status, wait = resp.status_code, retry_after(resp.headers.get("Retry-After"))
            encoded = resp.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
            async for chunk in resp.aiter_raw():
                body += chunk[: MAX_BODY - len(body)]
                if len(body) >= MAX_BODY:
                    cut = f"body cut at {MAX_BODY} bytes"
                    break  # leaving the block closes the connection: the rest is never read
    except TimeoutError:
        if status is None:
            raise
        cut = f"body not finished within {timeout:.3g} s"
    except httpx.HTTPError as exc:
        if status is None:
            raise
        cut = f"body broken off ({type(exc).__name__})"
    text = "" if encoded else " ".join(body.decode("utf-8", "replace").split())
    return Answer(status, wait, text, cut)


_DELTA = re.compile(r"[0-9]+")  # ASCII digits only: "²" and "١٢" are digits to str.isdigit, not to HTTP
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_MON = "(" + "|".join(_MONTHS) + ")"
_DAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_DAY_LONG = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_TIME = "([0-9]{2}):([0-9]{2}):([0-9]{2})"
# RFC 9110 section 5.6.7: IMF-fixdate, and the two obsolete forms recipients must still accept.
_IMF_FIXDATE = re.compile(rf"{_DAY}, ([0-9]{{2}}) {_MON} ([0-9]{{4}}) {_TIME} GMT")
_RFC850 = re.compile(rf"{_DAY_LONG}, ([0-9]{{2}})-{_MON}-([0-9]{{2}}) {_TIME} GMT")
_ASCTIME = re.compile(rf"{_DAY} {_MON} ([0-9 ][0-9]) {_TIME} ([0-9]{{4}})")


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (RFC 9110: delta-seconds or an HTTP-date), within
    [0, RETRY_AFTER_MAX]; None when absent or anything else (the caller then backs off as usual)."""
    if value is None:
        return None
    value = value.strip(" \t")  # OWS only: other white space is not HTTP's
    if _DELTA.fullmatch(value):
        # More than 9 digits is past the clamp anyway; int() of thousands of digits would raise.
        return RETRY_AFTER_MAX if len(value) > 9 else min(float(int(value)), RETRY_AFTER_MAX)
    now = time.time() if now is None else now
    when = _http_date(value, now)
    if when is None:
        return None
    return min(max(0.0, when - now), RETRY_AFTER_MAX)


def _http_date(value: str, now: float) -> float | None:
    """The POSIX time of an HTTP-date in any of its three forms; None for anything else."""
    if m := _IMF_FIXDATE.fullmatch(value):
        day, mon, year, hh, mm, ss = m.groups()
    elif m := _RFC850.fullmatch(value):
        day, mon, yy, hh, mm, ss = m.groups()
        # A two-digit year more than 50 years ahead is the latest past year with these digits.
        this_year = datetime.fromtimestamp(now, UTC).year
        ahead = (int(yy) - this_year) % 100
        year = str(this_year + ahead if ahead <= 50 else this_year + ahead - 100)
    elif m := _ASCTIME.fullmatch(value):
        mon, day, hh, mm, ss, year = m.groups()
    else:
        return None
    try:
        # A leap second (60) is taken as the second before it.
        return datetime(int(year), _MONTHS[mon], int(day), int(hh), int(mm), min(int(ss), 59),
                        tzinfo=UTC).timestamp()
    except ValueError:  # 31 February, hour 25, year 0
        return None
