"""The dashboard page in a real browser (Debian's Chromium via Playwright) against a real `hub serve`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.app import create_app
from hub.config import SourcesConfig, build_config
from hub.feed import chart_point
from hub.sources.base import Source, SourceResult
from tests.support import free_port
from tests.support.browser import PageWatch, chromium, open_page, override_document_csp, wait_for  # noqa: F401  (fixtures)
from tests.support.http_targets import ThreadedService

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
DOCS = ROOT / "docs"
INTERVAL = 0.5
# Raw bytes of everything the page loads (uPlot included). 150 KiB until the page showed a signed-in
# person's name and a "Sign out" link (issue 23): +0.4 KB.
PAGE_BUDGET = 152 * 1024
# uPlot needs nothing beyond this: it styles elements through the CSSOM, which CSP leaves alone.
STRICT_CSP = "default-src 'self'"
# Chromium logs a refused WebSocket / fetch as a console error; only expected while a hub is down.
NETWORK_ERROR = re.compile(r"WebSocket connection to .* failed|Failed to load resource|ERR_CONNECTION_REFUSED")


class TcpProxy:
    """A TCP forwarder in front of the hub that can drop every connection and refuse new ones.

    It stands in for the network between browser and hub: cutting it is a real outage for the
    browser (its sockets close) while the hub keeps running.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.refusing = False
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return   # listener closed
            if self.refusing:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every proxied connection and refuse new ones."""
        self.refusing = True
        with self.lock:
            conns, self.conns = self.conns, []
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        """Accept and forward connections again."""
        self.refusing = False

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)   # wakes the accept thread on Linux
        self.listener.close()


def _has_source(name: str) -> bool:
    return importlib.util.find_spec(f"hub.sources.{name}") is not None


class Hub:
    """A `hub serve` subprocess on a fixed port with a temp config; restartable on the same port."""

    def __init__(self, tmp: Path, *, extra: str = "", prometheus_url: str | None = None,
                 port: int | None = None, health: str = "enabled = false") -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.dir = tmp
        self.config = tmp / "config.toml"
        # Prometheus (unless given) and MongoDB pointed at closed ports: those sources report `error`.
        # A source whose module is not in this tree yet is disabled instead.
        self.config.write_text(f"""
[server]
host = "127.0.0.1"
port = {self.port}

[broadcast]
interval = {INTERVAL}
heartbeat = 5.0

[sources.prometheus]
enabled = {str(_has_source("prometheus")).lower()}
url = "{prometheus_url or f"http://127.0.0.1:{free_port()}"}"
timeout = 0.4

