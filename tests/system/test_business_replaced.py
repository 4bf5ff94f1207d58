"""A collection replaced under the watched name (renamed into it, or dropped and created again) rebuilds
every kept hour by the next call, with change streams and without, on a real SecantusDB.

SecantusDB sends no change event to the watched name when a collection is renamed into it while the
name is free (over an existing collection it sends that one's `drop`); MongoDB sends `rename` and
`invalidate` (see tests/unit/test_business_events.py). What catches it here is the collection's identity
(its UUID from listCollections), checked at every call that reads kept hours.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient, monitoring

from hub.sources.business import BusinessSource
from tests.support.mongo import MongoServer, mongo_server_fn  # noqa: F401
from tests.system.test_business_buckets import differences, oracle
from tests.system.test_business_source import ms, source_for

UTC = dt.UTC


def docs(n: int, *, specialty: str, hours: tuple[float, float] = (2, 20)) -> list[dict[str, Any]]:
    """`n` appointments spread over closed hours `hours` ago (what the kept hours hold)."""
    now = dt.datetime.now(UTC)
    lo, hi = hours
    return [{"createdAt": ms(now - dt.timedelta(hours=lo + (hi - lo) * i / max(n - 1, 1))), "status": "booked",
             "doctor": {"specialty": specialty}} for i in range(n)]


async def warm(src: BusinessSource) -> dict[str, Any]:
    """Hours kept for 24h: the answer now comes from them."""
    await src.metrics_for("24h")
    await src.filled()
    got = await src.metrics_for("24h")
    assert len(src.store) >= 23
    return got


async def exact(src: BusinessSource, coll: Any) -> dict[str, Any]:
    got = await src.metrics_for("24h")
    assert differences(got, await oracle(coll, src.cfg.fields, got)) == []
    return got


async def replace_by_rename_then_by_drop(src: BusinessSource, server: MongoServer, *, streams: bool) -> None:
    """The reproduction: `appointments` (1 appointment) is moved aside, and `appts_old` (50) renamed
    into its place; later the collection is dropped and created again."""
    async with AsyncMongoClient(server.uri) as client:
        db = client.get_default_database()
        await db.appointments.insert_many(docs(1, specialty="cardiology"))
        await db.appts_old.insert_many(docs(50, specialty="restored"))
        await db.appts_old.create_index([("createdAt", 1)])
        assert (await warm(src))["appointments"]["total"] == 1
        await db.appointments.rename("appts_prev")  # the stream says so (rename): rebuilt
        assert (await exact(src, db.appointments))["appointments"]["total"] == 0
        await warm(src)
        replaced = src.changes.replaced_total
        # Nothing on the stream says this one (SecantusDB), and nothing at all without a stream. Before:
        # the kept hours' total (0 here, 1 in the issue) against a real 50, status ok, for as long as
        # nothing else changed.
        await db.appts_old.rename("appointments")
        got = await exact(src, db.appointments)
        assert got["appointments"]["total"] == 50 and src.changes.replaced_total == replaced + 1
        if streams:  # later changes to the collection now in place are followed as usual
            await db.appointments.insert_many(docs(3, specialty="restored", hours=(4, 6)))
            assert (await exact(src, db.appointments))["appointments"]["total"] == 53
        # Renamed into place over an existing collection (dropTarget), and dropped and created again.
        await warm(src)
        await db.appts_prev.rename("appointments", dropTarget=True)
        assert (await exact(src, db.appointments))["appointments"]["total"] == 1
        await warm(src)
        await db.appointments.drop()
        await db.appointments.insert_many(docs(7, specialty="again"))
        got = await exact(src, db.appointments)
        assert got["appointments"]["total"] == 7 and src.changes.replaced_total == replaced + 3


async def test_a_collection_renamed_into_the_name_rebuilds_by_the_next_call(mongo_server_fn: MongoServer) -> None:  # noqa: F811
    src = source_for(mongo_server_fn, timeout=5.0)
    await src.start()
    try:
        await replace_by_rename_then_by_drop(src, mongo_server_fn, streams=True)
        assert src.mode == "change_stream"
    finally:
        await src.close()


async def test_without_change_streams_the_identity_is_checked_every_call(tmp_path: Path) -> None:
    # reconcile_interval 300 s: without the identity check, the stale hours would be recomputed over
    # minutes, a few per call; with it, all of them by the next call.
    server = MongoServer(tmp_path / "data", args=["--standalone"])
    server.start()
    try:
        src = source_for(server, timeout=5.0, reconcile_interval=300.0)
        await src.start()
        try:
            await replace_by_rename_then_by_drop(src, server, streams=False)
            assert src.mode == "reconcile"
        finally:
            await src.close()
    finally:
        server.kill()


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_the_identity_check_is_one_small_read_per_call(mongo_server_fn: MongoServer) -> None:  # noqa: F811
    """listCollections filtered to the one name, once per call that reads kept hours, never a write."""
    async with AsyncMongoClient(mongo_server_fn.uri) as client:
        await client.get_default_database().appointments.insert_many(docs(20, specialty="x"))
    wire = Commands()
    src = source_for(mongo_server_fn, timeout=5.0, listeners=[wire])
    await src.start()
    try:
        await warm(src)
        wire.names.clear()
        await src.metrics_for("24h")
        assert wire.names.count("listCollections") == 1
        assert set(wire.names) <= {"listCollections", "aggregate", "getMore"}
    finally:
        await src.close()
