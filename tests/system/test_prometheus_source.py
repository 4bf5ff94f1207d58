"""PrometheusSource against a real Prometheus, plus tiny aiohttp servers for what a healthy Prometheus never does."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from hub.config import build_config
from hub.sources.base import SourceError, SourceResult
from hub.sources.prometheus import PrometheusSource
from tests.support.components import make_prometheus_source
from tests.support import free_port, need_program
from tests.support.prom import (  # noqa: F401
    PrometheusServer,
    prometheus_server,
    shared_prometheus,
    start_prometheus,
)

TOKEN = "tok-3f9a1c77e2b54d0f"  # distinctive, so a leak in any message is unmistakable
PASSWORD = "pw-8d1e22c9aa40"
DEADLINE = 15.0  # generous upper bound for conditions polled against a real Prometheus


def make_source(url: str, **keys: Any) -> PrometheusSource:
    return make_prometheus_source(url, **keys)


async def poll(source: PrometheusSource, ok: Callable[[SourceResult], bool],
               deadline: float = DEADLINE) -> SourceResult:
    """Collect until `ok(result)` holds; fail with the last result after `deadline` seconds."""
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        try:
            last = await source.collect(source.timeout)
            if ok(last):
                return last
        except SourceError as exc:
            last = exc
        await asyncio.sleep(0.2)
    pytest.fail(f"condition not met within {deadline} s; last result: {last!r}")


async def timed(coro: Awaitable[Any]) -> tuple[Any, float]:
    t0 = time.monotonic()
    try:
        return await coro, time.monotonic() - t0
    except SourceError as exc:
        return exc, time.monotonic() - t0


def samples(result: list[dict[str, Any]]) -> dict[str, str]:
    return {r["metric"].get("job", ""): r["value"][1] for r in result}


# ------------------------------------------------------------------ real Prometheus


async def test_queries_return_prometheus_results_verbatim(shared_prometheus: PrometheusServer) -> None:
    source = make_source(shared_prometheus.url,
                         queries={"uptime": 'up{job="prometheus"}', "one": "vector(1)"})
    await source.start()
    try:
        res = await poll(source, lambda r: samples(r.data["system"]["uptime"]).get("prometheus") == "1")
        assert res.error is None
        assert set(res.data["system"]) == {"uptime", "one"}
        # data.result verbatim: the seed's shape, [{"metric": {...}, "value": [ts, "1"]}]
        (one,) = res.data["system"]["one"]
        assert one["metric"] == {} and one["value"][1] == "1" and isinstance(one["value"][0], float)
    finally:
        await source.close()


async def test_firing_alert_listed_first_then_pending(shared_prometheus: PrometheusServer) -> None:
    source = make_source(shared_prometheus.url)
    assert source.sections == ("system", "alerts")
    await source.start()
    try:
        res = await poll(source, lambda r: len(r.data["alerts"]) >= 2)
        firing, pending = res.data["alerts"][:2]
        assert firing == {
            "name": "HubTestAlwaysFiring", "state": "firing", "severity": "critical",
            "activeAt": firing["activeAt"], "summary": "Always firing (test rule)",
            "labels": {"alertname": "HubTestAlwaysFiring", "severity": "critical"},
        }
        assert firing["activeAt"].endswith("Z")
        assert (pending["name"], pending["state"], pending["severity"]) == ("HubTestAlwaysPending", "pending", "info")
    finally:
        await source.close()


async def test_alerts_disabled_omits_the_section(shared_prometheus: PrometheusServer) -> None:
    source = make_source(shared_prometheus.url, alerts=False)
    assert source.sections == ("system",)
    try:
        res = await source.collect(source.timeout)
        assert set(res.data) == {"system"} and res.error is None
    finally:
        await source.close()


async def test_bad_promql_gives_partial_with_prometheus_error_text(shared_prometheus: PrometheusServer) -> None:
    source = make_source(shared_prometheus.url, queries={"good": "vector(1)", "broken": "sum(("})
    try:
        res = await source.collect(source.timeout)
        assert list(res.data["system"]) == ["good"]
        assert res.data["alerts"] is not None
        assert res.error is not None
        assert "'broken'" in res.error and "'good'" not in res.error
        assert "HTTP 400" in res.error
        assert "bad_data: invalid parameter" in res.error and "unclosed left parenthesis" in res.error
    finally:
        await source.close()


async def test_execution_error_422_is_quoted(shared_prometheus: PrometheusServer) -> None:
    # Dropping __name__ from two series with equal labels is an execution error (HTTP 422),
    # once the first self-scrape has stored both series.
    source = make_source(shared_prometheus.url, queries={
        "good": "vector(1)", "dup": 'abs({__name__=~"up|scrape_samples_scraped",job="prometheus"})'})
    try:
        res = await poll(source, lambda r: r.error is not None)
        assert "query 'dup' failed: HTTP 422" in res.error
        assert "execution: vector cannot contain metrics with the same labelset" in res.error
    finally:
        await source.close()


async def test_all_queries_failing_raises(shared_prometheus: PrometheusServer) -> None:
    source = make_source(shared_prometheus.url, queries={"a": "sum((", "b": "rate(up)"})
    try:
        with pytest.raises(SourceError) as err:
            await source.collect(source.timeout)
        msg = str(err.value)
        assert "query 'a'" in msg and "query 'b'" in msg and "bad_data" in msg
    finally:
        await source.close()


async def test_killed_prometheus_fails_fast_and_restart_recovers(prometheus_server: PrometheusServer) -> None:
    prom = prometheus_server
    source = make_source(prom.url, queries={"one": "vector(1)"}, timeout=3)
    await source.start()
    try:
        res = await source.collect(source.timeout)
        assert res.error is None and res.data["system"]["one"]

        prom.kill()
        err, took = await timed(source.collect(source.timeout))
        assert isinstance(err, SourceError), err
        assert str(err) == f"cannot reach Prometheus at {prom.url}: connection refused"
        assert took < 1.0  # refused connections fail at once, not at the budget

        await prom.astart()  # same port, same TSDB directory
        res = await source.collect(source.timeout)  # the same source object: its pool must drop dead connections
        assert res.error is None and res.data["system"]["one"]
        assert res.data["alerts"] is not None
    finally:
        await source.close()


# ------------------------------------------------------------------ misbehaving servers
# A healthy Prometheus is never slow on `vector(1)`, never answers HTML, never echoes
# credentials: these cases need a server we control, so they use tiny aiohttp apps.

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def fake_prom(aiohttp_server: Any) -> Callable[[Handler], Awaitable[str]]:
    """Serve `handler` on /api/v1/query and /api/v1/alerts; returns the base URL."""

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_get("/api/v1/query", handler)
        app.router.add_get("/api/v1/alerts", handler)
        server = await aiohttp_server(app)
        return f"http://127.0.0.1:{server.port}"

    return start


def ok_body(request: web.Request, **extra: Any) -> web.Response:
    if request.path.endswith("/alerts"):
        return web.json_response({"status": "success", "data": {"alerts": []}, **extra})
    return web.json_response({"status": "success",
                              "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "1"]}]},
                              **extra})


async def test_connections_are_kept_alive_across_collects(fake_prom: Any) -> None:
    peers: list[Any] = []

    async def handler(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        return ok_body(request)

    url = await fake_prom(handler)
    source = make_source(url, queries={"a": "vector(1)", "b": "vector(2)"})
    try:
        await source.collect(source.timeout)
        first = set(peers)
        peers.clear()
        await source.collect(source.timeout)
        await source.collect(source.timeout)
        assert len(peers) == 6 and set(peers) <= first  # three requests a tick, no new connection
    finally:
        await source.close()


async def test_slow_prometheus_times_out_within_budget(fake_prom: Any) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return ok_body(request)

    url = await fake_prom(slow)
    source = make_source(url, timeout=0.5, queries={"a": "vector(1)", "b": "vector(2)"})
    try:
        err, took = await timed(source.collect(source.timeout))
        assert isinstance(err, SourceError)
        assert str(err) == f"timed out after 0.5 s waiting for Prometheus at {url}"
        assert 0.5 <= took < 0.5 + 0.3
    finally:
        release.set()
        await source.close()


async def test_one_slow_query_is_partial(fake_prom: Any) -> None:
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        if request.query.get("query") == "slow":
            await release.wait()
        return ok_body(request)

    url = await fake_prom(handler)
    source = make_source(url, timeout=0.5, queries={"fast": "vector(1)", "slow": "slow"})
    try:
        res, took = await timed(source.collect(source.timeout))
        assert took < 0.8
        assert list(res.data["system"]) == ["fast"] and res.data["alerts"] == []
        assert res.error == f"query 'slow' failed: no answer from Prometheus at {url} within the 0.5 s budget"
    finally:
        release.set()
        await source.close()


async def test_503_non_json_body(fake_prom: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=503, text="<html><body>Service Unavailable</body></html>",
                            content_type="text/html")

    url = await fake_prom(handler)
    source = make_source(url)
    try:
        with pytest.raises(SourceError) as err:
            await source.collect(source.timeout)
        assert str(err.value) == (f"HTTP 503 from Prometheus at {url}: not a Prometheus API answer "
                                  "(text/html; charset=utf-8): '<html><body>Service Unavailable</body></html>'")
    finally:
        await source.close()


async def test_503_prometheus_error_body_is_quoted(fake_prom: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"status": "error", "errorType": "timeout",
                                  "error": "query timed out in expression evaluation"}, status=503)

    url = await fake_prom(handler)
    source = make_source(url)
    try:
        with pytest.raises(SourceError) as err:
            await source.collect(source.timeout)
        assert str(err.value) == (f"HTTP 503 from Prometheus at {url}: "
                                  "timeout: query timed out in expression evaluation")
    finally:
        await source.close()


async def test_alerts_endpoint_failing_keeps_system(fake_prom: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        if request.path.endswith("/alerts"):
            return web.Response(status=404, text="404 page not found")
        return ok_body(request)

    url = await fake_prom(handler)
    source = make_source(url)
    try:
        res = await source.collect(source.timeout)
        assert res.data["system"]["one"] and res.data["alerts"] is None
        assert res.error is not None and res.error.startswith("alerts failed: HTTP 404")
    finally:
        await source.close()


async def test_prometheus_warnings_are_passed_on(fake_prom: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        return ok_body(request, warnings=["remote read partially failed"])

    url = await fake_prom(handler)
    source = make_source(url, queries={"a": "vector(1)"})
    try:
        res = await source.collect(source.timeout)
        assert res.error is None
        assert res.warnings == ("query 'a': remote read partially failed", "remote read partially failed")
    finally:
        await source.close()


async def test_dns_failure_is_readable() -> None:
    source = make_source("http://prometheus.hub-test.invalid:9090", timeout=3)
    try:
        err, took = await timed(source.collect(source.timeout))
        assert isinstance(err, SourceError)
        assert str(err).startswith("cannot reach Prometheus at http://prometheus.hub-test.invalid:9090: "
                                   "DNS lookup failed")
    finally:
        await source.close()


# ------------------------------------------------------------------ credentials


def echoing_auth_handler(expected: str) -> Handler:
    """Answer like Prometheus when the Authorization header is `expected`; else a 401 that echoes it."""

    async def handler(request: web.Request) -> web.Response:
        got = request.headers.get("Authorization", "")
        if got != expected:
            # Some proxies echo the request back; the hub must still never show the secret.
            return web.Response(status=401, text=f"unauthorized: {got}")
        return ok_body(request)

    return handler


async def test_bearer_token_is_sent_and_never_shown(fake_prom: Any) -> None:
    url = await fake_prom(echoing_auth_handler(f"Bearer {TOKEN}"))
    good = make_source(url, bearer_token=TOKEN)
    bad = make_source(url, bearer_token=TOKEN + "x")  # the echoed header contains TOKEN
    try:
        assert (await good.collect(good.timeout)).error is None
        with pytest.raises(SourceError) as err:
            await bad.collect(bad.timeout)
        msg = str(err.value)
        assert msg.startswith(f"HTTP 401 from Prometheus at {url}")
        assert TOKEN not in msg and "***" in msg
    finally:
        await good.close()
        await bad.close()


async def test_basic_auth_is_sent_and_never_shown(fake_prom: Any) -> None:
    import base64

    cred = base64.b64encode(f"ops:{PASSWORD}".encode()).decode()
    url = await fake_prom(echoing_auth_handler(f"Basic {cred}"))
    good = make_source(url, basic_auth_user="ops", basic_auth_password=PASSWORD)
    try:
        assert (await good.collect(good.timeout)).error is None
    finally:
        await good.close()

    # Credentials in the URL: neither the password nor the user:password@ part is shown.
    host = url.removeprefix("http://")
    in_url = make_source(f"http://ops:{PASSWORD}@{host}", queries={"a": "vector(1)"})
    wrong = make_source(url, basic_auth_user="ops", basic_auth_password=PASSWORD + "!")
    try:
        assert (await in_url.collect(in_url.timeout)).error is None
        with pytest.raises(SourceError) as err:
            await wrong.collect(wrong.timeout)
        assert PASSWORD not in str(err.value) and "ops:" not in str(err.value)
        # the server echoed the Authorization header: the base64 of user:password is a secret too
        echoed = base64.b64encode(f"ops:{PASSWORD}!".encode()).decode()
        assert echoed not in str(err.value)
        assert str(err.value).startswith(f"HTTP 401 from Prometheus at {url}:")
    finally:
        await in_url.close()
        await wrong.close()

    # Transport errors name the server, never the password.
    down = make_source(f"http://ops:{PASSWORD}@127.0.0.1:{free_port()}")
    try:
        with pytest.raises(SourceError) as err:
            await down.collect(down.timeout)
        # the registry's redact_url: the user name stays (it helps debugging), the password never
        assert PASSWORD not in str(err.value) and "http://ops:***@127.0.0.1:" in str(err.value)
    finally:
        await down.close()


# ------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made with the openssl program) and its key."""
    openssl = need_program("openssl")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