[sources.business]
enabled = {str(_has_source("business")).lower()}
mongodb_uri = "mongodb://127.0.0.1:{free_port()}/healthcare"
timeout = 0.4
{"[sources.health]" if _has_source("health") else ""}
{health if _has_source("health") else ""}
{extra}
""")
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start and wait until /ready answers 200 (the first tick happened)."""
        env = {k: v for k, v in os.environ.items()
               if not (k.startswith("HUB_") and "__" in k) and k not in ("PROMETHEUS_URL", "MONGODB_URI")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.starts += 1
        log = open(self.dir / f"hub-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub", "serve", "--config", str(self.config)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"hub exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return httpx.get(self.url + "ready", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=20, what="hub /ready")

    def stop(self) -> None:
        """SIGTERM and wait (the hub closes clients with 1001 and exits)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def log(self) -> str:
        """The current run's log."""
        path = self.dir / f"hub-{self.starts}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def get(self, path: str, **kw: Any) -> Any:
        """GET `path` as JSON."""
        res = httpx.get(self.url + path.lstrip("/"), timeout=5.0, **kw)
        res.raise_for_status()
        return res.json()

    def snapshot_by_seq(self, seq: int) -> dict[str, Any]:
        """The snapshot with `seq` from /api/metrics/history."""
        for item in self.get("/api/metrics/history")["items"]:
            if item.get("seq") == seq:
                return item
        pytest.fail(f"seq {seq} is not in the hub's history")


@contextlib.contextmanager
def running_hub(tmp_path_factory: pytest.TempPathFactory, name: str, extra: str = "",
                prometheus_url: str | None = None, port: int | None = None,
                health: str = "enabled = false") -> Iterator[Hub]:
    """A started Hub (health checks off unless `health` configures them), stopped on exit."""
    hub = Hub(tmp_path_factory.mktemp(name), extra=extra, prometheus_url=prometheus_url, port=port,
              health=health)
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """One hub for the read-only tests of this module."""
    with running_hub(tmp_path_factory, "hub") as h:
        yield h


# Queries over Prometheus's own metrics (it scrapes itself), so the system panel has real
# results without a healthcare backend; one scrape target is a closed port, so one is down.
PROM_QUERIES = """
[sources.prometheus.queries]
uptime = 'up'
requestRate = 'rate(prometheus_http_requests_total[1m])'
responseTime = 'histogram_quantile(0.95, sum by (job, le) (rate(prometheus_http_request_duration_seconds_bucket[1m])))'
"""


@pytest.fixture(scope="module")
def prom_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A hub reading a real Prometheus that scrapes itself, the hub, and one dead target."""
    from tests.support.prom import start_prometheus

    hub_port = free_port()
    prom = start_prometheus(tmp_path_factory.mktemp("prometheus"), targets={
        "hub": [f"127.0.0.1:{hub_port}"], "healthcare-gone": [f"127.0.0.1:{free_port()}"]})
    try:
        with running_hub(tmp_path_factory, "prom-hub", PROM_QUERIES, prometheus_url=prom.url,
                         port=hub_port) as h:
            def system_ready() -> bool:
                snap = h.get("/api/metrics/snapshot")
                sys_ = snap["data"]["system"] or {}
                ups = {r["metric"].get("job"): r["value"][1] for r in sys_.get("uptime", [])}
                return (ups.get("hub") == "1" and ups.get("healthcare-gone") == "0"
                        and bool(sys_.get("requestRate")) and bool(snap["data"]["alerts"]))

            wait_for(system_ready, timeout=30, interval=0.25, what="Prometheus results in the hub")
            yield h
    finally:
        prom.kill()


def wait_ticks(hub: Hub, n: int) -> int:
    """Wait until the hub has produced at least `n` snapshots; return the latest seq."""
    return wait_for(lambda: (s := hub.get("/api/metrics/snapshot")["seq"]) >= n and s,
                    timeout=20, what=f"{n} ticks")


def load(watch: PageWatch, hub: Hub) -> Any:
    """Open the dashboard, wait until it shows live data; return the page's HTTP response."""
    res = watch.page.goto(hub.url)
    wait_for(lambda: watch.js("window.hubDebug && hubDebug.lastSeq > 0 && hubDebug.conn === 'live'"),
             what="the page to show live data")
    return res


def shown(watch: PageWatch) -> dict[str, Any]:
    """What the page shows, read in one evaluation so all values belong to the same seq."""
    return watch.js("""{
        seq: Number(document.getElementById('conn-seq').dataset.raw),
        conn: document.getElementById('conn-state').textContent,
        age: document.getElementById('conn-age').textContent,
        rss: document.getElementById('v-rss').dataset.raw,
        rssText: document.getElementById('v-rss').textContent,
        uptime: document.getElementById('v-uptime').dataset.raw,
        conns: document.getElementById('v-conns').dataset.raw,
        sources: Object.fromEntries([...document.querySelectorAll('#sources li')].map((li) => [
            li.dataset.source,
            {status: li.querySelector('.badge').textContent, error: li.querySelector('.src-error').textContent}])),
        nodata: Object.fromEntries([...document.querySelectorAll('section.panel')].map((s) => [
            s.id, s.querySelector('.nodata').hidden ? null : s.querySelector('.nodata').textContent])),
    }""")


def assert_clean(watch: PageWatch, *, allow_network_errors: bool = False) -> None:
    """No uncaught exceptions, no CSP violations, no console errors (bar expected network ones)."""
    assert watch.page_errors == []
    assert watch.csp_violations() == []
    errors = [e for e in watch.console_errors if not (allow_network_errors and NETWORK_ERROR.search(e))]
    assert errors == []


# ----------------------------------------------------------------------------- static checks


def test_page_weight_and_markup_safety() -> None:
    modules = sorted(WEB.glob("*.js"))
    assert {m.name for m in modules} >= {"app.js", "connection.js", "charts.js", "panels.js", "health.js"}
    files = [WEB / "index.html", WEB / "style.css", WEB / "favicon.svg",
             WEB / "vendor" / "uPlot.iife.min.js", WEB / "vendor" / "uPlot.min.css", *modules]
    total = sum(f.stat().st_size for f in files)
    assert total < PAGE_BUDGET, f"page weight {total} bytes is over {PAGE_BUDGET}"
    for module in modules:
        js = module.read_text()
        # No HTML sink at all, so no server data can ever be parsed as markup.
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                     "new Function", "createContextualFragment", "DOMParser", "srcdoc"):
            assert sink not in js, f"{module.name} uses {sink}"
        # Every import is a sibling module served by the hub (no CDN, no bare specifier to resolve).
        for spec in re.findall(r"""\bfrom\s+["']([^"']+)["']""", js):
            assert re.fullmatch(r"\./[a-z]+\.js", spec) and (WEB / spec[2:]).is_file(), f"{module.name}: {spec}"
    html = (WEB / "index.html").read_text()
    assert "<style" not in html and " style=" not in html, "inline styles are blocked by the CSP"
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None, "inline scripts are blocked by the CSP"
    assert re.search(r"\son[a-z]+=", html) is None, "inline event handlers are blocked by the CSP"
    assert re.search(r'<script type="module" src="app.js">', html), "app.js is the page's one module entry"
    pinned = re.search(r"uPlot \(v([\d.]+)\)", (WEB / "vendor" / "uPlot.iife.min.js").read_text()[:200])
    assert pinned and pinned.group(1) in (WEB / "vendor" / "README.md").read_text()


# ----------------------------------------------------------------------------- against a real hub


def test_history_fills_charts_on_first_paint(hub: Hub, open_page: Any) -> None:
    before = wait_ticks(hub, 4)
    watch = open_page()
    watch.page.goto(hub.url)
    first = wait_for(lambda: watch.js("window.hubDebug && hubDebug.lastSeq > 0 && "
                                      "{batch: hubDebug.firstBatch, lengths: hubDebug.seriesLengths()}"),
                     what="the first data")
    # The first message was the history, not one snapshot, and every chart drew all of it at once.
    assert first["batch"] >= before
    assert len(first["lengths"]) == 5
    assert all(n >= first["batch"] > 1 for n in first["lengths"].values()), first
    assert_clean(watch)


def test_live_values_are_those_of_the_latest_seq_and_follow_ticks(hub: Hub, open_page: Any) -> None:
    watch = open_page()
    load(watch, hub)
    now = shown(watch)
    assert now["conn"] == "live"
    snap = hub.snapshot_by_seq(now["seq"])
    app = snap["data"]["application"]
    assert int(now["rss"]) == app["memoryUsage"]["rss"]
    assert now["rssText"] == f"{app['memoryUsage']['rss'] / 1048576:.1f} MiB"
    assert float(now["uptime"]) == app["uptime"]
    assert int(now["conns"]) == app["activeConnections"]
    # A new tick replaces them with the next snapshot's values.
    later = wait_for(lambda: (s := shown(watch))["seq"] > now["seq"] and s, what="a new tick on the page")
    snap2 = hub.snapshot_by_seq(later["seq"])
    assert float(later["uptime"]) == snap2["data"]["application"]["uptime"] > float(now["uptime"])
    assert int(later["rss"]) == snap2["data"]["application"]["memoryUsage"]["rss"]
    assert later["conn"] == "live"
    assert later["age"] == "updated just now"
    # Live updates were appended to the charts, each seq once.
    seqs = watch.js("hubDebug.seqs()")
    assert seqs == sorted(set(seqs)) and later["seq"] in seqs
    assert_clean(watch)


def test_dark_colour_scheme(hub: Hub, open_page: Any) -> None:
    watch = open_page(width=1366, height=768, color_scheme="dark")
    load(watch, hub)
    assert watch.js("getComputedStyle(document.body).backgroundColor") == "rgb(15, 20, 26)"
    assert watch.js("getComputedStyle(document.body).color") == "rgb(230, 235, 241)"
    assert_clean(watch)


def test_source_badges_show_status_and_error(hub: Hub, open_page: Any) -> None:
    watch = open_page()
    load(watch, hub)
    now = shown(watch)
    snap = hub.snapshot_by_seq(now["seq"])
    for name, src in snap["sources"].items():
        assert now["sources"][name]["status"] == src["status"]
        if src["error"]:
            assert src["error"] in now["sources"][name]["error"]
    assert now["sources"]["process"]["status"] == "ok"
    assert now["nodata"]["process"] is None
    # Prometheus and MongoDB are unreachable (or not built yet: disabled); the panels say so.
    prom, biz = snap["sources"]["prometheus"], snap["sources"]["business"]
    for panel, src, name in (("traffic", prom, "prometheus"), ("targets", prom, "prometheus"),
                             ("alerts", prom, "prometheus"), ("business", biz, "business")):
        if src["status"] == "error":
            assert src["error"], f"{name} reports error without a message"
            assert now["nodata"][panel] == f"no data — {name}: {src['error']}"
        else:
            assert src["status"] == "disabled"
            assert now["nodata"][panel] == f"no data — {name}: disabled"
    assert_clean(watch)


def test_stale_when_ticks_stop_and_live_again(hub: Hub, open_page: Any) -> None:
    watch = open_page()
    load(watch, hub)
    assert hub.proc is not None
    assert watch.js("document.getElementById('stale').hidden") is True
    hub.proc.send_signal(signal.SIGSTOP)   # the socket stays open, but nothing arrives
    try:
        wait_for(lambda: watch.js("hubDebug.conn") == "stale", timeout=6, what="the stale badge")
        # The desk view has the banner too; the socket is open, so the plan is the watchdog's.
        banner = watch.js("[document.getElementById('stale').hidden, document.getElementById('stale-msg').textContent, "
                          "document.getElementById('stale-plan').textContent]")
    finally:
        hub.proc.send_signal(signal.SIGCONT)
    assert banner[0] is False and re.fullmatch(r"No data since \d\d:\d\d:\d\d, reconnecting…", banner[1]), banner
    assert re.fullmatch(r"the connection is open but silent: a new one in \d+ s", banner[2]), banner
    wait_for(lambda: watch.js("hubDebug.conn") == "live", timeout=10, what="live again")
    assert watch.js("hubDebug.connects") == 1   # same socket, no reconnect
    assert watch.js("document.getElementById('stale').hidden") is True
    assert_clean(watch)


def test_a_page_opened_after_a_restart_learns_the_interval_from_backfilled_points(hub: Hub, open_page: Any) -> None:
    """Backfilled points (no seq, one range step apart) and a single live snapshot: the page knows the
    interval at once, so its stale banner would come after 2 intervals, not after 2 x the 10 s default
    (the hog run of CI caught a kiosk page that waited 20 s: it had only backfilled points and one tick).

    A mocked /ws: the exact history a hub sends 1 s after a restart with backfill, on demand.
    """
    template = hub.get("/api/metrics/snapshot")
    start = time.time() - 30

    def item(seq: int | None, t: float) -> dict[str, Any]:
        ts = _iso(t)
        head: dict[str, Any] = {"seq": seq} if seq is not None else {"backfill": True}
        body = {k: v for k, v in template.items() if k not in ("seq", "timestamp", "point")}
        return {**body, **head, "timestamp": ts, "point": chart_point(seq, ts, template["data"])}

    def server(ws: Any) -> None:
        items = [item(None, start + 2.0 * i) for i in range(10)] + [item(1, start + 25.0)]
        ws.send(json.dumps({"type": "history", "items": items}))

    watch = open_page()
    watch.page.route_web_socket(re.compile(r"/ws\b"), server)
    watch.page.goto(hub.url)
    wait_for(lambda: watch.js("window.hubDebug && hubDebug.lastSeq") == 1, what="the history")
    assert watch.js("hubDebug.interval") == 2.0


def test_banner_tells_a_silent_socket_from_a_hub_that_answers_without_data(hub: Hub, open_page: Any) -> None:
    """The stale banner says what the page does: a silent socket is replaced; one that answers stays.

    A mocked /ws: no real hub can be made to stop its ticks yet answer pings, on demand.
    """
    template = hub.get("/api/metrics/snapshot")
    start = time.time() - 10

    def snap(seq: int) -> dict[str, Any]:
        ts = _iso(start + seq * 0.5)
        return {**template, "seq": seq, "timestamp": ts, "point": chart_point(seq, ts, template["data"])}

    def server(ws: Any) -> None:
        ws.send(json.dumps({"type": "history", "items": [snap(i) for i in range(1, 21)]}))
        ws.on_message(lambda m: ws.send(json.dumps({"type": "pong"})) if json.loads(m).get("type") == "ping" else None)

    watch = open_page()
    watch.page.route_web_socket(re.compile(r"/ws\b"), server)
    watch.page.goto(hub.url)
    wait_for(lambda: watch.js("window.hubDebug && hubDebug.lastSeq") == 20, what="the history")
    assert watch.js("hubDebug.interval") == 0.5
    # No data after the history: silent for 2 intervals, then the watchdog's ping gets its pong.
    silent = wait_for(lambda: (t := watch.js("document.getElementById('stale').hidden ? '' : "
                                             "document.getElementById('stale-plan').textContent")) and t,
                      what="the banner")
    assert re.fullmatch(r"the connection is open but silent: a new one in \d+ s", silent), silent
    wait_for(lambda: watch.js("document.getElementById('stale-plan').textContent") == "the hub answers, but sends no data",
             what="the banner after the pong")
    assert watch.js("hubDebug.conn") == "stale" and watch.js("hubDebug.connects") == 1
    assert_clean(watch)


def test_offline_badge_then_live_again(hub: Hub, open_page: Any) -> None:
    watch = open_page()
    load(watch, hub)
    ctx = watch.page.context
    seq0 = watch.js("hubDebug.lastSeq")
    ctx.set_offline(True)
    try:
        wait_for(lambda: watch.js("hubDebug.conn") == "offline", timeout=5, what="the offline badge")
        wait_ticks(hub, seq0 + 3)   # the hub goes on while the browser is offline
    finally:
        ctx.set_offline(False)
    wait_for(lambda: watch.js("hubDebug.conn") == "live" and watch.js("hubDebug.lastSeq") >= seq0 + 3,
             timeout=10, what="live again after going online")
    seqs = watch.js("hubDebug.seqs()")
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), "a gap was left in the charts"
    assert_clean(watch, allow_network_errors=True)


