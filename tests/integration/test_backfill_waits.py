"""The start-up backfill builds its snapshots, and sends each business query, just after a live tick.

Beside a tick, building thousands of snapshots (a worker thread holding the GIL for a good part of a
second) slowed the event loop until the demo's first ticks timed their MongoDB queries out.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from hub.backfill import Backfill
from hub.config import secrets_of
from tests.support.components import config
from tests.unit.test_backfill import T0, feed, live


def backfill_of(f: object) -> Backfill:
    cfg = config({"broadcast": {"interval": 1.0}})
    return Backfill(cfg.sources.prometheus, interval=1.0, history_size=10,
                    broadcaster=SimpleNamespace(feed=f, backfill=None),  # type: ignore[arg-type]
                    secrets=secrets_of(cfg))


async def test_it_returns_just_after_the_next_snapshot_and_not_before() -> None:
    f = feed()
    f.append(*live(1, T0))
    waiting = asyncio.create_task(backfill_of(f).after_a_tick(30.0))
    done, _ = await asyncio.wait({waiting}, timeout=0.3)
    assert not done, "returned before any tick"
    f.append(*live(2, T0 + 1))
    await asyncio.wait_for(waiting, timeout=1.0)


async def test_without_a_tick_it_gives_up_after_its_limit() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.wait_for(backfill_of(feed()).after_a_tick(0.3), timeout=5.0)
    assert loop.time() - start >= 0.3
