"""One bounded GET against the Prometheus HTTP API: the parsed answer or a readable, capped `Failure`."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson

from hub.sources.http_errors import transport_reason
from hub.vocab import safe_text

#: Idle pooled connections are kept this long. Longer than the default tick (10 s) so each
#: tick reuses the previous tick's connections, shorter than common proxy idle limits (60 s).
KEEPALIVE_EXPIRY = 30.0


class HTTPSettings(Protocol):
    """The connection keys `[sources.prometheus]` and `[sources.alertmanager]` share."""

    @property
    def timeout(self) -> float: ...
    @property
    def bearer_token(self) -> str: ...
    @property
    def basic_auth_user(self) -> str: ...
    @property
    def basic_auth_password(self) -> str: ...
    @property
    def tls_verify(self) -> bool: ...
    @property
    def ca_file(self) -> str: ...


def http_client(cfg: HTTPSettings, *, connections: int, user_agent: str) -> httpx.AsyncClient:
    """A pooled client with `cfg`'s credentials and TLS settings; no redirects, no proxy from the environment."""
    headers = {"Accept": "application/json", "User-Agent": user_agent}
    auth: httpx.Auth | None = None
    if cfg.bearer_token:
        headers["Authorization"] = f"Bearer {cfg.bearer_token}"
    elif cfg.basic_auth_user:
        auth = httpx.BasicAuth(cfg.basic_auth_user, cfg.basic_auth_password)
    verify: ssl.SSLContext | bool
    if cfg.ca_file:
        verify = ssl.create_default_context(cafile=cfg.ca_file)
        if not cfg.tls_verify:
            verify.check_hostname = False
            verify.verify_mode = ssl.CERT_NONE
    else:
        verify = cfg.tls_verify
    return httpx.AsyncClient(
        headers=headers,
        auth=auth,
        verify=verify,
        # Per-read bound only; the whole collection is bounded by the scheduler's budget.
        timeout=httpx.Timeout(cfg.timeout),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections,
                            keepalive_expiry=KEEPALIVE_EXPIRY),
        follow_redirects=False,
        trust_env=False,  # HTTP(S)_PROXY from the environment would silently reroute requests
    )


#: How much of an unexpected (non-JSON) response body is quoted in an error message.
BODY_EXCERPT = 200


@dataclass(slots=True)
class Failure:
    """One request's readable failure message (already capped and free of secrets)."""

    message: str


def too_big(server: str, limit: int, declared: int | None = None, *, service: str = "Prometheus") -> str:
    """The message for an answer over `sources.<service>.max_response_bytes`."""
    size = f"declares {declared} bytes, more than" if declared is not None else "is larger than"
    advice = "aggregate the query (e.g. sum by (job) (...)) or raise the limit" if service == "Prometheus" \
        else "raise the limit"
    return (f"answer from {service} at {server} {size} sources.{service.lower()}.max_response_bytes "
            f"({limit} bytes); {advice}")


@dataclass(slots=True)
class Answer:
    """A whole answer as read, not yet parsed."""

    status: int
    content_type: str
    body: bytes


async def fetch(client: httpx.AsyncClient, url: str, params: dict[str, str] | None, *,
                limit: int, server: str, clean: Callable[[str], str], method: str = "GET",
                json: Any = None, service: str = "Prometheus") -> Answer | Failure:
    """`method` `url` (with a `json` body if given) reading at most `limit` decoded bytes; the raw
    answer, or a `Failure`.

    `service` and `server` name the dependency in messages (the limit's key is
    `sources.<service>.max_response_bytes`); `clean` scrubs secrets from the dependency's own text
    before it is capped (so a secret is never cut in half and left half-visible).
    """
    chunks: list[bytes] = []
    try:
        async with client.stream(method, url, params=params, json=json) as resp:
            declared = _declared_length(resp)
            if declared is not None and declared > limit:
                # refused before reading the body
                return Failure(too_big(server, limit, declared, service=service))
            total = 0
            # aiter_bytes yields decoded bytes, so a small gzip bomb is limited by what it expands to.
            async for chunk in resp.aiter_bytes():
                total += len(chunk)
                if total > limit:
                    # leaving the block closes the connection
                    return Failure(too_big(server, limit, service=service))
                chunks.append(chunk)
            return Answer(resp.status_code, resp.headers.get("content-type", "no content type"),
                          b"".join(chunks))
    except httpx.DecodingError as exc:
        return Failure(f"answer from {service} at {server} cannot be decoded: {safe_text(clean(str(exc)))}")
    except httpx.HTTPError as exc:
        return Failure(f"cannot reach {service} at {server}: {safe_text(clean(transport_reason(exc)))}")


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


