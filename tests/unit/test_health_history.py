"""The uptime/p95 record: the figures for 24 h, 7 d and 30 d agree with a computation from the same
samples, the record stays within its byte bound, and a damaged stored record is refused."""

from __future__ import annotations

import random

import orjson
import pytest

from hub.sources.health_history import (
    BOUNDS_MS,
    COARSE,
    FINE,
    MAX_RECORD_BYTES,
    NBINS,
    WINDOWS,
    CheckRecord,
    HealthHistory,
)
from hub.state import MemoryStore
from hub.vocab import utc_iso

DAY = 86400
T0 = 1_700_000_000.0  # a fixed "now" 35 days after the first sample: no real clock, no waiting


def samples(seed: int, days: int = 35, every: float = 600.0) -> list[tuple[float, bool, float | None]]:
    """One sample per `every` seconds: mostly up, an outage day, latencies from 5 ms to 20 s."""
    rnd = random.Random(seed)
    out = []
    t = T0 - days * DAY
    while t <= T0:
        outage = T0 - 3 * DAY <= t < T0 - 2.5 * DAY
        up = not outage and rnd.random() > 0.01
        latency = None if not up and rnd.random() < 0.5 else rnd.choice([0.004, 0.03, 0.12, 0.4, 2.5, 20.0])
        out.append((t, up, latency))
        t += every
    return out


def expected(data: list[tuple[float, bool, float | None]], window: str, now: float) -> tuple[float | None, list[float]]:
    """Uptime and the latencies of the samples in `window`: the buckets, counted back from now's."""
    seconds, width = WINDOWS[window]
    first = now // width - seconds // width + 1
    kept = [(up, lat) for t, up, lat in data if first <= t // width <= now // width]
    uptime = round(sum(up for up, _ in kept) / len(kept), 6) if kept else None
    return uptime, sorted(lat * 1000 for _, lat in kept if lat is not None)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_uptime_and_p95_agree_with_the_same_samples(seed: int) -> None:
    data = samples(seed)
    history = HealthHistory(["api"], store=MemoryStore())
    for t, up, latency in data:
        history.record("api", up, latency, t)
    shown = history.shown("api", T0)
    assert set(shown["uptime"]) == {"24h", "7d", "30d", "source", "since"} and shown["uptime"]["source"] == "hub"
    for window in ("24h", "7d", "30d"):
        uptime, latencies = expected(data, window, T0)
        assert shown["uptime"][window] == uptime, window
        # the p95 lies within the histogram bin holding the exact (nearest-rank) 95th percentile
        exact = latencies[max(0, -(-len(latencies) * 95 // 100) - 1)]
        i = next((i for i, b in enumerate(BOUNDS_MS) if exact <= b), len(BOUNDS_MS))
        lo, hi = (BOUNDS_MS[i - 1] if i else 0), (BOUNDS_MS[i] if i < len(BOUNDS_MS) else BOUNDS_MS[-1])
        assert lo <= shown["p95_ms"][window] <= hi, (window, exact, shown["p95_ms"][window])
    # the outage's half day is in the 7 d and 30 d windows, not in 24 h: three figures that differ
    assert shown["uptime"]["24h"] > shown["uptime"]["30d"] > shown["uptime"]["7d"]
    assert shown["uptime"]["since"] == utc_iso((T0 // COARSE - 719) * COARSE)  # the oldest of 720 hourly buckets


def test_a_check_without_samples_shows_nulls_and_a_check_with_no_answer_has_no_p95() -> None:
    history = HealthHistory(["a", "b"], store=MemoryStore())
    for i in range(10):
        history.record("b", False, None, T0 - i * 60)
    assert history.shown("a", T0) == {"uptime": {"24h": None, "7d": None, "30d": None, "source": "hub", "since": None},
                                      "p95_ms": {"24h": None, "7d": None, "30d": None}}
    b = history.shown("b", T0)
    assert (b["uptime"]["24h"], b["uptime"]["30d"], b["p95_ms"]["24h"]) == (0.0, 0.0, None)
    # the window is the last N buckets: a sample 24 h + one bucket ago is out of 24 h, in 7 d
    history.record("a", True, 0.1, T0 - DAY - FINE)
    a = history.shown("a", T0)
    assert (a["uptime"]["24h"], a["uptime"]["7d"]) == (None, 1.0)


def test_the_record_stays_within_its_byte_bound_at_the_worst() -> None:
    rec = CheckRecord()
    for t in range(int(T0) - 31 * DAY, int(T0) + 1, FINE):  # every bucket of both widths, every bin used
        for i in range(NBINS):
            rec.add(True, (BOUNDS_MS[i] - 1 if i < len(BOUNDS_MS) else 99_999) / 1000, t)
    d = rec.to_dict()
    assert (len(d["fine"]), len(d["coarse"])) == (24 * 3600 // FINE, 30 * 24 * 3600 // COARSE)
    assert all(len(b) == 3 + 2 * NBINS for b in d["fine"] + d["coarse"])
    # the counts as large as the fastest tick (0.1 s, broadcast.interval's minimum) makes them: 5 digits
    worst = {"v": 1, **{k: [[b[0], 36000, 36000, *[x for i in range(NBINS) for x in (i, 36000)]] for b in d[k]]
                        for k in ("fine", "coarse")}}
    assert len(orjson.dumps(worst)) <= MAX_RECORD_BYTES
    assert CheckRecord.from_dict(orjson.loads(orjson.dumps(d))).to_dict() == d


@pytest.mark.parametrize("bad", [{}, {"v": 2, "fine": [], "coarse": []}, {"v": 1, "fine": [[1, 2]], "coarse": []},
                                 {"v": 1, "fine": [[1, 3, 2]], "coarse": []},
                                 {"v": 1, "fine": [[1, 1, 2, NBINS, 1]], "coarse": []},
                                 {"v": 1, "fine": "x", "coarse": []}])
def test_a_damaged_record_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="not a health history record"):
        CheckRecord.from_dict(bad)


async def test_a_flush_merges_with_what_another_collector_stored() -> None:
    store = MemoryStore()
    a, b = HealthHistory(["api"], store=store), HealthHistory(["api"], store=store)
    await a.resume(T0 - 2 * DAY)
    a.record("api", False, None, T0 - 2 * DAY)
    await a.flush(T0 - 2 * DAY, force=True)
    await b.resume(T0)  # b takes over later: it reads a's buckets
    b.record("api", True, 0.05, T0)
    await a.flush(T0, force=True)  # a has nothing new: writes nothing
    await b.flush(T0, force=True)
    c = HealthHistory(["api"], store=store)
    await c.resume(T0)
    assert c.shown("api", T0)["uptime"]["7d"] == 0.5
