"""Patient data never leaves the hub, and the hub only reads: checked on the wire of a real server."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.errors import OperationFailure

from hub.config import build_config
from hub.doctor import run_doctor
from hub.sources.business import WINDOWS
from hub.sources.business.changes import CREATED_TOUCHED
from tests.support.mongo import MongoServer, mongo_server, mongo_server_fn  # noqa: F401
from tests.system.test_business_source import SPECIALTIES, insert, make_docs, source_for

pytestmark = pytest.mark.untimed  # no timing asserted: left out of CI's hog pass

UTC = dt.timezone.utc
READ_COMMANDS = {"aggregate", "listIndexes", "listCollections", "count", "buildinfo", "buildInfo", "connectionStatus",
                 "ping", "hello", "isMaster", "ismaster", "endSessions", "saslStart", "saslContinue", "getMore",
                 "killCursors"}


class Wire(monitoring.CommandListener):
    """Records every command the driver sends and every aggregate reply."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.replies: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.command_name in ("aggregate", "getMore"):  # getMore: change events and later batches
            self.replies.append(dict(event.reply))

    def received(self) -> list[dict[str, Any]]:
        """Every document the server sent back in a cursor batch."""
        return [doc for r in self.replies
                for doc in (r.get("cursor") or {}).get("firstBatch", (r.get("cursor") or {}).get("nextBatch", []))]

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_only_aggregates_leave_the_database(mongo_server: MongoServer) -> None:
    docs = make_docs(dt.datetime.now(UTC), seed=19)
    await insert(mongo_server, "private", docs)
    wire = Wire()
    src = source_for(mongo_server, collection="private", listeners=[wire], min_cell_size=3, anomaly={"enabled": True})
    await src.start()
    try:
        out = {w: await src.metrics_for(w) for w in WINDOWS}
        await src.collect(src.timeout)
        await asyncio.wait_for(src.filled(), timeout=10)  # the background fill
        await src.metrics_for("24h")  # warm: from hour rows
    finally:
        await src.close()
    text = json.dumps(out)
    for d in docs:
        assert d["patient"]["name"] not in text and d["patient"]["email"] not in text
    assert "Dr X" not in text and "comment" not in text
    for result in out.values():
        a = result["appointments"]
        assert set(a) == {"total", "bySpecialty", "cancellationRate", "averageBookingTime", "patientSatisfaction"}
        assert {c["_id"] for c in a["bySpecialty"]} <= {*SPECIALTIES, "unknown", "other", ""}
        assert all(c["count"] >= 3 for c in a["bySpecialty"])  # no cell small enough to single anyone out
    # On the wire: reads only, no $out/$merge.
    assert {name for name, _ in wire.sent} <= READ_COMMANDS
    for name, cmd in wire.sent:
        if name == "aggregate":
            assert not any(k in json.dumps(cmd, default=str) for k in ('"$out"', '"$merge"'))
    # Only aggregates come back: hour rows, or the full pipeline's one $facet document (windows without
    # closed hours, warm-up).
    # (and the detectors' two counts and one created-at: test_expected_anomaly_and_their_messages_...)
    rows = [r for r in wire.received() if set(r) != FACET_KEYS and isinstance(r.get("_id"), dict)]
    detector = [r for r in wire.received() if set(r) != FACET_KEYS and not isinstance(r.get("_id"), dict)]
    assert all(set(r) <= DETECTOR_KEYS and r.get("_id") is None for r in detector), detector[:3]
    facets = [r for r in wire.received() if set(r) == FACET_KEYS]
    assert rows and all(set(r) <= METRIC_ROW_KEYS and set(r["_id"]) == {"h", "s"} for r in rows), rows[:3]
    assert facets and all(set(row) <= FACET_ROW_KEYS for f in facets for part in f.values() for row in part)
    assert all(row.get("_id") is None for f in facets for k in ("totals", "cancelled", "booking") for row in f[k])