async def test_tls_ca_file_and_verification(aiohttp_server: Any, tls_files: tuple[Path, Path]) -> None:
    import ssl

    cert, key = tls_files
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    app = web.Application()
    async def handler(request: web.Request) -> web.Response:
        return ok_body(request)

    app.router.add_get("/api/v1/query", handler)
    app.router.add_get("/api/v1/alerts", handler)
    server = await aiohttp_server(app, ssl=ctx)
    url = f"https://127.0.0.1:{server.port}"

    trusted = make_source(url, ca_file=str(cert))
    untrusted = make_source(url)
    unverified = make_source(url, tls_verify=False)
    try:
        assert (await trusted.collect(trusted.timeout)).error is None
        with pytest.raises(SourceError) as err:
            await untrusted.collect(untrusted.timeout)
        assert str(err.value).startswith(f"cannot reach Prometheus at {url}: TLS certificate verification failed")
        assert (await unverified.collect(unverified.timeout)).error is None
    finally:
        for s in (trusted, untrusted, unverified):
            await s.close()


# ------------------------------------------------------------------ closed loop: hub <-> Prometheus
# A real hub app whose Prometheus source points at a real Prometheus that scrapes this hub's
# /metrics every second: the hub reports data about itself, read back through Prometheus.

DEPLOY_RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "hub-alerts.yml"
TICK = 1.0


