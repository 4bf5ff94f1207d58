"""Background work owns its deadline and its lifetime: tasks a source starts inherit no caller's
pymongo.timeout, are cancelled and awaited on close, and a drain's updated ids stay bounded.

MongoDB and Prometheus are replaced by stand-ins here, because what is checked happens between the
hub and the driver: which deadline pymongo would apply (read from pymongo's own context variable),
and when a task has finished. The same paths against a real SecantusDB are in
tests/system/test_business_buckets.py (the backlog test)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

import httpx
import pymongo
import pytest
from pymongo import _csot
from pymongo.errors import ExecutionTimeout

from hub.config import BusinessFields
from hub.metrics import HubMetrics
from hub.sources.base import SourceError
from hub.sources.business import BusinessSource
from hub.sources.business.buckets import BucketStore, HourStats
from hub.sources.business.changes import CREATED_TOUCHED, MAX_IDS, ChangeFeed
from hub.sources.business.source import FILL_TIMEOUT
from hub.sources.business.tracker import ChangeTracker
from hub.tasks import cancel_and_wait, spawn
from tests.support.components import make_business_source
from tests.support.prom_fakes import make_source

TICK = 0.3  # a tick's driver deadline, as in the backlog test


class Changes:
    """Stands in for the ChangeTracker: records the driver deadline each apply() runs under."""

    mode = "change_stream"
    behind = False

    def __init__(self, *, block: bool = False, fail: BaseException | None = None) -> None:
        self.seen: list[float | None] = []  # under apply()
        self.windows: list[float | None] = []  # under the source's _window()
        self.entered = asyncio.Event()
        self.block, self.fail = block, fail
        self.closed = False

    async def apply(self, *, wait: bool = True) -> bool:
        self.seen.append(_csot.remaining())
        self.entered.set()
        if self.fail is not None:
            raise self.fail
        if self.block:
            await asyncio.Event().wait()  # a drain that outlasts everything (a stuck server)
        return True

    async def close(self) -> None:
        self.closed = True


class Client:
    """Stands in for the AsyncMongoClient (only close() is reached)."""

    async def close(self) -> None:
        pass


def business(changes: Changes, *, timeout: float = 5.0) -> BusinessSource:
    src = make_business_source("mongodb://localhost:27017/healthcare", timeout=timeout, time_range="24h")
    src.changes = changes  # type: ignore[assignment]
    src._client = Client()  # type: ignore[assignment]

    async def window(time_range: str) -> dict[str, Any]:
        changes.windows.append(_csot.remaining())
        return {}

    async def full(time_range: str) -> dict[str, Any]:
        return {}

    src._window = window  # type: ignore[method-assign]
    src._full = full  # type: ignore[method-assign]
    return src


async def test_spawn_starts_a_task_in_a_fresh_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("caller")
    var.set("the caller's")

    async def look() -> tuple[float | None, str | None]:
        return _csot.get_timeout(), var.get(None)

    with pymongo.timeout(TICK):
        task = spawn(look(), name="look")
    assert task.get_name() == "look"
    assert await task == (None, None)


async def test_the_fill_gets_its_own_deadline_not_the_ticks() -> None:
    # Found on a 2-core machine: the fill was created inside the tick's pymongo.timeout(0.27 s) and
    # create_task copied that deadline in; its own pymongo.timeout(120) could not extend it.
    changes = Changes()
    src = business(changes)
    with pymongo.timeout(TICK):
        src._start_fill("24h")
    await src.filled()
    assert src._fill is not None and src._fill.exception() is None
    (drain,) = changes.seen
    (window,) = changes.windows
    for left in (drain, window):
        assert left is not None and FILL_TIMEOUT - 1 < left <= FILL_TIMEOUT


async def test_a_failed_fill_logs_the_deadline_that_applied(caplog: pytest.LogCaptureFixture) -> None:
    src = business(Changes(fail=ExecutionTimeout("operation exceeded time limit")), timeout=15.0)
    with caplog.at_level(logging.WARNING, "hub.sources.business.source"):
        src._start_fill("24h")
        await src.filled()
    assert "filling hour buckets failed" in caplog.text
    assert "timed out after 150s" in caplog.text  # max(120 s, 10 x timeout), not the 120 s constant


async def test_a_shared_computation_does_not_inherit_the_deadline_of_its_starter() -> None:
    # The first caller of a window starts the computation every caller shares: it runs under the
    # deadline it was given (half of it for the drain), whatever context that caller was in.
    changes = Changes()
    src = business(changes)
    try:
        with pymongo.timeout(TICK):
            await src._get("24h", deadline=4.0)
        left = changes.seen[0]
        assert left is not None and 1.9 < left <= 2.0
    finally:
        await src.close()


async def test_a_computation_that_times_out_logs_the_deadline_that_applied() -> None:
    # A drain with no batch within its half of the budget is caught up in the background; the full
    # pipeline then answers, and when it times out the error names the whole budget it had.
    src = business(Changes(fail=ExecutionTimeout("operation exceeded time limit")))

    async def full(time_range: str) -> dict[str, Any]:
        raise ExecutionTimeout("operation exceeded time limit")

    src._full = full  # type: ignore[method-assign]
    try:
        with pytest.raises(SourceError, match=r"timed out after 4s"):
            await src._get("24h", deadline=4.0)
    finally:
        await src.close()


async def test_close_cancels_and_awaits_every_task_of_the_business_source() -> None:
    changes = Changes(block=True)
    src = business(changes)
    caller = asyncio.create_task(src._get("24h", deadline=4.0))
    await changes.entered.wait()
    (compute,) = src._inflight.values()
    changes.entered.clear()
    src._start_fill("7d")
    await changes.entered.wait()
    fill = src._fill
    assert fill is not None and not fill.done() and not compute.done()
    await src.close()
    assert compute.done() and fill.done()  # not merely asked to stop
    assert changes.closed
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_a_failed_span_query_leaves_no_sibling_running() -> None:
    # A window is read as one aggregation per span, concurrently. When one failed, gather returned
    # at once and left the others running past the call (and past close()).
    src = make_business_source("mongodb://localhost:27017/healthcare", timeout=5.0)
    first, open_h = src._closed_hours("24h")
    src.store.store(range(first, open_h), {}, started=0.0, generation=0)
    src.store.mark([first + 5])  # a dirty hour between kept ones: a span of its own
    siblings: list[asyncio.Task[Any]] = []
    calls = 0

    async def aggregate(pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ExecutionTimeout("operation exceeded time limit")
        siblings.append(asyncio.current_task())  # type: ignore[arg-type]
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    src._aggregate = aggregate  # type: ignore[method-assign]
    with pytest.raises(ExecutionTimeout):
        await src._window("24h")
    assert siblings and all(t.done() for t in siblings)
    assert first + 5 in src.store.dirty  # the failed hour is still to be recomputed


async def test_cancel_and_wait_returns_once_every_task_finished() -> None:
    started, stopping, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow_to_stop() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopping.set()
            await release.wait()
            raise

    async def fails() -> None:
        raise RuntimeError("its own outcome")

    tasks = [spawn(slow_to_stop(), name="slow"), spawn(fails(), name="fails")]
    await started.wait()
    stopper = asyncio.create_task(cancel_and_wait(tasks))
    await stopping.wait()
    assert not stopper.done()
    release.set()
    await stopper
    assert all(t.done() for t in tasks)


async def test_a_cancelled_prometheus_collection_waits_for_its_requests_to_stop() -> None:
    # The scheduler cancels a source that overruns its budget. The source cancelled its requests but
    # returned before they had stopped, leaving tasks pending after the collection was over.
    arrived, stopping, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def never_answers(request: httpx.Request) -> httpx.Response:
        arrived.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopping.set()  # a request whose teardown takes a while (closing a TLS connection)
            await release.wait()
            raise
        raise AssertionError("unreachable")

    src = make_source("http://prometheus.test", alerts=False)
    src._client = httpx.AsyncClient(transport=httpx.MockTransport(never_answers))
    try:
        collect = asyncio.create_task(src.collect(60.0))
        await arrived.wait()
        collect.cancel()
        await stopping.wait()
        assert not collect.done()  # still waiting for its request to stop
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await collect
        assert [t for t in asyncio.all_tasks() if t.get_name().startswith("hub-prometheus")] == []
    finally:
        await src.close()


# ----------------------------------------------------------------------------- bounded ids


class Stream:
    """Stands in for a change stream: the given events, then nothing."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = iter(events)
        self.resume_token = {"_data": "00"}

    async def try_next(self) -> dict[str, Any] | None:
        return next(self.events, None)

    async def close(self) -> None:
        pass


