"""Scale-out through Redis: one elected collector publishes each snapshot once; every replica fans out.

The keys and the Lua scripts that change them atomically are in `hub.redis_scripts`.

The leader collects on the monotonic grid and publishes through a script that checks, in one step,
that it still owns the lease, that the epoch is still the one it numbers in, and that the seq is
newer than `{p}:seq` (fencing: a paused ex-leader can never publish, and after Redis comes back
empty no seq is ever published twice within one epoch). Every replica, the leader included, reads
the stream and delivers what it reads, so all replicas serve the same seq stream. When Redis is
unreachable the replicas keep their clients and their history, report it, and reconnect with backoff.
On (re)connect a replica pages back through the stream, newest first, only as far as it must: to the
first entry its feed already holds, or its feed's entry and byte budgets.
Either way it delivers only the entries `hub.stream_check` accepts, and reports a feed silent for
`STALL_INTERVALS` intervals while Redis answers (`stalled`: /ready is 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets as _secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from hub.broadcast import Broadcaster
from hub.catchup import read_back, went_back
from hub.config import ClusterConfig
from hub.metrics import HubMetrics
from hub.publish import LocalPublisher, Publisher, new_epoch
from hub.redis_conn import connect, drop_idle
from hub.redis_scripts import CHECK, FLOOR, PUBLISH, RELEASE, RENEW, TOP, publish_keys, published_key, redis_keys
from hub.scheduler import Scheduler, run_every
from hub.secrets import Secrets, redact_url
from hub.stream_check import EntryCheck, StreamEntry
from hub.stream_format import FORMAT, StreamReader, layout
from hub.tasks import cancel_and_wait, honour_cancel
from hub.vocab import describe

log = logging.getLogger(__name__)

#: The lease lasts one interval (at least this long) and is renewed / contended every quarter of it,
#: so a dead leader is replaced within ~1.25 intervals plus one collection: inside two intervals.
MIN_LEASE = 0.25
POLL_FRACTION = 0.25
#: XREAD blocks at most this long, so a half-open connection is noticed within a few seconds.
BLOCK_MS = 2000
#: Reconnect backoff: first retry after BACKOFF_MIN, doubling up to BACKOFF_MAX, with jitter.
BACKOFF_MIN = 0.1
BACKOFF_MAX = 2.0
#: A replica that delivered nothing for this many intervals while Redis answers is `stalled`: a
#: fail-over pauses the feed at most ~2.25 intervals (docs/replicas.md), so this is not one.
STALL_INTERVALS = 3

class LeaseLost(Exception):
    """The lease now belongs to another replica (or expired), or the epoch changed: stop collecting."""


def replica_id() -> str:
    """A name unique to this process: host (the pod name in Kubernetes), pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{_secrets.token_hex(3)}"