def test_network_cut_reconnects_with_backoff_and_backfills_the_gap(hub: Hub, open_page: Any) -> None:
    with TcpProxy(hub.port) as proxy:
        watch = open_page()
        watch.page.goto(proxy.url)
        wait_for(lambda: watch.js("window.hubDebug && hubDebug.conn === 'live'"), what="live through the proxy")
        seq0 = watch.js("hubDebug.lastSeq")
        proxy.cut()   # the hub keeps ticking; the browser loses its connection
        wait_for(lambda: watch.js("hubDebug.conn") == "reconnecting", timeout=5, what="the reconnecting badge")
        wait_ticks(hub, seq0 + 6)
        wait_for(lambda: watch.js("hubDebug.attempt") >= 2, timeout=10, what="backing off")
        proxy.restore()
        # The browser's `online` event resets the backoff and reconnects at once.
        watch.page.context.set_offline(True)
        watch.page.context.set_offline(False)
        wait_for(lambda: watch.js("hubDebug.connects === 2 && hubDebug.conn === 'live'"),
                 timeout=10, what="live again after the cut")
        assert watch.js("hubDebug.attempt") == 0
        assert watch.js("hubDebug.restarts") == 0
        seqs = watch.js("hubDebug.seqs()")
        assert seqs[-1] >= seq0 + 6
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), "the gap was not backfilled from history"
        assert_clean(watch, allow_network_errors=True)