class Collection:
    """Stands in for the appointments collection: a change stream, and listCollections for its identity."""

    name = "appointments"

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.database = self

    async def list_collections(self, **options: Any) -> Any:
        class Cursor:
            async def to_list(self, length: Any) -> list[dict[str, Any]]:
                return [{"name": "appointments", "type": "collection", "info": {"uuid": "u1"}}]

        return Cursor()

    async def watch(self, pipeline: list[dict[str, Any]], **options: Any) -> Stream:
        return Stream(self.events)


class Watched(ChangeFeed):
    """The real feed, recording the most ids it held at any point of a drain."""

    peak = 0

    def _note(self, event: Any, changes: Any) -> None:
        super()._note(event, changes)
        self.peak = max(self.peak, len(changes.ids))


def updates(n: int) -> list[dict[str, Any]]:
    return [{"operationType": "update", "documentKey": {"_id": i}, CREATED_TOUCHED: False} for i in range(n)]


async def test_a_drain_never_holds_more_than_max_ids_updated_ids() -> None:
    feed = Watched(Collection(updates(MAX_IDS + 50)), BusinessFields())
    changes = await feed.drain()
    assert feed.peak <= MAX_IDS
    assert changes.overflow and changes.unknown and changes.ids == []
    assert changes.events == MAX_IDS + 50

    feed = Watched(Collection(updates(MAX_IDS)), BusinessFields())  # exactly MAX_IDS: looked up
    changes = await feed.drain()
    assert len(changes.ids) == MAX_IDS and not changes.overflow and not changes.unknown


async def test_an_overflowing_drain_is_counted_and_recomputes_every_kept_hour() -> None:
    store = BucketStore()
    store.store([10, 11], {10: HourStats(total=3), 11: HourStats(total=4)}, started=0.0, generation=0)
    looked_up: list[int] = []

    async def aggregate(pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
        looked_up.append(len(pipeline[0]["$match"]["_id"]["$in"]))
        return []

    metrics = HubMetrics()
    tracker = ChangeTracker(Collection(updates(MAX_IDS + 1)), BusinessFields(), store,
                            aggregate=aggregate, reconcile_interval=300.0, metrics=metrics)
    await tracker.apply()
    assert looked_up == []  # no $in of thousands of ids
    assert store.dirty == {10, 11} and tracker.forced_total == 1
    assert metrics.registry.get_sample_value("hub_business_change_overflow_total") == 1
