"""The business section is bounded in bytes whatever the collection holds: 5,000 distinct specialties and
three 1 MiB specialty strings in a real SecantusDB, read by a real `hub serve` and by the source itself."""

from __future__ import annotations

import datetime as dt
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pymongo import MongoClient

from hub.sources.business import WINDOWS
from hub.sources.business.pipeline import LABEL_CHARS, LABEL_MARK, max_section_bytes
from tests.support.hubproc import HubProcess
from tests.support.mongo import MongoServer, mongo_server_fn  # noqa: F401
from tests.system.test_business_buckets import differences, oracle
from tests.system.test_business_source import ms, source_for

pytestmark = pytest.mark.untimed  # no timing asserted: left out of CI's hog pass

UTC = dt.UTC
DISTINCT = 5000
MiB = 1 << 20
#: three 1 MiB labels: plain ASCII, two-byte characters, and control characters (6 bytes each in JSON)
LONG_LABELS = ("A" * MiB, "é" * (MiB // 2), "\x01" * MiB)
LONG_COPIES = 3  # each long label has more appointments than any short one: they are among the shown rows


def hostile_docs(now: dt.datetime) -> list[dict[str, Any]]:
    """5,000 appointments with distinct specialties over the last 24 h (closed hours and the open one),
    and three appointments for each 1 MiB specialty."""
    docs = [{"createdAt": ms(now - dt.timedelta(minutes=1 + (i * 7) % (23 * 60))), "status": "booked",
             "doctor": {"specialty": f"Specialty {i:04d} " + "z" * (i % 40)}} for i in range(DISTINCT)]
    docs += [{"createdAt": ms(now - dt.timedelta(hours=2 + 5 * j + c)), "status": "booked",
              "doctor": {"specialty": label}} for j, label in enumerate(LONG_LABELS) for c in range(LONG_COPIES)]
    return docs


def seed(server: MongoServer) -> int:
    docs = hostile_docs(dt.datetime.now(UTC))
    with MongoClient(server.uri, serverSelectionTimeoutMS=10_000) as client:
        coll = client.get_default_database().appointments
        coll.create_index([("createdAt", 1)])
        for i in range(0, len(docs), 1000):  # the 1 MiB documents in small batches
            coll.insert_many(docs[i:i + 1000])
    return len(docs)


def check_section(business: dict[str, Any], *, total: int) -> int:
    """The documented bound, every appointment counted, the long labels cut and marked; its size."""
    size = len(orjson.dumps(business))
    assert size <= max_section_bytes(), size
    a = business["appointments"]
    by = a["bySpecialty"]
    assert a["total"] == total and sum(r["count"] for r in by) == total
    other = [r for r in by if r["_id"] == "other"]
    assert len(by) == 51 and len(other) == 1 and other[0]["count"] > DISTINCT - 50
    long = [r["_id"] for r in by if len(r["_id"]) > 100]
    assert sorted(long) == sorted(label[:LABEL_CHARS - 1] + LABEL_MARK for label in LONG_LABELS)
    assert all(r["count"] == LONG_COPIES for r in by if r["_id"] in long)
    return size


@pytest.fixture
def hostile(mongo_server_fn: MongoServer) -> Iterator[tuple[MongoServer, int]]:  # noqa: F811
    yield mongo_server_fn, seed(mongo_server_fn)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return orjson.loads(r.read())


def test_every_snapshot_and_rest_answer_stays_within_the_documented_bound(
        hostile: tuple[MongoServer, int], tmp_path: Path) -> None:
    """Before the bound, each snapshot's business section carried every specialty whole: 3.49 MB."""
    server, total = hostile
    hub = HubProcess({"broadcast": {"interval": 2.0},
                      "sources": {"prometheus": {"enabled": False}, "health": {"enabled": False},
                                  "business": {"mongodb_uri": server.uri, "time_range": "24h", "timeout": 5.0}}},
                     tmp_path).start()
    try:
        # Ticks until the hour buckets answer (after the background fill), not only the full pipeline.
        deadline = time.monotonic() + 90
        sizes: list[int] = []
        seen = 0
        while len(sizes) < 6:
            assert time.monotonic() < deadline, f"only {len(sizes)} business ticks:\n{hub.log()}"
            items = get_json(hub.url + "/api/metrics/history")["items"]
            for snap in items:
                if snap["seq"] > seen:
                    seen = snap["seq"]
                    if snap["sources"]["business"]["status"] == "ok":
                        sizes.append(check_section(snap["data"]["business"], total=total))
            time.sleep(0.5)
        for window in WINDOWS:
            answer = get_json(f"{hub.url}/api/metrics/business?timeRange={window}")
            assert len(orjson.dumps(answer)) <= max_section_bytes()
            if window != "1h":
                check_section(answer, total=total)
        print(f"business section: {min(sizes)}..{max(sizes)} bytes; bound {max_section_bytes()}")
    finally:
        hub.stop()


async def test_hour_buckets_equal_the_full_pipeline_on_hostile_labels(hostile: tuple[MongoServer, int]) -> None:
    """The summed hours and the one-aggregation oracle cut, merge and fold the same way."""
    server, total = hostile
    src = source_for(server, timeout=10.0)
    await src.start()
    try:
        await src.metrics_for("24h")  # cold: the full pipeline; the hours fill in the background
        await src.filled()
        got = await src.metrics_for("24h")
        assert len(src.store) >= 23
        check_section(got, total=total)
        assert differences(got, await oracle(src._coll, src.cfg.fields, got)) == []
    finally:
        await src.close()
