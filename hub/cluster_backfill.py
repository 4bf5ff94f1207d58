"""Backfill in cluster mode: the collector of a fresh snapshot stream fills the history from Prometheus
once, through Redis, and every replica serves it.

- When a replica becomes the collector (`RedisPublisher._start_leading`) and the stream is empty (a new
  or emptied Redis), it claims the backfill of that epoch (`SET {p}:backfill:<epoch>:claim NX`). A
  fail-over keeps the epoch and the stream, so a later collector never backfills again, nor does one
  that finds history in the stream.
- The claimant runs `hub.backfill.Backfill` (the same queries, bounds and `backfill_timeout`) in the
  background and writes its snapshots, the newest within `broadcast.history_max_bytes`, as one value
  `{p}:backfill:<epoch>` = `{"epoch", "items": [[timestamp, data], ...]}`, only while it holds the claim
  and the epoch is still the cluster's (so a fail-over meanwhile does not lose it, and a Redis emptied
  meanwhile does not get it).
- Every replica (edges too, the collector included) looks for that value of its feed's epoch every
  `POLL_S` until it has it, or `backfill_timeout` + `WAIT_SLACK_S` after it first saw the epoch, and
  puts it before its live snapshots (`Broadcaster.backfill`: those older than the first live one, within
  its budgets; no `seq`, `"backfill": true`, nothing moves `seq` or `epoch`).

Both keys expire once the stream could no longer hold snapshots that old (`history_size` x `interval`,
plus an hour). A value that is not what the collector writes is ignored, with a warning.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from hub.backfill import Backfill, Item
from hub.broadcast import Broadcaster
from hub.config import Config
from hub.redis_conn import connect
from hub.secrets import Secrets
from hub.tasks import honour_cancel
from hub.vocab import describe

log = logging.getLogger("hub.backfill")

POLL_S = 1.0
MiB = 1 << 20
WAIT_SLACK_S = 30.0
#: writes the value (KEYS[2]) only while the claim (KEYS[1]) is ARGV[1]'s and the epoch (KEYS[3]) is ARGV[4]
WRITE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[3]) ~= ARGV[4] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
"""


def backfill_keys(prefix: str, epoch: str) -> tuple[str, str]:
    """The value and claim keys of `epoch`'s backfill (same hash slot as the stream)."""
    return f"{{{prefix}}}:backfill:{epoch}", f"{{{prefix}}}:backfill:{epoch}:claim"


def encode_items(items: list[Item], epoch: str, max_bytes: int) -> tuple[bytes, int]:
    """The stored value: the newest items whose sections fit `max_bytes`, oldest first; and their count."""
    kept: list[list[Any]] = []
    total = 0
    for timestamp, data, sections in reversed(items):
        total += sum(map(len, sections.values()))
        if total > max_bytes:
            break
        kept.append([timestamp, data])
    kept.reverse()
    return orjson.dumps({"epoch": epoch, "items": kept}), len(kept)