def test_hub_restart_reconnecting_then_live_without_reload(tmp_path_factory: pytest.TempPathFactory,
                                                           open_page: Any) -> None:
    with running_hub(tmp_path_factory, "restart") as own:
        watch = open_page()
        load(watch, own)
        watch.page.evaluate("() => { window.__noReload = 1; }")
        own.stop()
        wait_for(lambda: watch.js("hubDebug.conn") == "reconnecting", timeout=5, what="the reconnecting badge")
        own.start()
        wait_for(lambda: watch.js("hubDebug.conn") == "live", timeout=40, what="live after the restart")
        assert watch.js("window.__noReload") == 1, "the page was reloaded"
        assert watch.js("hubDebug.restarts") == 1
        # The new hub starts again at seq 1; the page follows it instead of waiting for seq > before.
        now = wait_for(lambda: (s := shown(watch))["seq"] >= 2 and s, what="new-hub ticks")
        snap = own.snapshot_by_seq(now["seq"])
        assert int(now["rss"]) == snap["data"]["application"]["memoryUsage"]["rss"]
        seqs = watch.js("hubDebug.seqs()")
        if "epoch" in snap:
            # A hub with epochs says the sequence restarted: the old hub's points are gone.
            assert watch.js("hubDebug.epoch") == snap["epoch"]
            new = seqs
        else:
            # An older hub: the page guessed the restart and kept the old points before the new ones.
            new = seqs[max((i for i in range(1, len(seqs)) if seqs[i] < seqs[i - 1]), default=0):]
        assert new == list(range(1, len(new) + 1)), "the new hub's history was not backfilled"
        assert_clean(watch, allow_network_errors=True)


def test_token_prompt_then_subprotocol_auth(tmp_path_factory: pytest.TempPathFactory, open_page: Any) -> None:
    token = "wall-" + hashlib.sha256(b"dashboard test").hexdigest()[:24]
    digest = "sha256:" + hashlib.sha256(token.encode()).hexdigest()
    extra = f'\n[auth]\ntokens = [{{name = "wall", hash = "{digest}"}}]\n'
    with running_hub(tmp_path_factory, "auth", extra) as own:
        watch = open_page()
        prompts: list[str] = []

        def answer(dialog: Any) -> None:
            prompts.append(dialog.type)
            dialog.accept(token)

        watch.page.on("dialog", answer)
        load(watch, own)
        assert prompts == ["prompt"]
        assert watch.page.evaluate("() => sessionStorage.getItem('hub.token')") == token
        # A reload reuses the stored token: no second prompt.
        watch.page.reload()
        wait_for(lambda: watch.js("window.hubDebug && hubDebug.conn === 'live'"), what="live after reload")
        assert prompts == ["prompt"]
        # The 401 of the first probe is the only error the console may show.
        watch.console_errors[:] = [e for e in watch.console_errors if "401" not in e]
        assert_clean(watch)

        # A wrong token: one automatic prompt only, then a button to try again.
        other = open_page()
        answers = iter(["wrong-token", token])
        other.page.on("dialog", lambda d: d.accept(next(answers)))
        other.page.goto(own.url)
        wait_for(lambda: other.js("window.hubDebug && hubDebug.conn") == "unauthorized", what="unauthorized")
        assert other.page.is_visible("#auth-btn")
        assert other.page.evaluate("() => sessionStorage.getItem('hub.token')") is None
        other.page.click("#auth-btn")
        wait_for(lambda: other.js("hubDebug.conn") == "live", what="live after entering the right token")
        assert other.page.is_hidden("#auth")