async def next_update(ws: Any, timeout: float = TICK * 3) -> dict[str, Any]:
    """The next metrics_update frame (a tick must arrive well within `timeout`)."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            pytest.fail(f"no metrics_update within {timeout} s")
        msg = await ws.receive_json(timeout=left)
        if msg.get("type") == "metrics_update":
            return msg


async def test_closed_loop_kill_and_restart(tmp_path: Path, aiohttp_server: Any, aiohttp_client: Any) -> None:
    from hub.app import create_app

    hub_port = free_port()
    # The hub's own alert rules are loaded too: Prometheus refuses to start on a broken rule file.
    prom = start_prometheus(tmp_path / "prometheus", targets={"hub": [f"127.0.0.1:{hub_port}"]},
                            extra_rule_files=[DEPLOY_RULES])
    try:
        cfg = build_config({
            "broadcast": {"interval": TICK},
            "sources": {
                "prometheus": {"url": prom.url, "timeout": 0.5,
                               "queries": {"hubUp": 'up{job="hub"}', "one": "vector(1)"}},
                "business": {"enabled": False},
            },
        }, environ={})
        server = await aiohttp_server(create_app(cfg), port=hub_port)
        client = await aiohttp_client(server)
        ws = await client.ws_connect("/ws")

        # 1. The loop closes: Prometheus scraped the hub, the hub reads up{job="hub"} = 1 back.
        #    (Prometheus applies new scrape targets about 5 s after start.)
        def hub_up(m: dict[str, Any]) -> bool:
            system = m["data"]["system"] or {}
            return any(r["metric"].get("job") == "hub" and r["value"][1] == "1"
                       for r in system.get("hubUp", []))

        def firing(m: dict[str, Any]) -> bool:
            return any(a["name"] == "HubTestAlwaysFiring" and a["state"] == "firing"
                       for a in m["data"]["alerts"] or [])

        end = time.monotonic() + 20
        msg = await next_update(ws)
        while not (hub_up(msg) and firing(msg)):
            assert time.monotonic() < end, f"loop did not close within 20 s; last: {msg}"
            msg = await next_update(ws)
        assert msg["sources"]["prometheus"]["status"] == "ok"
        (up,) = [r for r in msg["data"]["system"]["hubUp"] if r["metric"].get("job") == "hub"]
        assert up["metric"]["instance"] == f"127.0.0.1:{hub_port}"
        assert msg["data"]["alerts"][0]["state"] == "firing"  # firing sorted before pending

        # 2. Prometheus dies: by the second tick after the kill (the first may have been
        #    collected just before it) the source reports error, on time; other sections stay.
        prom.kill()
        killed_seq = msg["seq"]
        on_time = TICK + 0.6  # the tick grid is fixed; a refused connection costs no budget
        frames = [await next_update(ws, on_time), await next_update(ws, on_time)]
        err = frames[-1]
        assert err["sources"]["prometheus"]["status"] == "error"
        assert err["sources"]["prometheus"]["error"] == f"cannot reach Prometheus at {prom.url}: connection refused"
        assert err["data"]["system"] is None and err["data"]["alerts"] is None
        assert err["sources"]["process"]["status"] == "ok" and err["data"]["application"] is not None
        assert err["sources"]["prometheus"]["latency_ms"] < 500  # refused at once, no budget wait
        assert [f["seq"] for f in frames] == [killed_seq + 1, killed_seq + 2]  # no tick skipped

        # 3. Prometheus restarts on the same port with the same TSDB; the same hub (same source,
        #    same pooled client) recovers within two ticks of Prometheus being ready.
        await prom.astart()
        frames = [await next_update(ws), await next_update(ws)]
        ok = frames[-1]
        assert ok["sources"]["prometheus"]["status"] == "ok", ok["sources"]["prometheus"]
        assert ok["data"]["system"]["one"][0]["value"][1] == "1"
        assert ok["data"]["alerts"] is not None

        # The hub's self-metrics counted the outage and the recovery.
        text = await (await client.get("/metrics")).text()
        assert 'hub_source_up{source="prometheus"} 1.0' in text
        errors = re.search(r'^hub_collect_errors_total\{source="prometheus"\} (\S+)$', text, re.M)
        assert errors and float(errors.group(1)) >= 1
        await ws.close()
    finally:
        prom.kill()


# ------------------------------------------------------------------ docs/prometheus.md's examples

DOCS = Path(__file__).resolve().parents[2] / "docs" / "prometheus.md"


def doc_blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", DOCS.read_text(), re.S | re.M)


async def test_documented_queries_and_recording_rules_are_valid(shared_prometheus: PrometheusServer,
                                                                tmp_path: Path) -> None:
    import tomllib

    import yaml

    queries: dict[str, str] = {}
    for block in doc_blocks("toml"):
        queries.update(tomllib.loads(block).get("sources", {}).get("prometheus", {}).get("queries", {}))
    rules = [block for block in doc_blocks("yaml") if block.startswith("groups:")]
    assert "requestRate" in queries and len(rules) == 1
    for group in yaml.safe_load(rules[0])["groups"]:
        queries.update({r["record"]: r["expr"] for r in group["rules"]})
    # Prometheus parses and runs each one (no data for these metrics here: empty results, no error).
    source = make_source(shared_prometheus.url, queries=queries, alerts=False)
    try:
        res = await source.collect(source.timeout)
        assert res.error is None, res.error
    finally:
        await source.close()
    path = tmp_path / "rules.yml"
    path.write_text(rules[0])
    promtool = need_program("promtool", hint="Debian/Ubuntu package 'prometheus'")
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
