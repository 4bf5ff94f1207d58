"""The Redis snapshot stream against a real redis-server: bounded in bytes, and read back in pages.

Redis's own counters (`INFO stats` total_net_output_bytes, reset with `CONFIG RESETSTAT`) measure
what a replica reads, so the tests need no hook inside the hub.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from hub.app import create_app
from hub.context import HUB
from hub.sources.base import Source, SourceResult
from tests.support.aio import wait_for
from tests.support.cluster import Collector, snapshot
from tests.support.redis import RedisServer, redis_server  # noqa: F401

STREAM, BYTES = "{hub}:snapshots", "{hub}:snapshots:bytes"
KB = 1000


def cluster_config(make_config: Callable[..., Any], url: str, **over: Any) -> Any:
    return make_config({"cluster": {"redis_url": url, **over.pop("cluster", {})}, **over})


async def stream_data(r: Redis) -> list[dict[bytes, bytes]]:
    return [fields for _id, fields in await r.xrange(STREAM)]


async def output_bytes(r: Redis) -> int:
    """Bytes Redis sent to all its clients since the last CONFIG RESETSTAT."""
    return int((await r.info("stats"))["total_net_output_bytes"])


class Padding(Source):
    """A source whose section is `size()` bytes: large snapshots without a large Prometheus."""

    name = "padding"
    sections = ("padding",)

    def __init__(self, size: Callable[[], int]) -> None:
        self.size = size

    async def collect(self, budget: float) -> SourceResult:
        return SourceResult(data={"padding": "p" * self.size()})


# ----------------------------------------------------------------------------- bounded in bytes


async def test_the_stream_keeps_its_data_within_stream_max_bytes(redis_server: RedisServer, aiohttp_client,
                                                                make_config) -> None:
    # Snapshots of 20..60 KB; 200 KB allowed: the byte bound, not stream_maxlen (1000), trims.
    sizes = iter([20, 60, 35, 50, 25, 60, 45, 30] * 10)
    conf = cluster_config(make_config, redis_server.url, broadcast={"interval": 0.1},
                          cluster={"stream_max_bytes": 200 * KB, "stream_maxlen": 1000})
    app = create_app(conf, extra_sources=[Padding(lambda: next(sizes) * KB)])
    await aiohttp_client(app)
    st = app[HUB]
    r = Redis.from_url(redis_server.url)
    try:
        for target in (5, 12, 20, 30):
            await wait_for(lambda: st.feed.seq >= target, timeout=10, what=f"seq {target}")
            entries = await stream_data(r)
            data = [len(f[b"data"]) for f in entries]
            assert sum(data) <= 200 * KB, (target, data)
            # Nothing trimmed that fitted: the next older entry (at most ~61 KB) would have broken the bound.
            assert target < 8 or sum(data) + 61 * KB > 200 * KB, (target, data)
            assert int(await r.get(BYTES)) == sum(data), "the byte counter matches the stream"
            assert all(int(f[b"size"]) == len(f[b"data"]) for f in entries)
            seqs = [int(f[b"seq"]) for f in entries]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and seqs[-1] >= target
        assert len(data) < 8 < 30 <= st.feed.seq, data
        epoch = (await r.get("{hub}:epoch")).decode()
        assert {f[b"epoch"].decode() for f in entries} == {epoch}
    finally:
        await r.aclose()


async def test_entries_of_an_older_hub_and_a_missing_counter_are_estimated(redis_server: RedisServer,
                                                                           make_config) -> None:
    # A stream written by an older hub: no `size` or `epoch` fields, no byte counter; 400 KB in it.
    r = Redis.from_url(redis_server.url)
    try:
        for seq in range(1, 21):
            await r.xadd(STREAM, {"seq": seq, "replica": "old", "data": snapshot(seq, "", 20 * KB)})
        await r.set("{hub}:seq", 20)
        c = await Collector(r).lead()
        c.seq = 20
        await c.publish(10 * KB, max_bytes=100 * KB)
        data = [len(f[b"data"]) for f in await stream_data(r)]
        # Re-estimated from the newest entries, older ones counted by their data: within the bound.
        assert sum(data) <= 100 * KB and int(await r.get(BYTES)) == sum(data) > 0
        assert len(data) == 1 + (100 * KB - data[-1]) // data[0], data  # as many as fit, no fewer
        # The counter stays right from here on, and a lost counter is estimated again.
        for _ in range(5):
            await c.publish(30 * KB, max_bytes=100 * KB)
        for lost in (r.delete(BYTES), r.set(BYTES, "garbage")):
            await lost
            await c.publish(30 * KB, max_bytes=100 * KB)
            data = [len(f[b"data"]) for f in await stream_data(r)]
            assert sum(data) <= 100 * KB and int(await r.get(BYTES)) == sum(data)
        # One entry over the bound alone is kept (never the newest is trimmed), and counted exactly.
        await c.publish(150 * KB, max_bytes=100 * KB)
        data = [len(f[b"data"]) for f in await stream_data(r)]
        assert len(data) == 1 and int(await r.get(BYTES)) == data[0] > 100 * KB
    finally:
        await r.aclose()


# ----------------------------------------------------------------------------- reading back


async def test_a_reconnect_reads_only_the_entries_it_missed(redis_server: RedisServer, aiohttp_client,
                                                            make_config) -> None:
    admin = Redis.from_url(redis_server.url)
    await admin.execute_command("ACL", "SETUSER", "edge", "on", ">edge-pass", "~*", "&*", "+@all")
    edge_url = f"redis://edge:edge-pass@127.0.0.1:{redis_server.port}/0"
    c = await Collector(admin).lead()
    try:
        for _ in range(40):
            await c.publish(20 * KB)
        app = create_app(cluster_config(make_config, edge_url, broadcast={"history_size": 100}), role="edge")
        await aiohttp_client(app)
        st = app[HUB]
        await wait_for(lambda: st.feed.seq == 40, what="the edge's first sync")

        # Cut the edge off: its user disabled and its connections dropped, every reconnect fails.
        await admin.execute_command("ACL", "SETUSER", "edge", "off")
        await admin.execute_command("CLIENT", "KILL", "USER", "edge")
        await wait_for(lambda: st.publisher.redis_state == "down", what="the edge to see Redis down")
        for _ in range(3):
            await c.publish(20 * KB)
        await admin.config_resetstat()
        await admin.execute_command("ACL", "SETUSER", "edge", "on")
        await wait_for(lambda: st.feed.seq == 43, timeout=10, what="the edge to catch up")
        read = await output_bytes(admin)
    finally:
        await admin.aclose()
    assert [e.seq for e in st.feed.history] == list(range(1, 44))
    # The three missed entries (60 KB) and a few hundred bytes of replies; the whole stream is 860 KB.
    assert 60 * KB < read < 70 * KB, read


async def test_a_first_sync_reads_about_the_feeds_byte_budget(redis_server: RedisServer, aiohttp_client,
                                                              make_config) -> None:
    admin = Redis.from_url(redis_server.url)
    c = await Collector(admin).lead()
    try:
        for _ in range(40):
            await c.publish(20 * KB)  # 800 KB in the stream
        await admin.config_resetstat()
        conf = cluster_config(make_config, redis_server.url,
                              broadcast={"history_size": 100, "history_max_bytes": 100 * KB})
        app = create_app(conf, role="edge")
        await aiohttp_client(app)
        st = app[HUB]
        await wait_for(lambda: st.feed.seq == 40, what="the edge's first sync")
        read = await output_bytes(admin)
    finally:
        await admin.aclose()
    # Entries up to the 100 KB budget (the one reaching it included), never the 800 KB stream.
    assert 100 * KB <= read < 130 * KB, read
    assert [e.seq for e in st.feed.history][-1] == 40