def test_bounded_window_dedup_and_text_only_rendering(hub: Hub, open_page: Any) -> None:
    """Over 360 snapshots, duplicates and markup in data, fed through a mocked /ws.

    A mock server here: a real hub needs minutes of ticks to exceed the 360-point window and
    cannot be made to emit duplicate seqs or HTML in an alert summary on demand.
    """
    template = hub.get("/api/metrics/snapshot")
    evil = '<img src=x onerror="window.__pwned=1">'
    start = time.time() - 400 * 10

    def snap(seq: int) -> dict[str, Any]:
        ts = datetime.fromtimestamp(start + seq * 10, UTC).isoformat(timespec="milliseconds")
        ts = ts.replace("+00:00", "Z")
        data = {**template["data"], "alerts": [
            {"name": "Evil" + evil, "state": "firing", "severity": "critical",
             "activeAt": ts, "summary": evil, "labels": {}}]}
        # The point a hub sends with each snapshot, by the hub's own (and only) definition.
        return {**template, "seq": seq, "timestamp": ts, "data": data, "point": chart_point(seq, ts, data),
                "sources": {**template["sources"], "business": {
                    "status": "error", "latency_ms": 1.0, "collected_at": ts, "error": evil}}}

    def server(ws: Any) -> None:
        ws.send(json.dumps({"type": "history", "items": [snap(i) for i in range(1, 361)]}))
        for seq in [*range(361, 381), 380, 10, *range(381, 401)]:
            ws.send(json.dumps({"type": "metrics_update", **snap(seq)}))

    watch = open_page()
    watch.page.route_web_socket(re.compile(r"/ws\b"), server)
    watch.page.goto(hub.url)
    wait_for(lambda: watch.js("window.hubDebug && hubDebug.lastSeq") == 400, what="seq 400 on the page")
    assert watch.js("hubDebug.points") == 360
    assert set(watch.js("hubDebug.seriesLengths()").values()) == {360}
    assert watch.js("hubDebug.seqs()") == list(range(41, 401))   # oldest dropped, duplicates ignored
    assert watch.js("hubDebug.restarts") == 0
    # Markup in data is shown as text, never parsed.
    assert watch.js("document.querySelector('#alert-list .summary').textContent") == evil
    assert watch.js("document.querySelector('#sources li[data-source=business] .src-error').textContent") == evil
    assert watch.js("document.querySelectorAll('main img, header img').length") == 0
    assert watch.js("window.__pwned") is None
    assert_clean(watch)


def test_system_panel_from_real_prometheus(prom_hub: Hub, open_page: Any) -> None:
    watch = open_page()
    load(watch, prom_hub)
    page = watch.js("""{
        seq: Number(document.getElementById('conn-seq').dataset.raw),
        targets: [...document.querySelectorAll('#target-list li')].map((li) => [
            li.querySelector('.name').textContent, li.querySelector('.badge').textContent]),
        down: Number(document.getElementById('v-targets').dataset.raw),
        rate: Number(document.getElementById('v-rate').dataset.raw),
        alerts: [...document.querySelectorAll('#alert-list li.alert')].map((li) => [
            li.querySelector('.name').textContent, li.className]),
        nodata: document.querySelector('#traffic .nodata').hidden,
        rateSeries: window.hubDebug.seriesLengths()['chart-rate'],
    }""")
    snap = prom_hub.snapshot_by_seq(page["seq"])
    system, alerts = snap["data"]["system"], snap["data"]["alerts"]
    assert snap["sources"]["prometheus"]["status"] == "ok"
    assert page["nodata"] is True
    # Targets: every `up` series, the dead one first and marked down.
    up = {r["metric"]["instance"]: r["value"][1] == "1" for r in system["uptime"]}
    assert sorted(page["targets"]) == sorted([inst, "up" if ok else "down"] for inst, ok in up.items())
    assert page["targets"][0][1] == "down" and page["down"] == sum(not ok for ok in up.values()) == 1
    # Request rate: the sum of the query's series for that seq.
    total = sum(float(r["value"][1]) for r in system["requestRate"])
    assert page["rate"] == pytest.approx(total)
    assert page["rateSeries"] > 1
    # Alerts from Prometheus's rules, coloured by severity.
    assert [a["name"] for a in alerts] == [name for name, _ in page["alerts"]]
    classes = dict(page["alerts"])
    assert "sev-critical" in classes["HubTestAlwaysFiring"] and "state-firing" in classes["HubTestAlwaysFiring"]
    assert "sev-info" in classes["HubTestAlwaysPending"] and "state-pending" in classes["HubTestAlwaysPending"]
    assert_clean(watch)


def test_strict_csp_and_screenshot(prom_hub: Hub, open_page: Any, tmp_path: Path) -> None:
    """Served under `default-src 'self'` alone, the page draws everything; takes a screenshot.

    The README's picture comes from tests/test_demo.py (demo data); this one stays in tmp_path.
    """
    watch = open_page(width=1920, height=1080)
    override_document_csp(watch, STRICT_CSP)
    wait_ticks(prom_hub, 12)
    res = load(watch, prom_hub)
    assert res is not None and res.headers["content-security-policy"] == STRICT_CSP
    assert watch.js("hubDebug.firstBatch") > 1
    assert watch.js("document.querySelectorAll('.uplot canvas').length") >= 5
    # One live tick after the history, so the page's own connection is counted on screen.
    seq = watch.js("hubDebug.lastSeq")
    wait_for(lambda: watch.js("hubDebug.lastSeq") >= seq + 2, what="two live ticks")
    assert int(watch.js("document.getElementById('v-conns').dataset.raw")) >= 1
    shot = tmp_path / "dashboard.png"
    watch.page.screenshot(path=str(shot))
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert_clean(watch)


# ----------------------------------------------------------------------------- modules, epochs, health


