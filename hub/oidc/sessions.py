"""Server-side sign-in sessions and pending logins: in memory, or in Redis in cluster mode.

The browser holds only a random session id; the store keys everything by the id's sha256, so
neither a Redis dump nor a log line holds a usable cookie. A session ends when it is deleted
(logout) or when its expiry passes, on every replica at once in Redis.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError

from hub.redis_conn import connect, drop_idle
from hub.secrets import Secrets
from hub.vocab import describe

#: pending logins (state -> nonce, verifier) live this long: the time a person has to sign in at the IdP
LOGIN_TTL = 600.0
#: at most this many pending logins are kept in memory; beyond it the oldest is forgotten
MAX_PENDING = 10_000
TIMEOUT = 1.0


class StoreError(Exception):
    """The session store (Redis) failed; the message holds no URL and no password."""


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in person: who (sub, name, email, groups), what they may do, the CSRF value, when it ends."""

    sub: str
    name: str
    email: str
    groups: tuple[str, ...]
    topics: tuple[str, ...] | None
    actions: tuple[str, ...]
    csrf: str
    expires: float  # epoch seconds
    id_token: str = ""  # the logout hint for the provider's end_session_endpoint

    def to_json(self) -> bytes:
        """The stored form."""
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> Session | None:
        """The session in `raw`, or None when it is not one (an old or foreign value)."""
        try:
            d = orjson.loads(raw)
            return cls(sub=str(d["sub"]), name=str(d["name"]), email=str(d["email"]),
                       groups=tuple(map(str, d["groups"])),
                       topics=None if d["topics"] is None else tuple(map(str, d["topics"])),
                       actions=tuple(map(str, d["actions"])), csrf=str(d["csrf"]), expires=float(d["expires"]),
                       id_token=str(d.get("id_token", "")))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def digest(secret: str) -> str:
    """The store key part for a session id or login state."""
    return hashlib.sha256(secret.encode()).hexdigest()


class SessionStore:
    """Memory: sessions and pending logins of this process only (a single hub).

    Keys are "<kind>:<digest>"; pending logins ("login:") are bounded (MAX_PENDING, the oldest
    forgotten), since anyone may start one; sessions exist only after a sign-in at the IdP.
    """

    kind = "memory"

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._logins: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._sessions: dict[str, tuple[float, bytes]] = {}
        self._next_sweep = 0.0

    def _map(self, key: str) -> dict[str, tuple[float, bytes]]:
        return self._logins if key.startswith("login:") else self._sessions

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        """Keep `value` under `key` for `ttl` seconds."""
        now = self._clock()
        self._map(key)[key] = (now + ttl, value)
        while len(self._logins) > MAX_PENDING:
            self._logins.popitem(last=False)
        if now >= self._next_sweep:  # expired entries go at most once a minute, not on every put
            self._next_sweep = now + 60.0
            for m in (self._logins, self._sessions):
                for k in [k for k, (exp, _) in m.items() if exp <= now]:
                    del m[k]

    async def get(self, key: str) -> bytes | None:
        """The value under `key`, None when absent or expired."""
        item = self._map(key).get(key)
        return item[1] if item is not None and item[0] > self._clock() else None

    async def take(self, key: str) -> bytes | None:
        """Get and delete in one step: a pending login is used once."""
        item = self._map(key).pop(key, None)
        return item[1] if item is not None and item[0] > self._clock() else None

    async def delete(self, key: str) -> None:
        """Forget `key`."""
        self._map(key).pop(key, None)

    async def alive(self, keys: Sequence[str]) -> list[bool]:
        """Whether each key still holds an unexpired value."""
        now = self._clock()
        return [(item := self._map(k).get(k)) is not None and item[0] > now for k in keys]

    async def close(self) -> None:
        """Nothing to release."""


class RedisSessionStore(SessionStore):
    """Redis: `{prefix}:oidc:<kind>:<sha256>` keys with a TTL, shared by every replica."""

    kind = "redis"

    def __init__(self, url: str, *, key_prefix: str, secrets: Secrets) -> None:
        super().__init__()
        self._prefix = f"{key_prefix}:oidc:"
        self._secrets = secrets
        self._r = connect(url, name="hub-oidc", timeout=TIMEOUT)

    async def _failed(self, exc: BaseException) -> StoreError:
        await drop_idle(self._r)
        return StoreError(f"session store (Redis): {self._secrets.scrub(describe(exc))}")

    async def _run(self, fn: Callable[[], Any]) -> Any:
        try:
            return await fn()
        except (RedisError, OSError, TimeoutError) as exc:
            raise await self._failed(exc) from None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._run(lambda: self._r.set(self._prefix + key, value, px=max(1, int(ttl * 1000))))

    async def get(self, key: str) -> bytes | None:
        value = await self._run(lambda: self._r.get(self._prefix + key))
        return value if isinstance(value, bytes) else None

    async def take(self, key: str) -> bytes | None:
        value = await self._run(lambda: self._r.getdel(self._prefix + key))
        return value if isinstance(value, bytes) else None

    async def delete(self, key: str) -> None:
        await self._run(lambda: self._r.delete(self._prefix + key))

    async def alive(self, keys: Sequence[str]) -> list[bool]:
        if not keys:
            return []

        async def check() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for k in keys:
                pipe.exists(self._prefix + k)
            return list(await pipe.execute())

        return [bool(n) for n in await self._run(check)]

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._r.aclose()
