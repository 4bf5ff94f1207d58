"""Change detection: the collection's change stream, projected on the server so that no patient field
reaches the hub, drained once per call (so every change committed before a tick shows in that tick)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo.errors import OperationFailure, PyMongoError

from hub.config import BusinessFields
from hub.sources.business.buckets import hour_of

log = logging.getLogger(__name__)

#: the computed flag an update event carries instead of its updateDescription: True when the update
#: set or removed the created-at field (or a parent of it), so the hour it left is unknown
CREATED_TOUCHED = "hubCreatedAtChanged"
#: a drain's empty getMore waits this long on the server for new events (keeps the tick short)
DRAIN_AWAIT_MS = 1
#: updated documents resolved to their hours at once; beyond this, every hour is recomputed instead
MAX_IDS = 5000
WATCH_COMMENT = "hub: business metrics change detection (read-only)"
#: the resume point is gone: ChangeStreamHistoryLost, ChangeStreamFatalError, and the same on old servers
HISTORY_LOST_CODES = frozenset({280, 286, 136})
#: events after which the stream is closed by the server and nothing about the collection is known. On
#: a stream on one collection, MongoDB sends `rename` when the collection is renamed away and also when
#: another is renamed into its name (`ns` the old name, `to` the watched one), then `invalidate`.
RESET_OPS = frozenset({"drop", "rename", "dropDatabase", "invalidate"})
#: identity of a collection that does not exist (listCollections does not list it)
ABSENT = "absent"


class ChangeStreamsUnavailable(Exception):
    """The server refuses change streams (standalone server, missing privilege...); the message says why."""


def watch_pipeline(fields: BusinessFields) -> list[dict[str, Any]]:
    """$project every change event to its operation type, document _id, created-at and one computed flag."""
    created = fields.created_at
    parts = created.split(".")
    touching = [created, *(".".join(parts[:i]) for i in range(1, len(parts)))]
    keys = {"$concatArrays": [
        {"$map": {"input": {"$objectToArray": {"$ifNull": ["$updateDescription.updatedFields", {}]}},
                  "in": "$$this.k"}},
        {"$ifNull": ["$updateDescription.removedFields", []]},
    ]}
    return [{"$project": {
        # _id (the resume token) stays: the server refuses a stream whose events lose it.
        "operationType": 1,
        # documentKey also holds the shard key on a sharded collection, which may be a patient field.
        "documentKey._id": 1,
        # Inserts and replaces carry the new document; only its created-at survives the projection.
        # Updates carry no document (no updateLookup) and their changed values never leave the server.
        f"fullDocument.{created}": 1,
        CREATED_TOUCHED: {"$anyElementTrue": [{"$map": {"input": keys, "in": {"$in": ["$$this", touching]}}}]},
    }}]


def _get_path(doc: Mapping[str, Any] | None, path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


@dataclass(slots=True)
class Changes:
    """What one drain found: hours to recompute, updated documents whose hour is still to be looked up,
    whether some change's hour is unknown (a delete), and whether the history was lost (rebuild)."""

    hours: set[int] = field(default_factory=set)
    #: at most MAX_IDS: past that the drain keeps none (`overflow`) and every kept hour is recomputed
    ids: list[Any] = field(default_factory=list)
    unknown: bool = False
    #: more than MAX_IDS documents were updated: `ids` was dropped and `unknown` set instead
    overflow: bool = False
    reset: bool = False
    events: int = 0
    #: the drain stopped early (deadline, outage) after `events` events; the rest wait for the next drain
    truncated: bool = False
    #: the latest created-at among the inserted documents (the time of the last booking), if any
    latest: dt.datetime | None = None


