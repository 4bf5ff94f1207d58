"""The grid loop and the scheduler's budgets and isolation, on a fake clock (no real time passes)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from hub.metrics import HubMetrics
from hub.scheduler import BUDGET_FRACTION, Scheduler, run_every
from hub.sources.base import Source, SourceResult


class FakeClock:
    """A clock that only moves when the code under test sleeps or a test advances it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def _run(clock: FakeClock, durations: list[float], interval: float) -> list[float]:
    """Run `run_every` until it has called fn len(durations) times; return the call times."""
    calls: list[float] = []
    done = asyncio.Event()

    async def fn() -> None:
        calls.append(clock.now)
        clock.now += durations[len(calls) - 1]  # the work this call "took"
        if len(calls) == len(durations):
            done.set()
            await asyncio.Event().wait()  # park here until cancelled

    task = asyncio.create_task(run_every(interval, fn, clock=clock.time, sleep=clock.sleep))
    await done.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return calls


async def test_run_every_keeps_a_fixed_grid_without_drift():
    clock = FakeClock()
    calls = await _run(clock, [0.3, 0.7, 0.1, 0.9, 0.0], interval=1.0)
    assert calls == [100.0, 101.0, 102.0, 103.0, 104.0]


async def test_run_every_skips_missed_slots_instead_of_bursting():
    clock = FakeClock()
    calls = await _run(clock, [2.5, 0.1, 0.1], interval=1.0)
    # The first call overran into slot 3: the next call is at slot 3, never a catch-up burst.
    assert calls == [100.0, 103.0, 104.0]
    assert all(s >= 0 for s in clock.sleeps)


class Recorder(Source):
    """Records the budget it was given and returns at once (no time passes)."""

    def __init__(self, name: str, *, timeout: float, data: object = None) -> None:
        self.name = name
        self.sections = (name,)
        self.timeout = timeout
        self.data = data
        self.budgets: list[float] = []

    async def collect(self, budget: float) -> SourceResult:
        self.budgets.append(budget)
        return SourceResult(data={self.name: self.data})


async def test_the_scheduler_grants_each_source_min_of_its_timeout_and_its_share_of_the_interval():
    fast = Recorder("fast", timeout=0.05)
    slow = Recorder("slow", timeout=30.0)
    sched = Scheduler(sources=[fast, slow], interval=1.0, metrics=HubMetrics())
    await sched.collect()
    assert fast.budgets == [0.05]
    assert slow.budgets == [1.0 * BUDGET_FRACTION]


async def test_a_value_json_cannot_carry_fails_only_its_source():
    bad = Recorder("bad", timeout=1.0, data={"v": 123456789012345678901234567890})
    deep: object = []
    for _ in range(300):
        deep = [deep]
    nested = Recorder("nested", timeout=1.0, data=deep)
    good = Recorder("good", timeout=1.0, data={"ok": 1})
    metrics = HubMetrics()
    sched = Scheduler(sources=[bad, nested, good], interval=1.0, metrics=metrics)
    out = await sched.collect()
    assert out.statuses == {"bad": "error", "nested": "error", "good": "ok"}
    assert out.sections["good"] == b'{"ok":1}' and out.sections["bad"] == b"null"
    status = orjson.loads(out.sources["bad"])
    assert status["error"].startswith("returned data that cannot be encoded as JSON")
    assert metrics.registry.get_sample_value("hub_collect_errors_total", {"source": "bad"}) == 1