def decode_items(raw: bytes, epoch: str, sections: set[str]) -> list[Item]:
    """The items of a stored value for `epoch`, with only the `sections` a snapshot has; ValueError when
    it is not what `encode_items` writes."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(value, dict) or value.get("epoch") != epoch or not isinstance(value.get("items"), list):
        raise ValueError("not a backfill of this epoch")
    out: list[Item] = []
    for item in value["items"]:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], dict)):
            raise ValueError("an item is not [timestamp, data]")
        if out and item[0] <= out[-1][0]:
            raise ValueError("items are not oldest first")
        data = {k: v for k, v in item[1].items() if k in sections}
        out.append((item[0], data, {k: orjson.dumps(v) for k, v in data.items()}))
    return out


class ClusterBackfill:
    """One replica's part: claim and fill as the collector of a fresh stream, serve what was filled."""

    def __init__(self, config: Config, *, publisher: Any, broadcaster: Broadcaster, secrets: Secrets,
                 collects: bool, business: object = None) -> None:
        c, b, prom = config.cluster, config.broadcast, config.sources.prometheus
        self.prefix = c.key_prefix
        self.publisher = publisher
        self.broadcaster = broadcaster
        self.secrets = secrets
        self.max_bytes = b.history_max_bytes
        self.ttl_ms = int((b.history_size * b.interval + 3600) * 1000)
        self.wait = prom.backfill_timeout + WAIT_SLACK_S
        self.filler = Backfill(prom, interval=b.interval, history_size=b.history_size, broadcaster=broadcaster,
                               secrets=secrets, sink=self._write, business=business) if collects else None
        self._r = connect(c.redis_url, name="hub-backfill", timeout=5.0)
        self._write_script = self._r.register_script(WRITE)
        #: the epoch this replica claimed and has yet to fill, and the one it fills
        self._claimed: str | None = None
        self._filling = ""
        self._epoch = ""   # the epoch looked for, since when, and whether it is settled
        self._since = 0.0
        self._settled = False
        if collects:
            publisher.on_fresh_stream = self.claim

    async def claim(self, r: Redis, epoch: str, stream: str) -> None:
        """As the new collector of `epoch`: claim its backfill when `stream` is empty. Never raises."""
        try:
            if await r.xlen(stream) == 0 and await r.set(backfill_keys(self.prefix, epoch)[1], self.publisher.replica,
                                                         nx=True, px=self.ttl_ms):
                log.info("backfill: the snapshot stream is new; filling it from Prometheus (epoch %s)", epoch)
                self._claimed = epoch
        except (RedisError, OSError) as exc:
            log.warning("backfill: cannot claim the backfill of a new stream: %s", self.secrets.scrub(describe(exc)))

    async def run(self) -> None:
        """Fill what this replica claimed; serve the backfill of its feed's epoch once it appears. Until cancelled."""
        try:
            while True:
                honour_cancel()
                try:
                    if self._claimed is not None and self.filler is not None:
                        self._filling, self._claimed = self._claimed, None
                        await self.filler.run()
                    await self._look()
                except (RedisError, OSError) as exc:  # the publisher reports Redis; this only retries
                    log.debug("backfill: Redis: %s", self.secrets.scrub(describe(exc)))
                await asyncio.sleep(POLL_S)
        finally:
            await self._r.aclose()

    async def _write(self, items: list[Item]) -> int:
        epoch = self._filling
        value, kept = encode_items(items, epoch, self.max_bytes)
        value_key, claim_key = backfill_keys(self.prefix, epoch)
        done = await self._write_script(keys=[claim_key, value_key, self.publisher.key_epoch],
                                        args=[self.publisher.replica, value, self.ttl_ms, epoch])
        if not done:
            log.warning("backfill: not stored, the cluster's epoch is no longer %s", epoch)
            return 0
        return kept

    async def _look(self) -> None:
        feed = self.broadcaster.feed
        epoch = feed.epoch if feed.latest is not None else ""
        if not epoch:
            return
        if epoch != self._epoch:
            self._epoch, self._since, self._settled = epoch, time.monotonic(), False
        if self._settled:
            return
        key = backfill_keys(self.prefix, epoch)[0]
        size = await self._r.strlen(key)
        if not size:
            self._settled = time.monotonic() - self._since > self.wait
            return
        self._settled = True
        if size > 2 * self.max_bytes + MiB:  # more than the collector writes: not its value
            log.warning("backfill: ignoring %s: %d bytes", key, size)
            return
        raw = await self._r.get(key)
        if raw is None:
            return
        sections = {s for secs in feed.source_sections.values() for s in secs}
        try:
            items = await asyncio.to_thread(decode_items, cast(bytes, raw), epoch, sections)
        except ValueError as exc:
            log.warning("backfill: ignoring %s: %s", key, exc)
            return
        kept = await self.broadcaster.backfill(items) if feed.epoch == epoch else 0
        log.info("backfill: %d of the collector's %d backfilled snapshots kept", kept, len(items))
