"""The state store of a hub cluster: a hash per scope and a `SET NX EX` key per ledger entry, in Redis.

Every replica reads and writes the same keys (`hub.redis_scripts`: `{p}:state:<scope>`,
`{p}:ledger:<key>`), so a collector elected after a failover continues where the last one stopped.
The store has its own small client (no retries inside redis-py: the caller retries at its next
collection); its errors name no URL and no password.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

import orjson
from redis.exceptions import RedisError

from hub.redis_conn import connect, drop_idle
from hub.redis_scripts import ledger_key, state_key
from hub.secrets import Secrets
from hub.state.base import LEDGER_TTL, Store, StoreUnavailable
from hub.vocab import describe

log = logging.getLogger(__name__)

#: Seconds one command (or connecting) may take: well inside a collection's budget.
TIMEOUT = 1.0


class RedisStore(Store):
    """States in `{prefix}:state:<scope>` hashes; ledger entries `{prefix}:ledger:<key>` kept LEDGER_TTL seconds."""

    kind = "redis"

    def __init__(self, url: str, *, key_prefix: str, secrets: Secrets) -> None:
        self.key_prefix = key_prefix
        self._secrets = secrets
        self._r = connect(url, name="hub-state", timeout=TIMEOUT)

    async def _failed(self, exc: BaseException) -> StoreUnavailable:
        await drop_idle(self._r)
        return StoreUnavailable(f"Redis: {self._secrets.scrub(describe(exc))}")

    async def load(self, scope: str) -> dict[str, dict[str, Any]]:
        try:
            raw = cast("dict[bytes, bytes]", await self._r.hgetall(state_key(self.key_prefix, scope)))
        except (RedisError, OSError, TimeoutError) as exc:
            raise await self._failed(exc) from None
        out: dict[str, dict[str, Any]] = {}
        for name, value in raw.items():
            try:
                state = orjson.loads(value)
            except orjson.JSONDecodeError:
                state = None
            if isinstance(state, dict):
                out[name.decode(errors="replace")] = state
            else:
                log.warning("state: skipping an unreadable %s state in Redis", scope)
        return out

    async def save(self, scope: str, states: Mapping[str, Mapping[str, Any]]) -> None:
        if not states:
            return
        try:
            await self._r.hset(state_key(self.key_prefix, scope),
                               mapping={k: orjson.dumps(dict(v)) for k, v in states.items()})
        except (RedisError, OSError, TimeoutError) as exc:
            raise await self._failed(exc) from None

    async def claim(self, key: str) -> bool:
        try:
            return bool(await self._r.set(ledger_key(self.key_prefix, key), b"1", nx=True, ex=LEDGER_TTL))
        except (RedisError, OSError, TimeoutError) as exc:
            raise await self._failed(exc) from None

    async def delete(self, scope: str, names: Sequence[str]) -> int:
        if not names:
            return 0
        try:
            return int(await self._r.hdel(state_key(self.key_prefix, scope), *names))
        except (RedisError, OSError, TimeoutError) as exc:
            raise await self._failed(exc) from None

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._r.aclose()
