"""`hub demo` (what `make run` starts): real business data within a few ticks, nothing left running."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from tests.support import end_process, free_port, need_program
from tests.support.browser import chromium, open_page  # noqa: F401  (fixtures)
from tests.support.hubproc import ROOT

pytestmark = pytest.mark.timeout(180)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as r:
        return orjson.loads(r.read())


def _poll(pred: Any, *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = pred()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Demo:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.url = f"http://127.0.0.1:{port}"

    def snapshot(self) -> dict[str, Any] | None:
        return _get(self.url + "/api/metrics/snapshot")


@contextlib.contextmanager
def running_demo(directory: Path, *, interval: float | None = 1.0) -> Iterator[Demo]:
    """`hub demo` on a free port, its output in `directory`/demo.log; stopped with Ctrl-C at the end.
    `interval` None: the demo's own (what `make run` starts)."""
    need_program("prometheus")  # the demo runs without it, but then the system panel is empty
    port = free_port()
    log = directory / "demo.log"
    args = [] if interval is None else ["--interval", f"{interval:g}"]
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hub", "demo", "--port", str(port), *args],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    d = Demo(proc, port, log)
    try:
        _poll(lambda: _get(d.url + "/health"), timeout=60, what="the demo hub to answer")
        yield d
    finally:
        # Ctrl-C, as a user stops it: SIGKILL left its SecantusDB and Prometheus running whenever
        # test_ctrl_c_stops_every_child was not part of the run.
        end_process(proc, signal.SIGINT, timeout=30)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One demo shared by the tests that only read it (none of them stops it or reads its first ticks)."""
    with running_demo(tmp_path_factory.mktemp("demo")) as d:
        yield d


#: ticks whose log must be clean, at the demo's own interval (2 s, what `make run` starts; at 1 s each
#: query's deadline is 0.5 s, which a busy 2-core CI machine can overrun while the demo seeds and the
#: hub backfills): the start, the seed, the backfill, the warm-up fill of the business hours and the
#: first drains of the change stream; the simulator's first outage comes later (45 s at least)
CLEAN_TICKS = 12


@pytest.mark.quiet  # under a CPU hog a query can really time out, and the hub rightly warns
def test_demo_starts_without_a_warning_and_ctrl_c_stops_every_child(tmp_path: Path) -> None:
    """The first thing a newcomer sees, and the last. It used to log a business timeout, then "change
    stream cannot resume (Resume token namespace does not match ...); rebuilding all hours". Its own
    demo: the log read is that of the first ticks, and Ctrl-C stops it (the shared one must live on
    whatever order the tests run in)."""
    with running_demo(tmp_path, interval=None) as demo:
        demo_starts_clean(demo)
        ctrl_c_stops_every_child(demo)


def demo_starts_clean(demo: Demo) -> None:

    def served() -> int:
        snap = demo.snapshot()
        return snap["seq"] if snap and snap["seq"] >= CLEAN_TICKS else 0

    _poll(served, timeout=2 * CLEAN_TICKS + 60, what=f"{CLEAN_TICKS} ticks")
    snap = demo.snapshot()
    assert snap is not None and snap["sources"]["business"]["status"] == "ok", snap["sources"]
    lines = demo.log.read_text(errors="replace").splitlines()
    bad = [line for line in lines if re.search(r" (WARNING|ERROR|CRITICAL) |Traceback", line)]
    assert bad == [], "\n".join(lines[-40:])


def test_demo_shows_business_and_prometheus_data(demo: Demo) -> None:
    def business_total() -> int:
        snap = demo.snapshot()
        biz = snap and snap["data"]["business"]
        return biz["appointments"]["total"] if biz else 0

    assert _poll(business_total, timeout=30, what="non-empty business data") > 0
    snap = demo.snapshot()
    assert snap is not None
    assert snap["sources"]["business"]["status"] == "ok"
    assert snap["data"]["business"]["appointments"]["bySpecialty"]

    def backend_up() -> bool:
        s = demo.snapshot()
        system = s and s["data"]["system"]
        return bool(system) and any(r["metric"].get("job") == "healthcare-backend" and r["value"][1] == "1"
                                    for r in system["uptime"])

    _poll(backend_up, timeout=40, what="Prometheus to report the simulated backend up")
    assert demo.snapshot()["data"]["alerts"], "the demo's rules include an always-firing info alert"

    def slo() -> bool:  # the shipped booking-API SLO rules, on the simulator's status_code label
        s = demo.snapshot()
        figures = s and s["data"].get("slo")
        return bool(figures) and bool(figures.get("errorBudgetRemaining")) and bool(figures.get("burnRate"))

    _poll(slo, timeout=60, what="the booking API's SLO figures from the shipped rules")


def test_demo_screenshot(demo: Demo, open_page: Any, tmp_path: Path) -> None:  # noqa: F811
    """The README's picture: the dashboard on demo data (written to docs/ with HUB_SCREENSHOT=1)."""

    def full() -> bool:
        s = demo.snapshot()
        return bool(s and s["data"]["business"] and s["data"]["system"]
                    and s["data"]["system"]["requestRate"] and s["data"]["system"]["responseTime"])

    _poll(full, timeout=60, what="request rate and response time in Prometheus")
    watch = open_page(width=1920, height=1080)
    watch.page.goto(demo.url)
    _poll(lambda: watch.js("window.hubDebug && hubDebug.conn === 'live' && hubDebug.lastSeq > 0"),
          timeout=20, what="the page to go live")
    seq = watch.js("hubDebug.lastSeq")
    _poll(lambda: watch.js("hubDebug.lastSeq") >= seq + 2, timeout=20, what="two live ticks")
    shot = ROOT / "docs" / "dashboard.png" if os.environ.get("HUB_SCREENSHOT") == "1" else tmp_path / "d.png"
    watch.page.screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert watch.page_errors == []


def test_demo_runs_on_uvloop_when_it_is_installed(demo: Demo) -> None:
    # uvloop is a dependency wherever it installs, and `make run` (the demo) uses it like `hub serve`.
    expected = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    with urllib.request.urlopen(demo.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    assert re.search(rf'^hub_info{{.*loop="{expected}".*}} 1\.0$', text, re.M), text[:2000]


def ctrl_c_stops_every_child(demo: Demo) -> None:
    parent = psutil.Process(demo.proc.pid)
    children = parent.children(recursive=True)
    names = " ".join(" ".join(c.cmdline()) for c in children)
    assert "secantusd-py" in names and "prometheus" in names, names
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(timeout=30) == 0, demo.log.read_text()[-2000:]
    gone, alive = psutil.wait_procs(children, timeout=15)
    assert alive == [], [c.pid for c in alive]
