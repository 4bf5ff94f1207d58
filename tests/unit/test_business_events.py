"""MongoDB's own change events for a replaced collection, as its manual documents them, rebuild every hour.

No MongoDB runs here (the system tests use SecantusDB, which sends none of these for a rename into the
watched name), so a stand-in collection hands the change feed the documented event shapes: `rename`
with `to` naming the watched collection, `invalidate`, `drop` and `dropDatabase`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from hub.config import BusinessFields
from hub.sources.business.buckets import hour_of
from hub.sources.business.changes import ChangeFeed

T = dt.datetime(2025, 3, 1, 9, 30, tzinfo=dt.UTC)
NS = {"db": "healthcare", "coll": "appointments"}


def token(n: int) -> dict[str, str]:
    return {"_data": f"{n:04x}"}


def insert(n: int, created: dt.datetime) -> dict[str, Any]:
    return {"_id": token(n), "operationType": "insert", "ns": NS, "documentKey": {"_id": n},
            "fullDocument": {"createdAt": created}}


#: a rename INTO the watched name (a restore or a migration), then the invalidate that ends the stream
RENAMED_INTO = [{"to": NS, "_id": token(2), "operationType": "rename",
                 "ns": {"db": "healthcare", "coll": "appts_old"}},
                {"_id": token(3), "operationType": "invalidate"}]
RENAMED_AWAY = [{"to": {"db": "healthcare", "coll": "appts_2024"}, "_id": token(2), "operationType": "rename",
                 "ns": NS}, {"_id": token(3), "operationType": "invalidate"}]
DROPPED = [{"_id": token(2), "operationType": "drop", "ns": NS}, {"_id": token(3), "operationType": "invalidate"}]
DB_DROPPED = [{"_id": token(2), "operationType": "dropDatabase", "ns": {"db": "healthcare"}},
              {"_id": token(3), "operationType": "invalidate"}]


class Stream:
    """A change stream cursor handing out `events`; resume_token follows them like PyMongo's."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = list(events)
        self.resume_token: dict[str, str] = token(100)
        self.closed = False

    async def try_next(self) -> dict[str, Any] | None:
        if self.closed or not self.events:
            return None
        event = self.events.pop(0)
        self.resume_token = event["_id"]
        return event

    async def close(self) -> None:
        self.closed = True


class Collection:
    """Opens one Stream per watch() call, with the next list of events."""

    def __init__(self, *batches: list[dict[str, Any]]) -> None:
        self.batches = list(batches)
        self.opened: list[dict[str, Any]] = []

    async def watch(self, pipeline: list[dict[str, Any]], **kw: Any) -> Stream:
        self.opened.append(kw)
        return Stream(self.batches.pop(0) if self.batches else [])


@pytest.mark.parametrize("events", [RENAMED_INTO, RENAMED_AWAY, DROPPED, DB_DROPPED],
                         ids=["rename-into", "rename-away", "drop", "dropDatabase"])
async def test_documented_events_of_a_replaced_collection_rebuild_and_open_a_fresh_stream(
        events: list[dict[str, Any]]) -> None:
    before, after = T - dt.timedelta(hours=5), T
    coll = Collection([insert(1, before), *events], [insert(4, after)])
    feed = ChangeFeed(coll, BusinessFields())
    changes = await feed.drain()
    # Every hour is rebuilt, and nothing read before the reset is kept; the drain goes on reading the
    # fresh stream, which is opened without a resume point (one of the old collection is worthless).
    assert changes.reset and changes.hours == {hour_of(after)}
    assert len(coll.opened) == 2 and "resume_after" not in coll.opened[1]
    assert not (await feed.drain()).reset
