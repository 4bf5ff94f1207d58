"""Catching up with the snapshot stream on (re)connect: newest first, in small pages, only as far as needed.

A replica that reconnects after N new entries reads about N of them, not the whole stream: it stops
at the first entry its feed already holds, and never gathers much more than its feed's byte budget
(one stream of full snapshots can be hundreds of MB; one reply of it would be parsed on the loop).
Entries the replica does not accept (`hub.stream_check`) are skipped as if absent: a foreign entry
claiming a seq the feed holds (or the next one) cannot end the reading early and leave a gap.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from redis.asyncio import Redis

from hub.stream_check import StreamEntry, field_seq

#: judges a page of entries: for each, whether it may be delivered (`EntryCheck.accept`)
Accept = Callable[[Sequence[StreamEntry]], Awaitable[list[bool]]]

#: Entries per XREVRANGE page, at most: a few snapshots at a time, never the whole stream.
PAGE = 8


def went_back(newest: bytes, last: bytes) -> bool:
    """True when the stream's `newest` id is below `last`, the id a replica read last: the stream was
    started afresh (see `redis_scripts.PUBLISH`), and reading on after `last` would never return anything."""
    if not newest or last == b"0-0":
        return False
    return _id(newest) < _id(last)


def _id(entry_id: bytes) -> tuple[int, int]:
    ms, _, part = entry_id.partition(b"-")
    return int(ms), int(part or 0)


def entry_size(fields: dict[bytes, bytes]) -> int:
    """Bytes of a stream entry's data: its `size` field, or (an older hub's entry) the data's length."""
    try:
        return int(fields[b"size"])
    except (KeyError, ValueError):
        return len(fields.get(b"data") or b"")


async def read_back(r: Redis, key: str, *, epoch: str, seq: int, max_entries: int, max_bytes: int,
                    accept: Accept) -> tuple[bytes, list[StreamEntry], int]:
    """(newest id or b"0-0", the accepted entries a feed at (`epoch`, `seq`) lacks, newest first, their bytes).

    Stops at the first entry the feed holds (same epoch, seq not newer), after the entry right after the
    feed's (seq + 1, same epoch), or once `max_entries` or `max_bytes` are gathered (the entry reaching
    the byte bound is kept: at most one entry over). Pages are small and sized by what is left: the
    budget, and the seq gap to the feed. Each page is judged by `accept` first; entries it rejects are
    passed over as if absent (they are counted there).
    """
    mine = epoch.encode()
    newest: bytes = b"0-0"
    gathered: list[StreamEntry] = []
    total = 0
    upto: bytes = b"+"
    count = 1  # the first page shows how big entries are and how far behind the feed is
    while len(gathered) < max_entries and total < max_bytes:
        # decode_responses=False: ids and fields are bytes (redis-py types them loosely).
        page = cast("list[tuple[bytes, dict[bytes, bytes]]]", await r.xrevrange(key, max=upto, min="-", count=count))
        if not page:
            break
        if newest == b"0-0":
            newest = page[0][0]
        biggest, gap = 1, max_entries
        upto = b"(" + page[-1][0]
        for (entry_id, fields), ok in zip(page, await accept(page), strict=True):
            if not ok:
                continue
            n = field_seq(fields) if fields.get(b"epoch") == mine else None  # None: not of the feed's numbering
            if n is not None and n <= seq:
                return newest, gathered, total
            size = entry_size(fields)
            gathered.append((entry_id, fields))
            total, biggest = total + size, max(biggest, size)
            if n == seq + 1:  # the feed holds everything before this one
                return newest, gathered, total
            if len(gathered) >= max_entries or total >= max_bytes:
                break
            gap = n - seq - 1 if n is not None else max_entries
        count = max(1, min(PAGE, (max_bytes - total) // biggest, max_entries - len(gathered), gap))
    return newest, gathered, total
