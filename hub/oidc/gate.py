"""Sessions as credentials: the cookie, the person's rights from their groups, and the sockets of ended sessions.

`Oidc` is what the rest of the hub sees of sign-in: `principal()` for a request carrying the
session cookie, `track()` for a WebSocket opened with it, and `sweep()`, run once per broadcast
interval, which closes (1008) every socket whose session was logged out or expired, on whichever
replica it lives: the store is shared in cluster mode.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from hub.admission import Network, is_https
from hub.auth import AuthError, Principal
from hub.client import Client, CloseReason
from hub.config.auth_schema import OidcConfig, OidcRoleConfig
from hub.oidc.client import OidcClient
from hub.oidc.sessions import Session, SessionStore, StoreError, digest
from hub.vocab import TOPICS

log = logging.getLogger(__name__)

COOKIE = "hub_session"
SECURE_COOKIE = "__Host-hub_session"
CSRF_HEADER = "X-Hub-CSRF"
POLICY_VIOLATION = 1008


class StoreDown(Exception):
    """The session store cannot answer (Redis down): 503, not 401."""


Rights = tuple[tuple[str, ...] | None, tuple[str, ...]]


def rights(roles: Mapping[str, OidcRoleConfig], groups: Iterable[str]) -> Rights | None:
    """(topics or None for all, actions) granted by the mapped groups among `groups`; None when none is mapped.

    Several groups give the union: a group with no topics listed grants all of them.
    """
    mapped = [roles[g] for g in groups if g in roles]
    if not mapped:
        return None
    topics: tuple[str, ...] | None
    if any(not r.topics for r in mapped):
        topics = None
    else:
        wanted = {t for r in mapped for t in r.topics}
        topics = tuple(t for t in TOPICS if t in wanted)
    wanted_actions = {a for r in mapped for a in r.actions}
    return topics, tuple(sorted(wanted_actions))


def groups_of(claims: Mapping[str, Any], claim: str) -> tuple[str, ...]:
    """The person's groups from `claim` (a list of strings, or one string); others are ignored."""
    value = claims.get(claim)
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def person_principal(s: Session, key: str) -> Principal:
    """The Principal of session `s` (stored under `key`)."""
    return Principal(name=s.name, topics=s.topics, actions=s.actions, sub=s.sub, email=s.email, groups=s.groups,
                     csrf=s.csrf, session=key)


