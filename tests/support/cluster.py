"""The test as a hub cluster's collector: it holds the lease and publishes through the hub's own script."""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from hub.feed import Entry
from hub.redis_scripts import PUBLISH, publish_keys
from hub.stream_format import FORMAT, layout


def snapshot(seq: int, epoch: str, pad: int = 0, data: dict[str, Any] | None = None) -> bytes:
    """A metrics_update of about `pad` bytes (or with `data`), as a collector publishes it."""
    return orjson.dumps({"type": "metrics_update", "seq": seq, "epoch": epoch,
                         "timestamp": "2026-01-01T00:00:00.000Z",
                         "data": data if data is not None else {"pad": "x" * pad}, "sources": {}})


class Collector:
    """Holds `{prefix}:leader` as "test-collector" and publishes with `PUBLISH`, as a leader does."""

    def __init__(self, r: Redis, epoch: str = "test-epoch", prefix: str = "hub") -> None:
        self.r, self.epoch, self.prefix, self.seq = r, epoch, prefix, 0
        self.script = r.register_script(PUBLISH)

    async def lead(self) -> Collector:
        await self.r.set(f"{{{self.prefix}}}:leader", "test-collector")
        await self.r.set(f"{{{self.prefix}}}:epoch", self.epoch)
        return self

    async def publish(self, pad: int = 100, *, maxlen: int = 1000, max_bytes: int = 1 << 30,
                      data: dict[str, Any] | None = None, indexed: bool = False) -> bytes:
        """Publish the next seq (format 1, as the previous hub version; `indexed`: this version's
        format, `hub.stream_format`); returns its stream id."""
        self.seq += 1
        snap = snapshot(self.seq, self.epoch, pad, data)
        extra: list[Any] = []
        if indexed:
            parsed = orjson.loads(snap)
            entry = Entry(seq=self.seq, epoch=self.epoch, timestamp=parsed["timestamp"],
                          sections={k: orjson.dumps(v) for k, v in parsed["data"].items()}, sources={})
            snap, index = layout(entry, parsed["data"])
            extra = [FORMAT, index]
        code, value = await self.script(keys=publish_keys(self.prefix),
                                        args=["test-collector", 60_000, self.seq, snap, maxlen, self.epoch,
                                              max_bytes, *extra])
        assert code == 1, (code, value)
        return bytes(value)