def test_modules_are_served_as_javascript(hub: Hub) -> None:
    # Chromium refuses a module script served with a non-JavaScript MIME type (and nosniff is on).
    for module in sorted(WEB.glob("*.js")):
        res = httpx.get(hub.url + module.name, timeout=5.0)
        assert res.status_code == 200, module.name
        assert res.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_new_epoch_drops_old_points_and_takes_the_new_sequence(hub: Hub, open_page: Any) -> None:
    """The hub's `epoch` decides what a restart is, also where seq alone cannot tell.

    A mocked /ws: no real hub can be made to restart with a seq above the page's last one, or
    to change epoch on an open socket (a cluster failover), on demand.
    """
    template = hub.get("/api/metrics/snapshot")
    start = time.time() - 3600

    def snap(seq: int, epoch: str, at: float) -> dict[str, Any]:
        data = {**template["data"], "application": {**template["data"]["application"], "uptime": float(seq)}}
        ts = _iso(start + at)
        return {**template, "seq": seq, "epoch": epoch, "timestamp": ts, "data": data,
                "point": chart_point(seq, ts, data)}

    sockets: list[Any] = []

    def server(ws: Any) -> None:
        sockets.append(ws)
        if len(sockets) == 1:   # hub A: history then live ticks
            ws.send(json.dumps({"type": "history", "items": [snap(i, "A", i) for i in range(1, 21)]}))
            for seq in range(21, 26):
                ws.send(json.dumps({"type": "metrics_update", **snap(seq, "A", seq)}))
        else:                   # hub B after a restart, already past A's seq: seq alone looks continuous
            ws.send(json.dumps({"type": "history", "items": [snap(i, "B", 100 + i) for i in range(31, 35)]}))

    watch = open_page()
    watch.page.route_web_socket(re.compile(r"/ws\b"), server)
    watch.page.goto(hub.url)
    wait_for(lambda: watch.js("window.hubDebug && hubDebug.lastSeq") == 25, what="seq 25 of epoch A")
    assert watch.js("hubDebug.epoch") == "A" and watch.js("hubDebug.points") == 25
    sockets[0].close(code=1001, reason="going away")
    wait_for(lambda: watch.js("hubDebug.epoch") == "B", what="epoch B after the reconnect")
    assert watch.js("hubDebug.seqs()") == [31, 32, 33, 34]   # A's points dropped, not glued to B's
    assert set(watch.js("hubDebug.seriesLengths()").values()) == {4}
    assert watch.js("hubDebug.restarts") == 1
    assert watch.js("document.getElementById('conn-seq').dataset.raw") == "34"
    # On an open socket (another replica took over): a lower seq of a new epoch is fresh, not old.
    sockets[1].send(json.dumps({"type": "metrics_update", **snap(2, "C", 200)}))
    wait_for(lambda: watch.js("hubDebug.epoch") == "C", what="epoch C on the same socket")
    for seq in (3, 3, 4):   # a duplicate within the epoch is still ignored
        sockets[1].send(json.dumps({"type": "metrics_update", **snap(seq, "C", 198 + seq)}))
    wait_for(lambda: watch.js("hubDebug.lastSeq") == 4, what="seq 4 of epoch C")
    assert watch.js("hubDebug.seqs()") == [2, 3, 4]
    assert watch.js("hubDebug.restarts") == 2 and watch.js("hubDebug.connects") == 2
    assert watch.js("document.getElementById('v-uptime').dataset.raw") == "4"
    assert_clean(watch)


class ScriptedHealth(Source):
    """Fills `data.health` with whatever the test sets: exact ages, latencies and reasons on demand."""

    name = "health"
    sections = ("health",)

    def __init__(self) -> None:
        self.health: dict[str, Any] | None = None
        self.error: str | None = None

    async def collect(self, budget: float) -> SourceResult:
        # A failed probe run: the section is null and the source says why (as a failed source does).
        return SourceResult(data={"health": self.health}, error=self.error)


@contextlib.contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Serve an aiohttp app (the real hub app, built in-process) on a free port in a thread; yield its URL."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    port = free_port()
    runner = web.AppRunner(app)
    up = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        except BaseException as exc:  # reported to the test below
            failed.append(exc)
            up.set()
            return
        up.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    up.wait(20)
    if failed:
        raise failed[0]
    url = f"http://127.0.0.1:{port}/"
    wait_for(lambda: httpx.get(url + "ready", timeout=1.0).status_code == 200, timeout=20, what="/ready")
    try:
        yield url
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(15)


def _health_config() -> Any:
    raw: dict[str, Any] = {"server": {"host": "127.0.0.1"}, "broadcast": {"interval": INTERVAL, "heartbeat": 5.0},
                           "sources": {"prometheus": {"enabled": False}, "business": {"enabled": False}}}
    if "health" in {f.name for f in dataclasses.fields(SourcesConfig)}:
        raw["sources"]["health"] = {"enabled": False}   # the test source stands in for it
    return build_config(raw, environ={})


def health_rows(watch: PageWatch) -> list[dict[str, Any]]:
    """The Health panel's rows as shown."""
    return watch.js("""[...document.querySelectorAll('#health-list li.check')].map((li) => ({
        name: li.querySelector('.name').textContent,
        badge: li.querySelector('.badge').textContent,
        since: li.querySelector('.since') ? li.querySelector('.since').textContent : null,
        latency: li.querySelector('.latency') ? li.querySelector('.latency').textContent : null,
        reason: li.querySelector('.reason') ? li.querySelector('.reason').textContent : null,
    }))""")


