"""The one way the hub opens a Redis client, and drops its dead connections after an outage."""

from __future__ import annotations

import contextlib

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError


def connect(url: str, *, name: str, timeout: float, connect_timeout: float | None = None) -> Redis:
    """A client for `url` that fails fast: `timeout` s per call (`connect_timeout` to connect, default
    the same), raw bytes, and no retries inside redis-py (its caller owns retrying and reporting)."""
    return Redis.from_url(url, socket_timeout=timeout,
                          socket_connect_timeout=timeout if connect_timeout is None else connect_timeout,
                          retry=Retry(NoBackoff(), 0), decode_responses=False, client_name=name)


async def drop_idle(client: Redis) -> None:
    """Close `client`'s idle pooled connections: after a Redis restart every one of them is dead, and
    the next call would fail on each in turn instead of reconnecting. Never raises."""
    with contextlib.suppress(RedisError, OSError):
        await client.connection_pool.disconnect(inuse_connections=False)