METRIC_ROW_KEYS = {"_id", "n", "c", "rs", "rn", "ws", "wn"}
#: the detectors' rows: the last 60 minutes' and this hour's counts, or one created-at
DETECTOR_KEYS = {"_id", "n", "h", "last", "createdAt"}  # counts and created-at times only
FACET_KEYS = {"totals", "cancelled", "booking", "bySpecialty"}
FACET_ROW_KEYS = {"_id", "n", "rating", "avgMs", "count"}
EVENT_KEYS = {"_id", "operationType", "documentKey", "fullDocument", CREATED_TOUCHED}


async def test_change_events_carry_no_patient_field(mongo_server: MongoServer) -> None:
    """Inserts, updates of patient fields, replaces and deletes: what reaches the hub is the operation,
    the _id, the created-at and a computed flag, never a patient field or a changed value."""
    await insert(mongo_server, "watched", make_docs(dt.datetime.now(UTC), seed=29)[:300])
    wire = Wire()
    src = source_for(mongo_server, collection="watched", listeners=[wire])
    await src.start()
    secret = "Jane Q. Patient"
    try:
        await src.metrics_for("30d")
        # Counted from before the writes: the warm-up fill may drain some of the events itself.
        events_before = src.changes.events_total
        async with AsyncMongoClient(mongo_server.uri) as client:
            coll = client.get_default_database().watched
            now = dt.datetime.now(UTC)
            res = await coll.insert_one({"createdAt": now, "status": "booked",
                                         "patient": {"name": secret, "email": "jane@example.org"}})
            await coll.update_one({"_id": res.inserted_id}, {"$set": {"patient.name": secret + " Jr",
                                                                      "review": {"rating": 2, "comment": secret}}})
            await coll.update_one({"_id": res.inserted_id}, {"$unset": {"patient": 1}})
            await coll.update_one({"_id": res.inserted_id}, {"$set": {"createdAt": now - dt.timedelta(days=2)}})
            await coll.replace_one({"_id": res.inserted_id}, {"createdAt": now, "patient": {"name": secret}})
            await coll.delete_one({"_id": res.inserted_id})
        await src.filled()  # the warm-up fill owns the stream while it runs: the next call drains it
        await src.metrics_for("30d")
        assert src.changes.events_total - events_before == 6
    finally:
        await src.close()
    received = wire.received()
    text = json.dumps(received, default=str)
    assert secret not in text and "jane@" not in text and "patient" not in text and "comment" not in text
    events = [d for d in received if "operationType" in d]
    assert [e["operationType"] for e in events] == ["insert", "update", "update", "update", "replace", "delete"]
    for e in events:
        assert set(e) <= EVENT_KEYS, e
        assert set(e["documentKey"]) == {"_id"}
        assert set(e.get("fullDocument") or {}) <= {"createdAt"}
    # the flag tells the hub that the created-at moved, without the value leaving the server
    assert [bool(e.get(CREATED_TOUCHED)) for e in events] == [False, False, False, True, False, False]