class ChangeFeed:
    """One change stream on the appointments collection, resumed with its token after a connection loss."""

    def __init__(self, coll: Any, fields: BusinessFields) -> None:
        self.coll = coll
        self.fields = fields
        self.pipeline = watch_pipeline(fields)
        self.stream: Any = None
        self.token: Mapping[str, Any] | None = None

    async def _open(self, changes: Changes) -> None:
        """Open the stream, resuming after the last token; a lost resume point opens afresh and resets."""
        if self.token is not None:
            try:
                self.stream = await self.coll.watch(self.pipeline, resume_after=self.token,
                                                    max_await_time_ms=DRAIN_AWAIT_MS, comment=WATCH_COMMENT)
                return
            except OperationFailure as exc:
                log.warning("business source: change stream cannot resume (%s); rebuilding all hours",
                            exc.details.get("errmsg") if exc.details else exc.code)
                self.token = None
                changes.reset = True
        try:
            self.stream = await self.coll.watch(self.pipeline, max_await_time_ms=DRAIN_AWAIT_MS,
                                                comment=WATCH_COMMENT)
        except OperationFailure as exc:
            msg = str((exc.details or {}).get("errmsg") or exc).split(", full error:", 1)[0]
            raise ChangeStreamsUnavailable(f"the server refuses change streams (error {exc.code}: {msg})") from None
        self.token = self.stream.resume_token

    async def drain(self) -> Changes:
        """Every event committed so far; raises PyMongoError on an outage (the next drain resumes)."""
        changes = Changes()
        if self.stream is None:
            await self._open(changes)
        last = None
        try:
            while True:
                event = await self.stream.try_next()
                if event is None:
                    break
                changes.events += 1
                self._note(event, changes)
                last = self.stream.resume_token if self.stream is not None else None
                if event.get("operationType") in RESET_OPS:
                    await self._restart(changes)
                    last = None
            # The post-batch token moves on even without events: resuming later skips nothing and
            # replays nothing.
            self.token = self.stream.resume_token
        except OperationFailure as exc:
            if exc.code not in HISTORY_LOST_CODES:
                await self._drop_stream()
                raise
            log.warning("business source: change stream history lost (error %s); rebuilding all hours", exc.code)
            await self._restart(changes)
        except PyMongoError:
            await self._drop_stream()  # keep the token: the next drain resumes where this one stopped
            if last is None:
                raise
            # A backlog bigger than the deadline (a bulk load, a long outage): keep what was read, and
            # resume after it, so every drain makes progress instead of timing out on the same events.
            self.token = last
            changes.truncated = True
        return changes

    def _note(self, event: Mapping[str, Any], changes: Changes) -> None:
        op = event.get("operationType")
        if op in ("insert", "replace"):
            created = _get_path(event.get("fullDocument"), self.fields.created_at)
            if isinstance(created, dt.datetime):
                changes.hours.add(hour_of(created))
                if op == "insert":
                    created = created if created.tzinfo else created.replace(tzinfo=dt.UTC)
                    changes.latest = created if changes.latest is None else max(changes.latest, created)
            if op == "replace":
                changes.unknown = True  # the replaced version's created-at is not in the event
        elif op == "update":
            key = event.get("documentKey") or {}
            if "_id" in key and not changes.overflow:
                if len(changes.ids) < MAX_IDS:
                    changes.ids.append(key["_id"])
                else:
                    # Bounded while draining (a bulk update may touch millions of documents): past
                    # MAX_IDS their hours are not looked up; every kept hour is recomputed instead.
                    changes.ids.clear()
                    changes.overflow = changes.unknown = True
            if event.get(CREATED_TOUCHED):
                changes.unknown = True
        elif op == "delete":
            changes.unknown = True  # a delete carries only the _id: its hour is unknown
        elif op in RESET_OPS:
            changes.reset = True

    async def _restart(self, changes: Changes) -> None:
        """Open a fresh stream (no token) and tell the caller to rebuild every hour."""
        await self._drop_stream()
        self.token = None
        changes.reset = True
        changes.hours.clear()
        changes.ids.clear()
        await self._open(changes)

    async def _drop_stream(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                await stream.close()
            except PyMongoError:
                pass  # the server is gone; the cursor dies with the connection

    async def close(self) -> None:
        """Close the stream (the token is kept)."""
        await self._drop_stream()


async def collection_identity(coll: Any) -> Any:
    """What tells this collection from another of the same name: its UUID from listCollections (MongoDB
    and SecantusDB give every collection one; a rename keeps it, a drop and re-create or a rename into
    the name changes it), the type where a server gives none (a view), ABSENT when there is none."""
    cursor = await coll.database.list_collections(filter={"name": coll.name}, comment=WATCH_COMMENT)
    for spec in await cursor.to_list(None):
        uuid = (spec.get("info") or {}).get("uuid")
        return uuid if uuid is not None else spec.get("type", "collection")
    return ABSENT


async def probe(coll: Any, fields: BusinessFields) -> str | None:
    """None when the server opens a change stream on `coll` (read-only: opened and closed at once);
    otherwise the reason it refuses. Network errors propagate."""
    try:
        stream = await coll.watch(watch_pipeline(fields), max_await_time_ms=DRAIN_AWAIT_MS, comment=WATCH_COMMENT)
    except OperationFailure as exc:
        msg = str((exc.details or {}).get("errmsg") or exc).split(", full error:", 1)[0]
        return f"the server refuses change streams (error {exc.code}: {msg})"
    await stream.close()
    return None