class Oidc:
    """Sign-in as the hub sees it: the provider client, the session store and the tracked sockets."""

    def __init__(self, cfg: OidcConfig, *, client: OidcClient, store: SessionStore,
                 trusted_proxies: tuple[Network, ...], clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.client = client
        self.store = store
        self.trusted_proxies = trusted_proxies
        self.clock = clock
        self._sockets: dict[Client, str] = {}

    # ------------------------------------------------------------------ cookie

    def https(self, request: web.BaseRequest) -> bool:
        """Whether `request` came over https (directly, or through a trusted proxy)."""
        return is_https(request, self.trusted_proxies)

    def cookie_name(self, request: web.BaseRequest) -> str:
        """`__Host-hub_session` over https (Secure, host-only, path /), `hub_session` otherwise."""
        return SECURE_COOKIE if self.https(request) else COOKIE

    def session_id(self, request: web.BaseRequest) -> str | None:
        """The session id the request's cookie carries, if any."""
        value = request.cookies.get(self.cookie_name(request))
        return value if value else None

    def set_cookie(self, request: web.BaseRequest, response: web.StreamResponse, sid: str, max_age: float) -> None:
        """Set the session cookie: HttpOnly, SameSite=Lax, Path=/, Secure with the __Host- prefix over https."""
        https = self.https(request)
        response.set_cookie(self.cookie_name(request), sid, max_age=max(1, int(max_age)), path="/", httponly=True,
                            samesite="Lax", secure=https)
        # A hint the page's script can read (the session cookie it cannot): "ask /api/me". Holds no secret.
        response.set_cookie(self._hint_name(https), "1", max_age=max(1, int(max_age)), path="/", samesite="Lax",
                            secure=https)

    def clear_cookie(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        """Remove the session cookie (and its hint) from the browser."""
        https = self.https(request)
        response.del_cookie(self.cookie_name(request), path="/", secure=https, httponly=True, samesite="Lax")
        response.del_cookie(self._hint_name(https), path="/", secure=https, samesite="Lax")

    @staticmethod
    def _hint_name(https: bool) -> str:
        return "__Host-hub_person" if https else "hub_person"

    # ------------------------------------------------------------------ sessions

    async def create(self, claims: Mapping[str, Any], *, id_token: str, csrf: str, sid: str) -> Session | None:
        """Store a session for the person in `claims`; None (nothing stored) when no group of theirs is mapped."""
        groups = groups_of(claims, self.cfg.roles_claim)
        granted = rights(self.cfg.roles, groups)
        if granted is None:
            return None
        now = self.clock()
        # No longer than session_ttl, and no longer than the provider allows (the ID token's exp).
        exp = claims.get("exp")
        expires = min(now + self.cfg.session_ttl, float(exp) if isinstance(exp, (int, float)) else now + 1)
        name = str(claims.get("name") or claims.get("preferred_username") or claims.get("email") or claims["sub"])
        session = Session(sub=str(claims["sub"]), name=name[:200], email=str(claims.get("email") or "")[:200],
                          groups=groups[:100], topics=granted[0], actions=granted[1], csrf=csrf, expires=expires,
                          id_token=id_token)
        await self._call(self.store.put("session:" + digest(sid), session.to_json(), expires - now))
        return session

    async def principal(self, request: web.BaseRequest) -> Principal:
        """The signed-in person of the request's cookie; AuthError when it names no live session."""
        sid = self.session_id(request)
        if sid is None:
            raise AuthError("not signed in")
        key = "session:" + digest(sid)
        raw = await self._call(self.store.get(key))
        session = Session.from_json(raw) if raw is not None else None
        if session is None or session.expires <= self.clock():
            raise AuthError("session ended or unknown; sign in again")
        return person_principal(session, key)

    async def signed_in(self, request: web.BaseRequest) -> bool:
        """True when the request's cookie names a live session (False too when the store cannot tell)."""
        try:
            await self.principal(request)
        except (AuthError, StoreDown):
            return False
        return True

    async def end(self, request: web.BaseRequest) -> Session | None:
        """Delete the request's session (logout); return what it was."""
        sid = self.session_id(request)
        if sid is None:
            return None
        key = "session:" + digest(sid)
        raw = await self._call(self.store.take(key))
        return Session.from_json(raw) if raw is not None else None

    async def _call(self, op: Any) -> Any:
        try:
            return await op
        except StoreError as exc:
            raise StoreDown(str(exc)) from None

    # ------------------------------------------------------------------ sockets

    def track(self, client: Client, session_key: str) -> None:
        """Watch `client`, opened with the session stored under `session_key`."""
        self._sockets[client] = session_key

    def untrack(self, client: Client) -> None:
        """Stop watching `client` (it disconnected)."""
        self._sockets.pop(client, None)

    async def sweep(self, evict: Callable[[Client], None]) -> int:
        """Call `evict` for every tracked socket whose session ended; return how many."""
        if not self._sockets:
            return 0
        clients = list(self._sockets)
        keys = [self._sockets[c] for c in clients]
        try:
            alive = await self.store.alive(keys)
        except StoreError as exc:  # cannot tell: keep the sockets, try again next interval
            log.warning("oidc: cannot check sessions of open sockets: %s", exc)
            return 0
        ended = [c for c, ok in zip(clients, alive, strict=True) if not ok]
        for c in ended:
            self._sockets.pop(c, None)
            evict(c)
        return len(ended)

    async def run_sweeps(self, interval: float, evict: Callable[[Client], None]) -> None:
        """Sweep every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep(evict)
            except Exception:  # a bug here must not end the sweeping
                log.exception("oidc: session sweep failed")


OIDC = web.AppKey("oidc", Oidc)


def evictor(broadcaster: Any) -> Callable[[Client], None]:
    """Close a client of an ended session with 1008 through the broadcaster's bounded close."""

    def evict(client: Client) -> None:
        broadcaster.evict(client, code=POLICY_VIOLATION, reason=CloseReason.SESSION_ENDED, message=b"session ended")

    return evict
