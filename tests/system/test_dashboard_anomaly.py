"""The page's bookings anomaly banner, the expected band and the SLO figures, in Chromium.

A real hub app (in-process, `serve_app`) serves the page; scripted sources stand in for MongoDB and
Prometheus so that each test sets `data.business` and `data.slo` exactly (a silent anomaly on demand).
The detectors and the SLO queries themselves are tested against real programs elsewhere
(test_business_anomaly.py, test_prometheus_rules.py).
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

import pytest

from hub.app import create_app
from hub.config import build_config
from hub.sources.base import Source, SourceResult
from tests.support.browser import PageWatch, chromium, open_page, wait_for  # noqa: F401  (fixtures)
from tests.system.test_dashboard import INTERVAL, _iso, assert_clean, serve_app

EVIL = '<img src=x onerror="window.__pwned=1">'


class Scripted(Source):
    """Fills its sections with whatever the test sets (`data`), as the named source would."""

    def __init__(self, name: str, sections: tuple[str, ...]) -> None:
        self.name = name
        self.sections = sections
        self.data: dict[str, Any] = dict.fromkeys(sections)

    async def collect(self, budget: float) -> SourceResult:
        return SourceResult(data=dict(self.data))


def business(anomaly: dict[str, Any] | None, expected: dict[str, Any] | None) -> dict[str, Any]:
    return {"timestamp": _iso(time.time()), "timeRange": "1h",
            "appointments": {"total": 12, "bySpecialty": [{"_id": "cardiology", "count": 12}],
                             "cancellationRate": 0.0, "averageBookingTime": 60.0, "patientSatisfaction": None},
            **({"expected": expected} if expected is not None else {}),
            **({"anomaly": anomaly} if anomaly is not None else {})}


def app_with(*sources: Source) -> Any:
    raw = {"server": {"host": "127.0.0.1"}, "broadcast": {"interval": INTERVAL, "heartbeat": 5.0},
           "sources": {"prometheus": {"enabled": False}, "business": {"enabled": False},
                       "health": {"enabled": False}}}
    return create_app(build_config(raw, environ={}), extra_sources=list(sources))


def banner(watch: PageWatch) -> dict[str, Any]:
    return watch.js("""{
        shown: !document.getElementById('anomaly').hidden,
        visible: document.getElementById('anomaly').getBoundingClientRect().height > 0,
        width: document.getElementById('anomaly').getBoundingClientRect().width,
        kind: document.getElementById('anomaly').dataset.kind || null,
        head: document.getElementById('anomaly-msg').textContent,
        detail: document.getElementById('anomaly-detail').textContent,
        reason: document.getElementById('anomaly-detail').title,
        stale: !document.getElementById('stale').hidden,
    }""")


def local_hm(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M")


def test_anomaly_banner_names_silent_and_low_and_goes_for_ok(open_page: Any) -> None:
    biz = Scripted("business", ("business",))
    since = time.time() - 60
    silent = {"state": "silent", "since": _iso(since), "observed": 3, "expected": 38.5,
              "minutes_since_last_booking": 25.4, "reason": "no booking for 25 min: P = 0.0002 < p " + EVIL}
    biz.data["business"] = business(silent, {"hour": 40, "observed": 3, "elapsed": 0.5, "weeks": 4})
    with serve_app(app_with(biz)) as url:
        watch = open_page()
        watch.page.goto(url)
        got = wait_for(lambda: (b := banner(watch))["shown"] and b, what="the anomaly banner")
        assert got["visible"] and got["width"] == 1920 and not got["stale"]   # full width, not the stale one
        assert got["kind"] == "silent"
        assert got["head"] == f"Bookings have stopped since {local_hm(since)}"
        assert got["detail"] == "3 booked in the last 60 min, 39 expected · last booking 25 min ago"
        assert got["reason"] == silent["reason"]   # as text, never parsed
        assert watch.js("window.__pwned") is None

        low = {"state": "low", "since": _iso(since), "observed": 9, "expected": 40.2,
               "minutes_since_last_booking": 2, "reason": "9 booked in 60 min: P(X <= 9) = 1e-9 < p"}
        biz.data["business"] = business(low, {"hour": 40, "observed": 9, "elapsed": 0.5, "weeks": 4})
        got = wait_for(lambda: (b := banner(watch))["kind"] == "low" and b, what="the low banner")
        assert got["head"] == f"Bookings are improbably low since {local_hm(since)}"
        assert got["detail"] == "9 booked in the last 60 min, 40 expected · last booking 2 min ago"

        ok = {"state": "ok", "since": _iso(since), "observed": 30, "expected": 40.2,
              "minutes_since_last_booking": 1, "reason": "ok"}
        biz.data["business"] = business(ok, {"hour": 40, "observed": 30, "elapsed": 0.5, "weeks": 4})
        wait_for(lambda: not banner(watch)["shown"], what="the banner gone for ok")
        assert not watch.js("document.documentElement.classList.contains('has-anomaly')")
        # A failed business source (null section) shows no banner either.
        biz.data["business"] = None
        wait_for(lambda: watch.js("!document.querySelector('#business .nodata').hidden"), what="business null")
        assert not banner(watch)["shown"]
        assert_clean(watch)


def test_no_banner_for_an_ok_snapshot(open_page: Any) -> None:
    biz = Scripted("business", ("business",))
    biz.data["business"] = business({"state": "ok", "since": _iso(time.time() - 3600), "observed": 35,
                                     "expected": 40.0, "minutes_since_last_booking": 0.5, "reason": "ok"},
                                    {"hour": 40, "observed": 20, "elapsed": 0.5, "weeks": 4})
    with serve_app(app_with(biz)) as url:
        watch = open_page()
        watch.page.goto(url)
        wait_for(lambda: watch.js("window.hubDebug && hubDebug.lastSeq >= 3"), what="three ticks on the page")
        assert banner(watch)["shown"] is False
        assert watch.js("document.getElementById('v-appts').dataset.raw") == "12"
        assert_clean(watch)


def test_bookings_chart_draws_the_expected_band(open_page: Any) -> None:
    biz = Scripted("business", ("business",))
    biz.data["business"] = business(None, {"hour": 40, "observed": 7, "elapsed": 0.25, "weeks": 3})
    with serve_app(app_with(biz)) as url:
        watch = open_page()
        watch.page.goto(url)

        def drawn() -> Any:
            c = watch.js("window.hubDebug && hubDebug.chartData('chart-appts')")
            return c if c and len(c["data"][0]) >= 2 else None

        chart = wait_for(drawn, what="the bookings chart with two points")
        labels = chart["labels"]
        assert labels == ["booked", "this hour", "expected by now", "likely high", "likely low"]
        col = {name: chart["data"][i + 1][-1] for i, name in enumerate(labels)}
        assert col["booked"] == 12 and col["this hour"] == 7
        assert col["expected by now"] == 10   # 40 an hour, a quarter of it passed
        assert col["likely high"] == pytest.approx(10 + 2 * math.sqrt(10))   # Poisson: ±2 standard deviations
        assert col["likely low"] == pytest.approx(10 - 2 * math.sqrt(10))
        # The band is filled between its two edges, which have no legend row.
        assert chart["bands"] == [[4, 5]]
        legend = watch.js("""[...document.querySelectorAll('#chart-appts .u-legend .u-series')]
            .filter((tr) => getComputedStyle(tr).display !== 'none')
            .map((tr) => tr.querySelector('.u-label').textContent)""")
        assert legend == ["Time", "booked", "this hour", "expected by now"]
        # Without history (hour null) there is nothing to expect: no band, the observed count still plots.
        biz.data["business"] = business(None, {"hour": None, "observed": 8, "elapsed": 0.3, "weeks": 0})
        chart = wait_for(lambda: (c := drawn()) and c["data"][2][-1] == 8 and c, what="a point without history")
        assert chart["data"][3][-1] is None and chart["data"][4][-1] is None and chart["data"][5][-1] is None
        assert_clean(watch)


def test_system_panel_shows_the_slo_figures(open_page: Any) -> None:
    prom = Scripted("prometheus", ("system", "slo"))
    ts = time.time()

    def series(value_by_slo: dict[str, str]) -> list[dict[str, Any]]:
        return [{"metric": {"job": "healthcare-backend", "slo": f"booking-api-{slo}"}, "value": [ts, v]}
                for slo, v in value_by_slo.items()]

    prom.data = {"system": {"uptime": [], "requestRate": [], "responseTime": []},
                 "slo": {"errorBudgetRemaining": series({"availability": "0.82", "latency": "-0.125"}),
                         "burnRate": series({"availability": "3.5", "latency": "0.4"})}}
    with serve_app(app_with(prom)) as url:
        watch = open_page()
        watch.page.goto(url)

        def rows() -> Any:
            return watch.js("""document.getElementById('slo-list').hidden ? null :
                [...document.querySelectorAll('#slo-list li')].map((li) => [li.dataset.slo,
                    [...li.querySelectorAll('.slo-fig')].map((s) => [s.dataset.key, s.textContent,
                                                                   s.classList.contains('over')])])""")

        got = wait_for(rows, what="the SLO rows")
        assert got == [
            ["availability", [["errorBudgetRemaining", "budget left 82.0 %", False],
                              ["burnRate", "burn rate 3.50\u00d7", True]]],
            ["latency", [["errorBudgetRemaining", "budget left -12.5 %", True],
                         ["burnRate", "burn rate 0.40\u00d7", False]]],
        ]
        assert watch.js("document.getElementById('h-slo').hidden") is False
        # Prometheus without the recording rules: every figure null, and the block goes.
        prom.data = {**prom.data, "slo": {"errorBudgetRemaining": None, "burnRate": None}}
        wait_for(lambda: rows() is None, what="the SLO block hidden")
        assert watch.js("document.getElementById('h-slo').hidden") is True
        assert_clean(watch)
