"""One bounded GET against the Prometheus HTTP API: the parsed answer or a readable, capped `Failure`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from hub.sources.http_errors import transport_reason
from hub.vocab import safe_text

#: How much of an unexpected (non-JSON) response body is quoted in an error message.
BODY_EXCERPT = 200


@dataclass(slots=True)
class Failure:
    """One request's readable failure message (already capped and free of secrets)."""

    message: str


def too_big(server: str, limit: int, declared: int | None = None) -> str:
    """The message for an answer over `sources.prometheus.max_response_bytes`."""
    size = f"declares {declared} bytes, more than" if declared is not None else "is larger than"
    return (f"answer from Prometheus at {server} {size} sources.prometheus.max_response_bytes "
            f"({limit} bytes); aggregate the query (e.g. sum by (job) (...)) or raise the limit")


@dataclass(slots=True)
class Answer:
    """A whole answer as read, not yet parsed."""

    status: int
    content_type: str
    body: bytes


async def fetch(client: httpx.AsyncClient, url: str, params: dict[str, str] | None, *,
                limit: int, server: str, clean: Callable[[str], str]) -> Answer | Failure:
    """GET `url` reading at most `limit` decoded bytes; the raw answer, or a `Failure`.

    `server` names Prometheus in messages; `clean` scrubs secrets from the dependency's own text
    before it is capped (so a secret is never cut in half and left half-visible).
    """
    chunks: list[bytes] = []
    try:
        async with client.stream("GET", url, params=params) as resp:
            declared = _declared_length(resp)
            if declared is not None and declared > limit:
                return Failure(too_big(server, limit, declared))  # refused before reading the body
            total = 0
            # aiter_bytes yields decoded bytes, so a small gzip bomb is limited by what it expands to.
            async for chunk in resp.aiter_bytes():
                total += len(chunk)
                if total > limit:
                    return Failure(too_big(server, limit))  # leaving the block closes the connection
                chunks.append(chunk)
            return Answer(resp.status_code, resp.headers.get("content-type", "no content type"),
                          b"".join(chunks))
    except httpx.DecodingError as exc:
        return Failure(f"answer from Prometheus at {server} cannot be decoded: {safe_text(clean(str(exc)))}")
    except httpx.HTTPError as exc:
        return Failure(f"cannot reach Prometheus at {server}: {safe_text(clean(transport_reason(exc)))}")


#: how far past the excerpt secrets are looked for, so one cut by the excerpt is still removed whole
SECRET_SLACK = 4096


def decode(answer: Answer, *, server: str, clean: Callable[[str], str]) -> dict[str, Any] | Failure:
    """The success body of a Prometheus API answer, or a `Failure` quoting Prometheus's own (capped) words."""

    def quote(text: str) -> str:
        return safe_text(clean(text))

    where = f"HTTP {answer.status} from Prometheus at {server}"
    ctype = quote(answer.content_type)
    try:
        # orjson refuses what JSON cannot carry (NaN, Infinity, lone surrogates, nesting beyond
        # 1024) and reads integers beyond 64 bits as floats, so what it returns always re-encodes
        # except for nesting beyond orjson's write limit, which shape.py never passes on.
        body = orjson.loads(answer.body)
    except orjson.JSONDecodeError as exc:
        if "json" in ctype:
            return Failure(f"{where}: answer is not valid JSON ({quote(str(exc))})")
        # Secrets are removed from a longer prefix before the cut (a credential straddling the cut
        # would otherwise survive in part) and before repr() (which would escape it past matching).
        head = clean(answer.body[:BODY_EXCERPT + SECRET_SLACK].decode("utf-8", "replace"))
        excerpt = " ".join(head.split())[:BODY_EXCERPT]
        return Failure(f"{where}: not a Prometheus API answer ({ctype}): {safe_text(repr(excerpt))}")
    if not isinstance(body, dict):
        return Failure(f"{where}: not a Prometheus API answer (JSON {type(body).__name__})")
    if body.get("status") == "success" and answer.status == 200:
        return body
    if body.get("status") == "error":
        # Prometheus's own words, e.g. "bad_data: 1:5: parse error: unexpected <op:*>"
        kind, error = body.get("errorType", "error"), body.get("error", "")
        kind = quote(kind) if isinstance(kind, str) else "error"
        error = quote(error) if isinstance(error, str) else "(error text is not text)"
        return Failure(f"{where}: {kind}: {error}")
    return Failure(f"{where}: not a Prometheus API answer (no status field)")


def _declared_length(resp: httpx.Response) -> int | None:
    """Content-Length when it is the size of what will be read (no content coding), else None."""
    if resp.headers.get("content-encoding", "identity").lower() not in ("", "identity"):
        return None
    try:
        return int(resp.headers["content-length"])
    except (KeyError, ValueError):
        return None