class RedisPublisher(Publisher):
    """Leader election, publishing (leader only) and stream consumption for one hub replica."""

    def __init__(self, *, cfg: ClusterConfig, interval: float, history_size: int, role: str,
                 scheduler: Scheduler | None, broadcaster: Broadcaster, metrics: HubMetrics,
                 secrets: Secrets, replica: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(scheduler=scheduler, broadcaster=broadcaster, metrics=metrics)
        self.url = cfg.redis_url
        self.key_prefix = cfg.key_prefix
        self.interval = interval
        self.role = role
        self.secrets = secrets
        self.lease = max(interval, MIN_LEASE)
        self.poll = self.lease * POLL_FRACTION
        self.maxlen = cfg.stream_maxlen or history_size
        self.max_bytes = cfg.stream_max_bytes or broadcaster.feed.max_bytes
        self.key_lease, self.key_seq, self.key_epoch, self.key_stream = redis_keys(cfg.key_prefix)
        self.check = EntryCheck(stream=self.key_stream, key_seq=self.key_seq,
                                key_ids=published_key(cfg.key_prefix), metrics=metrics)
        self.reader = StreamReader(self.check)
        self.clock = clock
        #: since when this replica has delivered nothing while Redis answered (see `stalled`)
        self.quiet_since = clock()
        self.replica = replica or replica_id()
        self.collects = role == "all" and scheduler is not None
        self.leader = False
        self.redis_state = "connecting"
        self.error: str | None = None
        self._r: Redis | None = None
        self._reader: Redis | None = None
        self._lead_task: asyncio.Task[None] | None = None
        #: called as a new collector, before its first publish (hub.cluster_backfill); never raises
        self.on_fresh_stream: Callable[[Redis, str, str], Awaitable[None]] | None = None
        metrics.cluster_redis_up.set(0)
        metrics.cluster_leader.set(0)

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """What /ready reports: {"redis": "up"|"down"|"connecting", "role", "leader", "replica", "error"}."""
        return {"redis": self.redis_state, "role": self.role, "leader": self.leader,
                "replica": self.replica, "error": self.error}

    def degraded(self) -> bool:
        return self.redis_state != "up"

    def stalled(self) -> bool:
        """True when Redis answers, yet no snapshot reached the feed for STALL_INTERVALS intervals
        (counted from the last one, or from when Redis became reachable again)."""
        return (self.redis_state == "up" and self.broadcaster.feed.latest is not None
                and self.clock() - self.quiet_since > STALL_INTERVALS * self.interval)

    def _set_up(self) -> None:
        if self.redis_state != "up":
            log.info("cluster: Redis %s reachable", redact_url(self.url))
            self.quiet_since = self.clock()  # a feed paused by an outage gets its intervals afresh
        self.redis_state = "up"
        self.error = None
        self.metrics.cluster_redis_up.set(1)

    async def _set_down(self, exc: BaseException) -> None:
        for client in (self._r, self._reader):
            if client is not None:
                await drop_idle(client)
        error = self.secrets.scrub(describe(exc))
        if self.redis_state != "down" or error != self.error:
            # Once per outage (or per new reason), not once per retry.
            log.warning("cluster: Redis %s unreachable (%s); keeping %d clients, retrying",
                        redact_url(self.url), error, len(self.broadcaster.clients))
        self.redis_state = "down"
        self.error = error
        self.metrics.cluster_redis_up.set(0)

    # ------------------------------------------------------------------ lifecycle

    def _client(self, *, socket_timeout: float) -> Redis:
        # The loops below own retrying, backoff and reporting.
        return connect(self.url, name=f"hub-{self.role}", timeout=socket_timeout,
                       connect_timeout=min(max(self.lease / 2, 0.5), 5.0))

    async def run(self) -> None:
        """Consume the stream and, for role "all", contend for the lease; until cancelled."""
        log.info("cluster: replica %s (role %s) joining through Redis %s, key prefix %r",
                 self.replica, self.role, redact_url(self.url), self.key_prefix)
        self._r = self._client(socket_timeout=min(max(self.lease / 2, 0.5), 5.0))
        self._reader = self._client(socket_timeout=BLOCK_MS / 1000 + 3.0)
        self._publish = self._r.register_script(PUBLISH)
        self._renew = self._r.register_script(RENEW)
        self._release = self._r.register_script(RELEASE)
        self._floor = self._r.register_script(FLOOR)
        self._check = self._r.register_script(CHECK)
        self._top = self._r.register_script(TOP)
        tasks = [asyncio.create_task(self._consume(), name="hub-cluster-consume")]
        if self.collects:
            tasks.append(asyncio.create_task(self._contend(), name="hub-cluster-lease"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await self._stop_leading()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if self.collects:
                # Hand over at once on a graceful stop instead of letting the lease run out
                # (the script deletes the lease only if it is still ours).
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._release(keys=[self.key_lease], args=[self.replica])
            for client in (self._r, self._reader):
                with contextlib.suppress(RedisError, OSError):
                    await client.aclose()

    # ------------------------------------------------------------------ consuming

    async def _consume(self) -> None:
        """Load recent history from the stream, then deliver every new entry in order; reconnect on errors."""
        backoff = BACKOFF_MIN
        while True:
            honour_cancel()
            try:
                last_id = await self._sync()
                self._set_up()
                backoff = BACKOFF_MIN
                while True:
                    honour_cancel()
                    assert self._reader is not None
                    resp = cast("list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None",
                                await self._reader.xread({self.key_stream: last_id}, count=100, block=BLOCK_MS))
                    if not resp and went_back(await self._top(keys=[self.key_stream]), last_id):
                        log.warning("cluster: %s was started afresh below the last id read; reading it back",
                                    self.key_stream)
                        break
                    for _stream, entries in resp or ():
                        # Rejected entries are skipped, and reading goes on after them.
                        for (entry_id, fields), ok in zip(entries, await self._accept(entries), strict=True):
                            last_id = entry_id
                            if ok:
                                await self._deliver_raw(entry_id, fields)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                await self._set_down(exc)
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, BACKOFF_MAX)
            except Exception:  # a bug must not end consumption for the life of the process
                log.exception("cluster: consuming %s failed; retrying", self.key_stream)
                await asyncio.sleep(BACKOFF_MAX)

    async def _sync(self) -> bytes:
        """Raise `{p}:seq` to our highest seq, deliver the entries the feed lacks (within its entry and
        byte budgets, `hub.catchup`), oldest first; return the newest id."""
        assert self._r is not None
        feed = self.broadcaster.feed
        # If Redis came back empty, this keeps the next leader's seq above what our clients have seen.
        await self._floor(keys=[self.key_seq], args=[feed.seq])
        newest, gathered, total = await read_back(self._r, self.key_stream, epoch=feed.epoch, seq=feed.seq,
                                                  max_entries=feed.history_size, max_bytes=feed.max_bytes,
                                                  accept=self._accept)
        if gathered:
            log.info("cluster: read %d snapshots (%d bytes) from %s", len(gathered), total, self.key_stream)
        for entry_id, fields in reversed(gathered):
            await self._deliver_raw(entry_id, fields)
        return newest

    async def _accept(self, page: Sequence[StreamEntry]) -> list[bool]:
        return await self.check.accept(self._check, page)

    async def _deliver_raw(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        """Deliver an accepted entry (unless its data is not the snapshot its fields describe)."""
        parsed = self.reader.read(entry_id, fields)
        if parsed is None:
            return
        feed = self.broadcaster.feed
        before = feed.latest
        await self.deliver(*parsed)
        if feed.latest is not before:
            self.quiet_since = self.clock()
        if feed.latest is not None:
            self.ready = True

    # ------------------------------------------------------------------ leading

    def _set_leader(self, value: bool) -> None:
        if value != self.leader:
            log.info("cluster: replica %s %s the collector", self.replica, "is now" if value else "is no longer")
        self.leader = value
        self.metrics.cluster_leader.set(1 if value else 0)

    async def _contend(self) -> None:
        """Every `poll` seconds: renew the lease if we hold it, otherwise try to take it."""
        assert self._r is not None
        backoff = BACKOFF_MIN
        while True:
            honour_cancel()
            delay = self.poll
            try:
                if self.leader and self._lead_task is not None and not self._lead_task.done():
                    renewed = await self._renew(keys=[self.key_lease], args=[self.replica, self._lease_ms()])
                    if not renewed:
                        log.warning("cluster: lease %s lost to another replica", self.key_lease)
                        await self._stop_leading()
                else:
                    await self._stop_leading()
                    # RENEW covers a lease we still hold after our collector stopped on an error.
                    if (await self._r.set(self.key_lease, self.replica, nx=True, px=self._lease_ms())
                            or await self._renew(keys=[self.key_lease], args=[self.replica, self._lease_ms()])):
                        await self._start_leading()
                self._set_up()
                backoff = BACKOFF_MIN
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                await self._set_down(exc)
                # Without Redis we cannot prove we still own the lease: stop collecting now
                # (another replica may take over as soon as it expires).
                await self._stop_leading()
                delay = backoff * random.uniform(0.8, 1.2)
                backoff = min(backoff * 2, BACKOFF_MAX)
            except Exception:
                log.exception("cluster: lease handling failed; retrying")
                await self._stop_leading()
                delay = BACKOFF_MAX
            honour_cancel()
            await asyncio.sleep(delay)

    def _lease_ms(self) -> int:
        return max(1, int(self.lease * 1000))

    async def _start_leading(self) -> None:
        assert self._r is not None
        # The epoch we number in: the stored one, or a new one when Redis has none (new or emptied).
        # With a new epoch, a seq another replica served before the loss can be reused without
        # clients confusing the two snapshots.
        await self._r.set(self.key_epoch, new_epoch(), nx=True)
        self.epoch = (cast("bytes | None", await self._r.get(self.key_epoch)) or b"").decode()
        # Raise the stored seq to ours first (FLOOR), then number after the highest: `stored` covers
        # a publish whose reply was lost, our feed a Redis that came back empty.
        stored = int(await self._floor(keys=[self.key_seq], args=[self.broadcaster.feed.seq]))
        self.seq = max(stored, self.broadcaster.feed.seq)
        if self.on_fresh_stream is not None:
            await self.on_fresh_stream(self._r, self.epoch, self.key_stream)
        self._set_leader(True)
        self._lead_task = asyncio.create_task(self._lead(), name="hub-cluster-lead")

    async def _stop_leading(self) -> None:
        task, self._lead_task = self._lead_task, None
        if task is not None:
            # Not `suppress(CancelledError)`: that would also swallow a cancellation of the caller
            # (the lease loop, at shutdown) that lands while it waits here, and it would run on forever.
            await cancel_and_wait([task])
        self._set_leader(False)

    async def _lead(self) -> None:
        """Collect now, then every interval on the monotonic grid, publishing each snapshot once."""
        try:
            await run_every(self.interval, self._lead_tick)
        except LeaseLost:
            log.warning("cluster: lease %s or epoch no longer ours; stopped collecting", self.key_lease)
        except (RedisError, OSError) as exc:
            await self._set_down(exc)
        except Exception as exc:
            self.tick_failed(exc)
        finally:
            self._set_leader(False)

    async def _lead_tick(self) -> None:
        assert self.scheduler is not None
        collected = await self.scheduler.collect()
        try:
            for _attempt in range(2):
                entry = LocalPublisher.number(collected, self.seq + 1, self.epoch)
                # hub.stream_format: the snapshot JSON (format 1's `data`) plus where its pieces lie
                data, index = layout(entry, collected.data)
                code, value = await self._publish(
                    keys=publish_keys(self.key_prefix),
                    args=[self.replica, self._lease_ms(), entry.seq, data, self.maxlen, self.epoch,
                          self.max_bytes, FORMAT, index])
                if code == 1:
                    self.seq = entry.seq
                    self.tick_ok()
                    return
                if code in (0, -2):
                    raise LeaseLost
                # Redis holds a higher seq (a replica that saw more raised the floor): continue after it.
                self.seq = int(value)
            log.warning("cluster: could not place a snapshot after the stored seq %s; skipped", self.seq)
        finally:
            honour_cancel()  # after the bookkeeping: a snapshot published is counted even then
