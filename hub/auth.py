"""Bearer-token access control: named tokens stored as sha256 hashes, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from aiohttp import web

from hub.config import TokenConfig

#: subprotocol the page offers; the token rides beside it as "bearer.<token>" so it never
#: appears in a URL, and so never in an access log
SUBPROTOCOL = "hub.v1"
BEARER_PROTOCOL_PREFIX = "bearer."


def hash_token(token: str) -> str:
    """The config form of `token`: 'sha256:<hex>'."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits, URL- and header-safe)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a token name (None when auth is off) and the topics it may see (None: all)."""

    name: str | None
    topics: tuple[str, ...] | None


ANONYMOUS = Principal(name=None, topics=None)


class AuthError(Exception):
    """Missing or wrong token; the message is safe to show (it never holds the token)."""


def presented_token(request: web.Request) -> str | None:
    """The token the request carries: Authorization: Bearer, or a 'bearer.' WebSocket subprotocol."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(BEARER_PROTOCOL_PREFIX) and len(proto) > len(BEARER_PROTOCOL_PREFIX):
            return proto[len(BEARER_PROTOCOL_PREFIX):]
    return None


class Authenticator:
    """Checks presented tokens against the configured ones."""

    def __init__(self, tokens: tuple[TokenConfig, ...]) -> None:
        self._entries: list[tuple[bytes, TokenConfig]] = []
        for tok in tokens:
            if tok.hash.startswith("sha256:"):
                digest = bytes.fromhex(tok.hash[7:])
            else:  # plaintext (check-config warns); hash it so every comparison is alike
                digest = hashlib.sha256(tok.hash.encode()).digest()
            self._entries.append((digest, tok))

    @property
    def enabled(self) -> bool:
        """True when any token is configured."""
        return bool(self._entries)

    def check(self, request: web.Request) -> Principal:
        """The request's principal, or AuthError when a token is required and not valid."""
        if not self._entries:
            return ANONYMOUS
        token = presented_token(request)
        if token is None:
            raise AuthError("missing token")
        digest = hashlib.sha256(token.encode()).digest()
        match: TokenConfig | None = None
        # Compare against every entry, without an early exit, so timing reveals nothing.
        for expected, tok in self._entries:
            if hmac.compare_digest(digest, expected) and match is None:
                match = tok
        if match is None:
            raise AuthError("invalid token")
        return Principal(name=match.name, topics=match.topics or None)
