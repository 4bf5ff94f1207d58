"""Bearer-token access control: named tokens stored as sha256 hashes, compared in constant time."""

from __future__ import annotations

import collections
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
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
    """Who is asking: a token name or a signed-in person's name (None when auth is off), the topics it
    may see (None: all) and the actions it may take (hub.vocab.ACTIONS; none in open mode).

    A person (signed in through [auth.oidc]) also has a `sub`, an email, groups, the session's CSRF
    value and the store key of the session (`session`, "" for tokens).
    """

    name: str | None
    topics: tuple[str, ...] | None
    actions: tuple[str, ...] = ()
    sub: str = ""
    email: str = ""
    groups: tuple[str, ...] = ()
    csrf: str = ""
    session: str = ""

    def may_read(self, topic: str) -> bool:
        """True when this principal may see `topic`."""
        return self.topics is None or topic in self.topics

    @property
    def person(self) -> bool:
        """True for a signed-in person (a session cookie), False for a token or open mode."""
        return bool(self.session)

    @property
    def created_by(self) -> str:
        """How this principal signs what it creates: "Name <email>" for a person, the token name otherwise."""
        if self.person and self.email:
            return f"{self.name} <{self.email}>"
        return self.name or ""

    def person_fields(self) -> dict[str, str]:
        """{"sub", "email"} of a person, to add beside a `name` field; empty for a token."""
        return {"sub": self.sub, "email": self.email} if self.person else {}

    def audit(self) -> dict[str, str | None]:
        """The audit fields naming this principal: the person (sub, name, email), or the token name."""
        if self.person:
            return {"sub": self.sub, "name": self.name, "email": self.email}
        return {"token": self.name}


ANONYMOUS = Principal(name=None, topics=None)


class AuthError(Exception):
    """Missing or wrong token; the message is safe to show (it never holds the token)."""


def presented_token(request: web.BaseRequest) -> str | None:
    """The token the request carries: Authorization: Bearer, or a 'bearer.' WebSocket subprotocol."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    for proto in offered_protocols(request):
        if proto.lower().startswith(BEARER_PROTOCOL_PREFIX) and len(proto) > len(BEARER_PROTOCOL_PREFIX):
            return proto[len(BEARER_PROTOCOL_PREFIX):]
    return None


def offered_protocols(request: web.BaseRequest) -> list[str]:
    """The WebSocket subprotocols the client offered, in order."""
    return [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]


def bearer_protocol_ok(request: web.BaseRequest) -> bool:
    """False when a bearer subprotocol (any case) is offered without hub.v1.

    aiohttp logs the client's whole subprotocol list at WARNING when none matches ours, which would
    put the token into the hub's log; such a request is refused before aiohttp sees it.
    """
    offered = offered_protocols(request)
    return SUBPROTOCOL in offered or not any(p.lower().startswith(BEARER_PROTOCOL_PREFIX) for p in offered)


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

    def check(self, request: web.BaseRequest) -> Principal:
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
        return Principal(name=match.name, topics=match.topics or None, actions=match.actions)


#: at most this many addresses are tracked; beyond it the oldest window is forgotten
MAX_TRACKED = 100_000
WINDOW = 60.0


class AuthFailures:
    """Failed authentications per client address, in fixed one-minute windows.

    After `per_minute` failures (0: never) an address is refused (429) until its window ends. Only the first
    failure of a window is audited on its own; the rest are reported once, as a count, when the
    window ends, so brute force can neither guess quickly nor flood the audit log.
    """

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        # address -> [window start, failures, refusals]; ordered oldest window first
        self._windows: collections.OrderedDict[str, list[float]] = collections.OrderedDict()

    def blocked(self, ip: str) -> bool:
        """True while `ip` has used up its failures for the current window."""
        w = self._windows.get(ip)
        if w is None or self.clock() - w[0] >= WINDOW:
            return False
        if self.per_minute and w[1] >= self.per_minute:
            w[2] += 1
            return True
        return False

    def record(self, ip: str) -> int:
        """Count one failure for `ip`; return its number within the current window (1: the first)."""
        now = self.clock()
        w = self._windows.get(ip)
        if w is None or now - w[0] >= WINDOW:
            w = self._windows[ip] = [now, 0, 0]
            self._windows.move_to_end(ip)
            while len(self._windows) > MAX_TRACKED:
                self._windows.popitem(last=False)
        w[1] += 1
        return int(w[1])

    def retry_after(self, ip: str) -> int:
        """Seconds until `ip`'s window ends."""
        w = self._windows.get(ip)
        return max(1, int(WINDOW - (self.clock() - w[0])) + 1) if w else 1

    def sweep(self) -> list[tuple[str, int, int]]:
        """Forget ended windows; return (address, failures, refusals) of those with repeats to report."""
        now = self.clock()
        out: list[tuple[str, int, int]] = []
        while self._windows:
            ip, w = next(iter(self._windows.items()))
            if now - w[0] < WINDOW:
                break
            del self._windows[ip]
            if w[1] > 1 or w[2]:
                out.append((ip, int(w[1]), int(w[2])))
        return out