def test_health_panel_shows_checks_down_with_reason_and_up(open_page: Any) -> None:
    evil = 'connection refused <img src=x onerror="window.__pwned=1">'
    source = ScriptedHealth()
    now = time.time()
    source.health = {"healthy": False, "details": {"frontend": False, "backend": True, "database": False},
                     "checks": {
                         "frontend": {"up": False, "status": 503, "latency_ms": 12.3, "error": "HTTP 503",
                                      "since": _iso(now - 95), "failures": 4},
                         "backend": {"up": True, "status": 200, "latency_ms": 41.7, "error": None,
                                     "since": _iso(now - 3700), "failures": 0},
                         "database": {"up": False, "status": None, "latency_ms": None, "error": evil,
                                      "since": _iso(now - 20), "failures": 3}}}
    with serve_app(create_app(_health_config(), extra_sources=[source])) as url:
        watch = open_page()
        watch.page.goto(url)
        wait_for(lambda: watch.js("window.hubDebug && hubDebug.conn === 'live'"), what="live")
        rows = wait_for(lambda: (r := health_rows(watch)) and r, what="health rows")
        # Down first (by name), then up; each with its age, latency and, when down, the reason.
        assert [(r["name"], r["badge"]) for r in rows] == [("database", "down"), ("frontend", "down"),
                                                           ("backend", "up")]
        database, frontend, backend = rows
        assert frontend["reason"] == "HTTP 503" and frontend["latency"] == "latency 12 ms"
        assert re.fullmatch(r"for 1 min 3[4-9] s", frontend["since"]), frontend
        assert database["reason"] == evil and database["latency"] is None   # markup shown as text
        assert backend["reason"] is None and backend["latency"] == "latency 42 ms"
        assert backend["since"] == "for 1 h 1 min"
        assert watch.js("document.getElementById('v-health').textContent") == "(1 up · 2 down)"
        # An older hub's checks (no state, uptime, p95_ms, cert_days): no status table, the list as before.
        assert watch.js("document.getElementById('health-table').hidden") is True
        assert watch.js("document.querySelector('#sources li[data-source=health] .badge').textContent") == "ok"
        assert watch.js("document.querySelector('#health .nodata').hidden") is True
        assert watch.js("document.querySelectorAll('main img').length") == 0
        assert watch.js("window.__pwned") is None

        # The frontend recovers; the backend starts failing but is not down yet.
        checks = source.health["checks"]
        source.health = {**source.health, "details": {"frontend": True, "backend": True, "database": False},
                         "checks": {**checks,
                                    "frontend": {**checks["frontend"], "up": True, "status": 200, "error": None,
                                                 "since": _iso(time.time()), "failures": 0},
                                    "backend": {**checks["backend"], "status": None, "latency_ms": None,
                                                "error": "timed out after 5 s", "failures": 1}}}
        rows = wait_for(lambda: (r := health_rows(watch))[-1]["name"] == "frontend" and r, what="frontend up")
        assert [(r["name"], r["badge"]) for r in rows] == [("database", "down"), ("backend", "up"),
                                                           ("frontend", "up")]
        assert rows[1]["reason"] == "failing (1×): timed out after 5 s"
        assert rows[2]["reason"] is None and rows[2]["since"] in ("for 0 s", "for 1 s", "for 2 s")
        assert watch.js("document.getElementById('v-health').dataset.raw") == "1"

        # The checks cannot run: no data, with the source's reason, like the other panels.
        source.health, source.error = None, "probe pool closed"
        wait_for(lambda: not watch.js("document.querySelector('#health .nodata').hidden"), what="no health data")
        assert watch.js("document.querySelector('#health .nodata').textContent") == \
            "no data — health: probe pool closed"
        assert watch.js("document.querySelectorAll('#health-list li').length") == 0
        assert watch.js("document.querySelector('#sources li[data-source=health] .badge').textContent") == "partial"
        assert_clean(watch)

        # A snapshot without the section (a token not allowed the health topic: the hub leaves it
        # out). Mocked /ws: this tree's hub has no health topic to filter by yet.
        template = httpx.get(url + "api/metrics/snapshot", timeout=5.0).json()
        data = {k: v for k, v in template["data"].items() if k != "health"}
        sources = {k: v for k, v in template["sources"].items() if k != "health"}
        limited = open_page()
        limited.page.route_web_socket(re.compile(r"/ws\b"), lambda ws: ws.send(json.dumps(
            {**template, "data": data, "sources": sources})))
        limited.page.goto(url)
        wait_for(lambda: limited.js("window.hubDebug && hubDebug.lastSeq > 0"), what="the limited snapshot")
        assert limited.js("document.querySelector('#health .nodata').textContent") == \
            "no data — health is not included for this access token"
        assert limited.js("document.querySelector('#sources li[data-source=health]').hidden") is True
        assert_clean(limited)


def status_rows(watch: PageWatch) -> list[dict[str, Any]]:
    """The status table's rows as shown."""
    return watch.js("""[...document.querySelectorAll('#health-table tbody tr')].map((tr) => ({
        name: tr.querySelector('.name').textContent,
        state: tr.querySelector('.badge').textContent,
        uptime: [...tr.querySelectorAll('.st-up')].map((e) => e.textContent),
        p95: [...tr.querySelectorAll('.st-p95')].map((e) => e.textContent),
        cert: tr.querySelector('.st-cert').textContent,
        right: tr.getBoundingClientRect().right,
    }))""")


def test_status_table_shows_states_uptime_p95_and_certificates_and_fits_a_phone(open_page: Any) -> None:  # noqa: F811
    source = ScriptedHealth()
    now = time.time()
    long_name = "appointments-booking-service-eu-west-1"
    checks = {
        "api": {"up": True, "state": "degraded", "status": 200, "latency_ms": 31.0, "failures": 0,
                "error": "TLS certificate expires in 4.9 days (warning at 14)", "since": _iso(now - 600),
                "cert_days": 4.93, "uptime": {"24h": 0.99987, "7d": 0.5, "30d": None, "source": "hub",
                                              "since": _iso(now - 3 * 3600)},
                "p95_ms": {"24h": 1520.0, "7d": 87.4, "30d": None}},
        "old": {"up": False, "state": "down", "status": None, "latency_ms": None, "failures": 3,
                "error": "TLS certificate verification failed (certificate has expired)",
                "since": _iso(now - 60), "cert_days": -1.25,
                "uptime": {"24h": 0.0, "7d": 0.0, "30d": 0.0, "source": "hub", "since": _iso(now - 3 * 3600)},
                "p95_ms": {"24h": None, "7d": None, "30d": None}},
        long_name: {"up": True, "state": "up", "status": 200, "latency_ms": 12.0, "failures": 0, "error": None,
                    "since": _iso(now - 3600), "cert_days": 42.7,
                    "uptime": {"24h": 1.0, "7d": 1.0, "30d": 0.999999, "source": "hub", "since": _iso(now - 3 * 3600)},
                    "p95_ms": {"24h": 9.6, "7d": 10.0, "30d": 999.6}},
        # From an older collector: none of the new fields; its state follows `up`.
        "legacy": {"up": True, "status": 200, "latency_ms": 5.0, "error": None, "since": _iso(now - 60), "failures": 0},
    }
    source.health = {"healthy": False, "details": {n: c["up"] for n, c in checks.items()}, "checks": checks}
    with serve_app(create_app(_health_config(), extra_sources=[source])) as url:
        watch = open_page(width=390, height=844)
        watch.page.goto(url)
        rows = wait_for(lambda: (r := status_rows(watch)) and r, what="the status table")
        # Down, degraded, then up (by name); a missing figure is a dash, a fraction below 1 never 100 %.
        assert [(r["name"], r["state"], r["uptime"], r["p95"], r["cert"]) for r in rows] == [
            ("old", "down", ["0.00 %", "0.00 %", "0.00 %"], ["\u2013"] * 3, "expired"),
            ("api", "degraded", ["99.98 %", "50.00 %", "\u2013"], ["1.52 s", "87 ms", "\u2013"], "4.9 d"),
            (long_name, "up", ["100 %", "100 %", "99.99 %"], ["10 ms", "10 ms", "1.00 s"], "42 d"),
            ("legacy", "up", ["\u2013"] * 3, ["\u2013"] * 3, "\u2013")]
        caption = watch.js("document.querySelector('#health-table caption').textContent")
        assert re.fullmatch(r"uptime and p95 latency per window; the hub's record since "
                            r"(\d\d:\d\d|\d{4}-\d\d-\d\d \d\d:\d\d)", caption), caption
        # Degraded has its own badge colour, and its reason under the check in the list.
        colours = watch.js("""[...document.querySelectorAll('#health-table tbody .badge')]
            .map((b) => getComputedStyle(b).backgroundColor)""")
        assert len(set(colours[:3])) == 3 and colours[3] == colours[2], colours
        assert watch.js("document.querySelector('#health-list li[data-check=api] .reason').textContent") == \
            checks["api"]["error"]
        assert watch.js("document.querySelector('#health-list li[data-check=api] .badge').textContent") == "degraded"
        assert watch.js("document.getElementById('v-health').textContent") == "(2 up · 1 degraded · 1 down)"
        # A phone: the long name wraps inside the table; nothing is wider than the screen.
        assert watch.js("document.documentElement.scrollWidth") == 390
        assert max(r["right"] for r in rows) <= 390, rows

        # Back to an older hub's snapshot: the table goes, the list stays.
        source.health = {"healthy": True, "details": {"legacy": True}, "checks": {"legacy": checks["legacy"]}}
        wait_for(lambda: watch.js("document.getElementById('health-table').hidden"), what="the table hidden")
        assert watch.js("[...document.querySelectorAll('#health-list li.check')].map((li) => li.dataset.check)") \
            == ["legacy"]
        assert_clean(watch)



