"""Issue 25's restart test in Chromium: a `hub serve` that a real Prometheus scrapes is restarted, and
the page opened 5 s later plots points from before the restart (backfilled from Prometheus), then
live ticks with contiguous `seq`; its status table shows the uptime figures Prometheus computes from
the hub's series it scraped (`self_job`), equal to its own answers to the per-check queries, and a
check that answers slowly as degraded, with the reason.

The configured queries read Prometheus's own series (it scrapes itself and the hub), so they have
data without a healthcare backend; `self_job` names the hub's job for its own process series.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import free_port
from tests.support.browser import PageWatch, chromium, open_page, wait_for  # noqa: F401  (fixtures)
from tests.support.http_targets import ThreadedService
from tests.support.hubproc import HubProcess
from tests.support.prom import PrometheusServer, start_prometheus
from tests.support.timing import WAIT

pytestmark = pytest.mark.timeout(120)

INTERVAL = 1.0
HISTORY = 120
#: the slow check's answer time and its slow_after: degraded on every tick, well within the check's
#: timeout (0.8 s, the tick's budget at a 1 s interval)
SLOW_DELAY = 0.3
SLOW_AFTER = 0.1
#: live ticks before the restart (and so about as many scrapes of the hub by Prometheus)
TICKS_BEFORE = 8
QUERIES = {
    "uptime": "up",
    "requestRate": "rate(prometheus_http_requests_total[1m])",
    "responseTime": "histogram_quantile(0.95, sum by (job, le) "
                    "(rate(prometheus_http_request_duration_seconds_bucket[1m])))",
}
#: the charts fed by the backfill: the queries' (rate, p95) and the hub's own series via self_job
BACKFILLED_CHARTS = ("chart-rate", "chart-p95", "chart-rss", "chart-cpu")
WINDOWS = ("24h", "7d", "30d")
#: what the page shows for a missing figure (an en dash)
DASH = "\u2013"



def fmt_uptime(f: float | None) -> str:
    """status.js fmtUptime: floored percentage, "100 %" only for a full window."""
    if f is None:
        return DASH
    if f >= 1:
        return "100 %"
    return f"{math.floor(max(0.0, f) * 10000) / 100:.2f} %"


def fmt_latency_ms(ms: float | None) -> str:
    """format.js fmtLatency of ms / 1000 (Math.round, not Python's half-even; "1.00 s" from 999.5 ms)."""
    if ms is None:
        return DASH
    sec = ms / 1000
    rounded = math.floor(sec * 1000 + 0.5)
    return f"{rounded} ms" if rounded < 1000 else f"{sec:.2f} s"


def iso_seconds(iso: str) -> float:
    """An ISO time (with Z) as epoch seconds."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[HubProcess, PrometheusServer]]:
    """A hub (state dir, three checks: itself, a slow service, a closed port) and Prometheus scraping it."""
    slow = ThreadedService(delay=SLOW_DELAY)
    port = free_port()
    prom = start_prometheus(tmp_path / "prometheus", targets={"hub": [f"127.0.0.1:{port}"]})
    (tmp_path / "state").mkdir()
    config = {
        "broadcast": {"interval": INTERVAL, "heartbeat": 5.0, "history_size": HISTORY},
        "state": {"dir": str(tmp_path / "state")},
        "sources": {
            "prometheus": {"url": prom.url, "timeout": 0.8, "queries": QUERIES, "self_job": "hub",
                           "backfill_timeout": 4.0},
            "business": {"enabled": False},
            "health": {"timeout": 0.8, "failures_before_down": 1, "checks": {
                "hub": f"http://127.0.0.1:{port}/health",
                "slow": {"url": slow.url, "slow_after": SLOW_AFTER},
                "gone": f"http://127.0.0.1:{free_port()}/health"}},
        },
    }
    hub = HubProcess(config, tmp_path, port=port)
    try:
        yield hub, prom
    finally:
        hub.stop()
        prom.kill()
        slow.close()


def _get(hub: HubProcess, path: str) -> Any:
    res = httpx.get(hub.url + path, timeout=5.0)
    res.raise_for_status()
    return res.json()


def _seq(hub: HubProcess) -> int:
    """The latest snapshot's seq; 0 before the first tick (503)."""
    res = httpx.get(hub.url + "/api/metrics/snapshot", timeout=5.0)
    if res.status_code == 503:
        return 0
    res.raise_for_status()
    return int(res.json()["seq"])


def _scrapes_of_hub(prom: PrometheusServer) -> int:
    got = prom.api("query", query='sum_over_time(up{job="hub"}[5m])')
    return int(float(got["result"][0]["value"][1])) if got["result"] else 0


def prom_figures(prom: PrometheusServer, check: str, at: str) -> dict[str, Any]:
    """Prometheus's own answers, at `at`, to the per-check uptime and p95 queries over each window."""
    sel = f'{{job="hub",check="{check}"}}'
    t = f"{iso_seconds(at):.3f}"
    out: dict[str, Any] = {"uptime": {}, "p95_ms": {}}
    for w in WINDOWS:
        up = prom.api("query", query=f"avg_over_time(hub_health_check_up{sel}[{w}])", time=t)["result"]
        p95 = prom.api("query", query=f"quantile_over_time(0.95, hub_health_check_latency_seconds{sel}[{w}])",
                       time=t)["result"]
        out["uptime"][w] = round(float(up[0]["value"][1]), 6)
        out["p95_ms"][w] = round(float(p95[0]["value"][1]) * 1000, 1)
    return out


def status_table(watch: PageWatch) -> dict[str, Any]:
    """The status table as shown, with the seq it shows, read in one evaluation."""
    return watch.js("""({
        seq: Number(document.getElementById('conn-seq').dataset.raw),
        hidden: document.getElementById('health-table').hidden,
        caption: (document.querySelector('#health-table caption') || {}).textContent,
        head: [...document.querySelectorAll('#health-table thead th')].map((th) => th.textContent),
        rows: [...document.querySelectorAll('#health-table tbody tr')].map((tr) => ({
            name: tr.dataset.check,
            state: tr.querySelector('.badge').textContent,
            badgeBg: getComputedStyle(tr.querySelector('.badge')).backgroundColor,
            uptime: [...tr.querySelectorAll('td.st-win .st-up')].map((e) => e.textContent),
            p95: [...tr.querySelectorAll('td.st-win .st-p95')].map((e) => e.textContent),
            cert: tr.querySelector('td.st-cert').textContent})),
        reasons: Object.fromEntries([...document.querySelectorAll('#health-list li.check')].map((li) => [
            li.dataset.check, li.querySelector('.reason') && li.querySelector('.reason').textContent])),
        badges: Object.fromEntries([...document.querySelectorAll('#health-list li.check')].map((li) => [
            li.dataset.check, li.querySelector('.badge').textContent])),
        heading: document.getElementById('v-health').textContent,
        width: document.documentElement.scrollWidth,
    })""")


def test_page_opened_after_a_restart_plots_the_past_then_live_seqs_and_the_status_table(
        stack: tuple[HubProcess, PrometheusServer], open_page: Any, tmp_path: Path) -> None:  # noqa: F811
    hub, prom = stack
    hub.start(timeout=WAIT)
    # Long enough for several scrapes of the hub (its own series) and of Prometheus (the queries).
    wait_for(lambda: _seq(hub) >= TICKS_BEFORE
             and _scrapes_of_hub(prom) >= TICKS_BEFORE, timeout=WAIT + TICKS_BEFORE * INTERVAL,
             interval=0.25, what=f"{TICKS_BEFORE} ticks and scrapes of the hub")
    hub.stop()
    stopped_at = time.time()
    # What Prometheus holds of the hub's own RSS before the restart, on the backfill's grid (step = interval).
    rss_before = prom.api("query_range", query='max(process_resident_memory_bytes{job="hub"})',
                          start=f"{stopped_at - HISTORY * INTERVAL:.3f}", end=f"{stopped_at:.3f}",
                          step=f"{INTERVAL:g}")["result"]
    assert rss_before, "Prometheus has no RSS of the hub from before the restart"
    expected_rss = len(rss_before[0]["values"])
    assert expected_rss >= TICKS_BEFORE - 2

    restarted = time.monotonic()
    hub.start(timeout=WAIT)
    # The scenario: the page is opened 5 s after the restart (not a wait for a condition).
    time.sleep(max(0.0, restarted + 5.0 - time.monotonic()))
    watch = open_page(width=1920, height=1080)
    watch.page.goto(hub.url + "/")
    wait_for(lambda: watch.js("window.hubDebug && hubDebug.conn === 'live' && hubDebug.lastSeq > 0"),
             timeout=WAIT, what="the page live")

    # Counted in the charts as uPlot plots them: values at times before the old hub stopped.
    counted: dict[str, int] = {}

    def past_plotted() -> dict[str, list[float]] | None:
        # The hub's own series has every sample Prometheus holds of it (the grids may differ by a step at
        # each end); a rate (requests, p95) needs two scrapes, so it may start a scrape or two later.
        p = watch.js("hubDebug.plottedTimes()") or {}
        counted.update({c: sum(t < stopped_at for t in p.get(c, [])) for c in BACKFILLED_CHARTS})
        rss = counted["chart-rss"]
        return p if rss >= expected_rss - 2 and all(n >= rss - 2 for n in counted.values()) else None

    try:
        plotted = wait_for(past_plotted, timeout=WAIT, what="charts with points from before the restart")
    except BaseException:
        # Say what the charts had and what the hub's backfill found (a rare failure in CI left neither).
        backfill = [line for line in hub.log_path.read_text(errors="replace").splitlines() if "backfill" in line]
        print(f"points before the restart per chart: {counted}; hub log: {backfill}")
        raise
    before = {c: sum(t < stopped_at for t in plotted[c]) for c in BACKFILLED_CHARTS}
    # The hub's own series: every sample Prometheus had of it (the grids may differ by a step at each end).
    assert before["chart-rss"] >= expected_rss - 2, (before, expected_rss)
    # Prometheus's own series go back further than the hub's first run.
    assert before["chart-rate"] >= before["chart-rss"] - 2, before

    # The backfilled points (no seq) first, then the new run's live seqs from 1, contiguous, and growing.
    seq0 = watch.js("hubDebug.lastSeq")
    wait_for(lambda: watch.js("hubDebug.lastSeq") >= seq0 + 3, timeout=WAIT, what="three more live ticks")
    seqs = watch.js("hubDebug.seqs()")
    filled = next(i for i, s in enumerate(seqs) if s is not None)
    assert filled >= max(before.values()) and all(s is None for s in seqs[:filled]), seqs
    live = seqs[filled:]
    assert live == list(range(1, len(live) + 1)) and live[-1] == watch.js("hubDebug.lastSeq") >= seq0 + 3, live
    assert watch.js("hubDebug.restarts") == 0   # one epoch on this page: the backfill moved nothing

    # The status table: every check's state, and the figures of the snapshot with the seq shown.
    shown = wait_for(lambda: (s := status_table(watch)) and not s["hidden"]
                     and {r["name"]: r["state"] for r in s["rows"]} == {"gone": "down", "slow": "degraded", "hub": "up"}
                     and "; Prometheus" in (s["caption"] or "") and s,
                     timeout=WAIT, what="the status table with a down, a degraded and an up check, from Prometheus")
    snap = next(i for i in _get(hub, "/api/metrics/history")["items"] if i.get("seq") == shown["seq"])
    checks = snap["data"]["health"]["checks"]
    assert shown["head"] == ["check", "24 h", "7 d", "30 d", "cert"]
    assert [r["name"] for r in shown["rows"]] == ["gone", "slow", "hub"]   # down, degraded, up
    for row in shown["rows"]:
        check = checks[row["name"]]
        assert row["state"] == check["state"]
        assert row["uptime"] == [fmt_uptime(check["uptime"][w]) for w in ("24h", "7d", "30d")], (row, check)
        assert row["p95"] == [fmt_latency_ms(check["p95_ms"][w]) for w in ("24h", "7d", "30d")], (row, check)
        assert row["cert"] == DASH and check["cert_days"] is None   # http checks
        assert all(re.fullmatch(r"100 %|\d{1,2}\.\d\d %", u) for u in row["uptime"]), row
    # Prometheus scrapes the hub (self_job): the figures are its answers to the per-check queries,
    # evaluated at the time they name (the hub's own record, kept across restarts, is the fallback:
    # tests/integration/test_health_history_restart.py, test_health_uptime_prom.py).
    at = checks["hub"]["uptime"]["at"]
    for name, check in checks.items():
        assert check["uptime"]["source"] == "prometheus" and check["uptime"]["at"] == at, check
        shown_figures = {"uptime": {w: check["uptime"][w] for w in WINDOWS}, "p95_ms": check["p95_ms"]}
        assert shown_figures == prom_figures(prom, name, at), (name, check)
    assert shown["caption"].startswith("uptime and p95 latency per window; Prometheus"), shown["caption"]
    # The closed port was never up; the slow service counts as up while degraded (a tick it missed
    # on a loaded machine would count as down, hence not exactly 1).
    assert checks["gone"]["uptime"]["24h"] == 0 and shown["rows"][0]["uptime"][0] == "0.00 %"
    assert checks["slow"]["uptime"]["24h"] > 0.5, checks["slow"]
    # The slow check's p95 is about its answer time (within the histogram's bins around 300 ms).
    assert 200 <= checks["slow"]["p95_ms"]["24h"] <= 750, checks["slow"]
    # Degraded is its own colour, and its reason is shown under the check.
    assert len({r["badgeBg"] for r in shown["rows"]}) == 3, shown["rows"]
    assert shown["badges"] == {"gone": "down", "slow": "degraded", "hub": "up"}
    assert shown["reasons"]["slow"] == checks["slow"]["error"]
    assert re.fullmatch(r"slow: answered in 0\.\d\d s \(slow_after 0\.1 s\)", shown["reasons"]["slow"]), shown
    assert shown["heading"] == "(1 up · 1 degraded · 1 down)"
    assert shown["width"] == 1920
    watch.page.screenshot(path=str(tmp_path / "restart.png"))
    assert watch.page_errors == [] and watch.csp_violations() == [] and watch.console_errors == []