async def test_read_only_user_is_enough_for_source_and_doctor(mongo_server_fn: MongoServer) -> None:
    server = mongo_server_fn
    await insert(server, "appointments", make_docs(dt.datetime.now(UTC), seed=23)[:200])
    async with AsyncMongoClient(server.uri) as client:
        await client.get_default_database().appointments.create_index([("createdAt", 1)])
        await client.admin.command("createUser", "hub_reader", pwd="ro-pass-1",
                                   roles=[{"role": "read", "db": "healthcare"}])
    server.stop()
    server.start(auth=True)
    uri = server.uri_with("hub_reader", "ro-pass-1", auth_source="admin")
    src = source_for(server, uri=uri)
    await src.start()
    try:
        assert (await src.collect(src.timeout)).data["business"]["appointments"]["total"] > 0
        # Kept hours, change stream, and the collection's identity (listCollections) under `read` too.
        await src.metrics_for("24h")
        await src.filled()
        assert (await src.metrics_for("24h"))["appointments"]["total"] > 0
        assert src.mode == "change_stream" and src.changes.identity not in (None, "absent")
    finally:
        await src.close()
    out = io.StringIO()
    cfg = build_config({"sources": {"business": {"mongodb_uri": uri, "timeout": 2}}}, environ={})
    assert await run_doctor(cfg, out=out) == 0, out.getvalue()
    assert "ro-pass-1" not in out.getvalue()
    assert "index on createdAt: yes" in out.getvalue()
    assert "roles: read" in out.getvalue() and "allow writes" not in out.getvalue()
    async with AsyncMongoClient(uri, serverSelectionTimeoutMS=5000) as client:  # the role really is read-only
        with pytest.raises(OperationFailure) as err:
            await client.get_default_database().appointments.insert_one({"x": 1})
        assert err.value.code == 13


async def test_expected_anomaly_and_their_messages_carry_no_patient_field(mongo_server: MongoServer) -> None:
    """The detectors' queries bring back counts and created-at times only, and `expected`, `anomaly`,
    the metrics' inputs and the messages of an anomaly and its recovery hold no planted field."""
    from pymongo import MongoClient

    from tests.system.test_business_anomaly import Clock, Recorder, seasonal_docs, seed

    t0 = dt.datetime(2024, 3, 5, 10, 0, tzinfo=UTC)
    planted = {"name": "Zebulon Plantedname", "email": "zebulon@planted.example", "ssn": "078-05-1120"}
    docs = [{**d, "patient": planted, "notes": "planted-note-7731"} for d in seasonal_docs(t0)]
    seed(mongo_server, "planted", docs)
    wire, clock, sent = Wire(), Clock(t0), Recorder()
    src = source_for(mongo_server, collection="planted", listeners=[wire], timeout=10, clock=clock, notifier=sent,
                     anomaly={"enabled": True})
    await src.start()
    sections = []
    try:
        await src.collect(10)
        await src.filled()
        for m in (0, 8):  # ok, then silent (8 minutes without a booking at 60 an hour)
            clock.t = t0 + dt.timedelta(minutes=m)
            sections.append((await src.collect(10)).data["business"])
        with MongoClient(mongo_server.uri) as client:
            client.get_default_database().planted.insert_many(
                [{"createdAt": t0 + dt.timedelta(minutes=8, seconds=i), "patient": planted} for i in range(5)])
        clock.t = t0 + dt.timedelta(minutes=9)
        sections.append((await src.collect(10)).data["business"])
        sections.append(await src.metrics_for("1h"))
    finally:
        await src.close()
    assert [s["anomaly"]["state"] for s in sections[:3]] == ["ok", "silent", "ok"]
    assert [n.kind for n in sent.sent] == ["anomaly", "recovered"]
    assert set(sections[3]["expected"]) == {"hour", "observed", "elapsed", "weeks"}
    text = json.dumps([*sections, [n.text for n in sent.sent]], default=str)
    for value in (*planted.values(), "planted-note-7731", "Zebulon", "planted.example"):
        assert value not in text, (value, text[text.find(value) - 80:text.find(value) + 80])
    # On the wire: reads only, and besides hour rows, facets and change events only the detectors'
    # counts and created-at times come back.
    assert {name for name, _ in wire.sent} <= READ_COMMANDS
    received = json.dumps(wire.received(), default=str)
    assert "Zebulon" not in received and "planted" not in received and "patient" not in received
    detector_rows = [r for r in wire.received() if set(r) - METRIC_ROW_KEYS - FACET_KEYS - EVENT_KEYS]
    assert detector_rows and all(set(r) <= DETECTOR_KEYS for r in detector_rows), detector_rows[:3]
    assert any(set(r) == {"createdAt"} for r in detector_rows)  # the last booking's look-up
