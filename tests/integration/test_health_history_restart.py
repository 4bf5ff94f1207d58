"""The uptime record survives a restart where `[state] dir` is set: the same figures after reopening it."""

from __future__ import annotations

from pathlib import Path

from hub.sources.health_history import HealthHistory
from hub.state.file_store import FileStore
from tests.support.components import make_health_source
from tests.support.http_targets import Target, serve
from tests.unit.test_health_history import T0, samples


async def test_a_restart_keeps_the_figures_of_a_30_day_record(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path))
    history = HealthHistory(["api", "web"], store=store)
    await history.resume(T0 - 35 * 86400)
    for t, up, latency in samples(7):  # a fake clock: 35 days of samples, no waiting
        history.record("api", up, latency, t)
        history.record("web", True, 0.02, t)
        if t % 86400 < 600:
            await history.flush(t, force=True)  # daily here (every minute in the hub): older writes merged
    before = {n: history.shown(n, T0) for n in ("api", "web")}
    await history.flush(T0, force=True)  # what close() does
    await store.close()

    reopened = FileStore(str(tmp_path))
    try:
        again = HealthHistory(["api", "web", "new"], store=reopened)
        await again.resume(T0)
        assert {n: again.shown(n, T0) for n in ("api", "web")} == before
        assert before["api"]["uptime"]["30d"] is not None and before["api"]["uptime"]["30d"] < 1.0
        assert again.shown("new", T0)["uptime"]["30d"] is None
    finally:
        await reopened.close()


async def test_the_health_source_continues_its_record_after_a_restart(tmp_path: Path) -> None:
    target = Target()
    async with serve(target.app) as url:
        store = FileStore(str(tmp_path))
        src = make_health_source({"backend": f"{url}/toggle"}, timeout=2.0, failures_before_down=1, store=store)
        try:
            for status in (200, 503, 200):
                target.toggle_status = status
                check = (await src.collect(5.0)).data["health"]["checks"]["backend"]
        finally:
            await src.close()  # writes the record
            await store.close()
        assert check["uptime"] | {"since": None} == {"24h": 0.666667, "7d": 0.666667, "30d": 0.666667,
                                                      "source": "hub", "since": None}
        assert check["p95_ms"]["24h"] is not None  # all three answered (the 503 too): latencies recorded

        store = FileStore(str(tmp_path))
        src = make_health_source({"backend": f"{url}/toggle"}, timeout=2.0, failures_before_down=1, store=store)
        try:
            target.toggle_status = 200
            after = (await src.collect(5.0)).data["health"]["checks"]["backend"]
        finally:
            await src.close()
            await store.close()
    assert (after["uptime"]["24h"], after["uptime"]["30d"], after["uptime"]["since"]) == (
        0.75, 0.75, check["uptime"]["since"])