@pytest.mark.skipif(not _has_source("health"), reason="this tree has no health source yet")
def test_health_panel_from_real_checks(tmp_path_factory: pytest.TempPathFactory, open_page: Any) -> None:
    """`hub serve` probing a local server (503, then 200) and a closed port; the page follows."""
    frontend = ThreadedService(503)
    health = f"""enabled = true
timeout = 0.3
failures_before_down = 1
[sources.health.checks]
frontend = "{frontend.url}"
gone = "http://127.0.0.1:{free_port()}/api/health"
"""
    try:
        with running_hub(tmp_path_factory, "health", health=health) as own:
            watch = open_page()
            load(watch, own)

            def shown_checks() -> tuple[int, dict[str, dict[str, Any]]]:
                seq, rows = watch.js("[Number(document.getElementById('conn-seq').dataset.raw), "
                                     "[...document.querySelectorAll('#health-list li.check')].map((li) => ({"
                                     "name: li.dataset.check, badge: li.querySelector('.badge').textContent, "
                                     "reason: li.querySelector('.reason') && li.querySelector('.reason').textContent, "
                                     "latency: li.querySelector('.latency') && li.querySelector('.latency').textContent"
                                     "}))]")
                return seq, {r["name"]: r for r in rows}

            seq, rows = wait_for(lambda: (s := shown_checks())[1].get("frontend", {}).get("badge") == "down" and s,
                                 what="the frontend check down")
            checks = own.snapshot_by_seq(seq)["data"]["health"]["checks"]
            assert rows["frontend"]["reason"] == checks["frontend"]["error"] == "HTTP 503"
            assert rows["gone"]["badge"] == "down"
            assert rows["gone"]["reason"] == checks["gone"]["error"] == "connection refused"
            # Down ones first: the page lists every check the hub reports.
            assert set(rows) == set(checks)
            frontend.status = 200
            # .get: a tick whose health source overran its deadline (a busy machine) has
            # data.health null, and the page rightly shows no checks for that tick.
            seq, rows = wait_for(lambda: (s := shown_checks())[1].get("frontend", {}).get("badge") == "up" and s,
                                 what="the frontend check up again")
            check = own.snapshot_by_seq(seq)["data"]["health"]["checks"]["frontend"]
            assert check["up"] is True and rows["frontend"]["reason"] is None
            ms = check["latency_ms"]
            # Math.round, not Python's round-half-even.
            rounded = math.floor(ms + 0.5)
            expected = f"latency {rounded} ms" if rounded < 1000 else f"latency {ms / 1000:.2f} s"
            assert rows["frontend"]["latency"] == expected
            assert watch.js("document.querySelector('#sources li[data-source=health] .badge').textContent") == "ok"
            assert_clean(watch)
    finally:
        frontend.close()


@contextlib.contextmanager
def fleet_prometheus(n: int) -> Iterator[Any]:
    """The fleet benchmark's stand-in Prometheus (N series per default query) on its own loop."""
    from bench.fleetkit.prom import FleetPrometheus
    from hub.config import DEFAULT_QUERIES

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    prom = FleetPrometheus(n, queries=dict(DEFAULT_QUERIES))
    asyncio.run_coroutine_threadsafe(prom.start(), loop).result(10)
    try:
        yield prom
    finally:
        asyncio.run_coroutine_threadsafe(prom.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_a_big_fleet_page_gets_full_charts_from_points_not_raw_history(tmp_path_factory: pytest.TempPathFactory,
                                                                        open_page: Any) -> None:
    # 3,000 series per query: each raw snapshot is ~1.7 MB, so raw history would be hundreds of MB.
    with fleet_prometheus(3000) as prom, running_hub(tmp_path_factory, "fleet", prometheus_url=prom.url,
                                                      extra="") as hub:
        before = wait_ticks(hub, 12)
        watch = open_page()
        sockets: list[str] = []
        watch.page.on("websocket", lambda ws: sockets.append(ws.url))
        load(watch, hub)
        lengths = wait_for(lambda: (ls := watch.js("hubDebug.seriesLengths()")) and
                           all(n >= before for n in ls.values()) and ls, what="charts with the whole span")
        assert len(lengths) == 5
        assert sockets and all("points=" in u and "history=" not in u for u in sockets), sockets
        # The per-job charts plot the fleet's jobs, summed over their thousands of series.
        jobs = watch.js("hubDebug.jobNames ? hubDebug.jobNames('rate') : null")
        if jobs is not None:
            assert len(jobs) == 8, jobs
        assert_clean(watch)
