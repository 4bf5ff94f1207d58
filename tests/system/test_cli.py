"""The `hub` command as a user runs it: real subprocesses, signals, config errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import aiohttp
import pytest

from hub.auth import hash_token
from tests.support.hubproc import ROOT, HubProcess, to_toml

FAST = {"broadcast": {"interval": 0.2},
        "sources": {"prometheus": {"enabled": False}, "business": {"enabled": False}}}


def run_hub(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub", *args], capture_output=True, text=True, timeout=30,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_check_config_prints_effective_config_with_secrets_redacted(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(to_toml({
        "sources": {"prometheus": {"bearer_token": "s3cr3t-bearer"},
                    "business": {"mongodb_uri": "mongodb://reader:hunter2@db.internal:27017/healthcare"}},
        "auth": {"tokens": [{"name": "wall", "hash": "plain-token-value"},
                            {"name": "ops", "hash": hash_token("x")}]},
    }))
    res = run_hub("check-config", "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["server"]["port"] == 8080
    assert out["sources"]["prometheus"]["bearer_token"] == "<redacted>"
    assert out["sources"]["business"]["mongodb_uri"] == "mongodb://reader:***@db.internal:27017/healthcare"
    for secret in ("s3cr3t-bearer", "hunter2", "plain-token-value", hash_token("x")):
        assert secret not in res.stdout + res.stderr
    assert "'wall' is stored in plaintext" in res.stderr


@pytest.mark.parametrize("body, needle", [
    ("[server]\nprot = 1\n", "server.prot: unknown key"),
    ('[server]\nport = "eighty"\n', "server.port: expected an integer, got 'eighty'"),
    ("[broadcast]\ninterval = 0.01\n", "broadcast.interval: must be >= 0.1 seconds, got 0.01"),
    ('[sources.business]\ntime_range = "2h"\n', "sources.business.time_range: must be one of 1h, 24h, 7d, 30d"),
    ("[server\n", "is not valid TOML"),
    ('[auth]\ntokens = [{name = "a"}]\n', "auth.tokens[0]: missing required key(s) hash"),
])
def test_bad_config_exits_2_naming_key_and_value(tmp_path, body, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    for cmd in ("check-config", "serve"):
        res = run_hub(cmd, "--config", str(cfg))
        assert res.returncode == 2, (cmd, res.stdout, res.stderr)
        assert needle in res.stderr, res.stderr


def test_env_overrides_real_keys_only(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[sources.prometheus.queries]\nmine = 'up'\n")
    res = run_hub("check-config", "--config", str(cfg),
                  env={"HUB_SERVER__PORT": "9001", "PROMETHEUS_URL": "http://seed:9090",
                       "HUB_SERVER__ALLOWED_ORIGINS": '["https://a.example"]',
                       "HUB_REQUIRE_SERVICES": "1", "HUB_NOT__A__KEY": "x"})
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["server"]["port"] == 9001
    assert out["server"]["allowed_origins"] == ["https://a.example"]
    assert out["sources"]["prometheus"]["url"] == "http://seed:9090"
    # A queries table in the file replaces the defaults instead of merging with them.
    assert out["sources"]["prometheus"]["queries"] == {"mine": "up"}
    res = run_hub("check-config", "--config", str(cfg), env={"HUB_BROADCAST__INTERVAL": "fast"})
    assert res.returncode == 2 and "HUB_BROADCAST__INTERVAL" in res.stderr


@pytest.mark.parametrize("body, env, needle", [
    ("[broadcast]\ninterval = nan\n", {}, "broadcast.interval: must be a finite number, got nan"),
    ("[broadcast]\nheartbeat = inf\n", {}, "broadcast.heartbeat: must be a finite number, got inf"),
    ("[broadcast]\nhistory_size = 99999999999999999999\n", {}, "broadcast.history_size: must be <= 1000000"),
    ('[sources.prometheus]\nurl = "http://[::1"\n', {}, "sources.prometheus.url: is not a valid URL"),
    ("", {"PROMETHEUS_URL": "http://[::1"}, "PROMETHEUS_URL: sources.prometheus.url: is not a valid URL"),
    ('server = "x"\n', {"HUB_SERVER__PORT": "1"}, "server: expected a table, got a string"),
    ("", {"HUB_SERVER__NOPE": "1"}, "HUB_SERVER__NOPE: server.nope is not a config key"),
    ("", {"HUB_SERVER__HOST": ""}, "HUB_SERVER__HOST: server.host: must not be empty"),
    ('[auth]\ntokens = ["PLAINTEXTSECRETTOKEN"]\n', {}, "auth.tokens[0]: expected a table, got a string"),
    ("", {"HUB_AUTH__TOKENS": '[{name = "a", hash = "PLAINTEXTSECRETTOKEN"'}, "HUB_AUTH__TOKENS (auth.tokens)"),
])
def test_check_config_exits_2_naming_the_key_never_a_traceback_or_secret(tmp_path, body, env, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    res = run_hub("check-config", "--config", str(cfg), env=env)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert needle in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and "PLAINTEXTSECRETTOKEN" not in res.stderr


def test_config_file_that_is_not_utf8_exits_2(tmp_path):
    cfg = tmp_path / "latin1.toml"
    cfg.write_bytes(b'[server]\nhost = "caf\xe9"\n')
    res = run_hub("check-config", "--config", str(cfg))
    assert res.returncode == 2 and "is not UTF-8 text" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("args, needle", [
    (("--port", "70000"), "--port: server.port: must be <= 65535, got 70000"),
    (("--port", "-5"), "--port: server.port: must be >= 0, got -5"),
    (("--host", "not a host"), "--host: server.host: must be an IP address or a host name"),
    (("--host", ""), "--host: server.host: must not be empty"),
])
def test_serve_host_and_port_options_are_validated_like_the_file(tmp_path, args, needle):
    cfg = tmp_path / "c.toml"
    cfg.write_text(to_toml(FAST))
    res = run_hub("serve", "--config", str(cfg), *args)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert needle in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_check_config_redacts_the_webhook_and_url_credentials(tmp_path):
    hook = "https://hooks.slack.com/services/T0000/B0000/WEBHOOKTOKEN1234567890"
    cfg = tmp_path / "c.toml"
    cfg.write_text(to_toml({"notify": {"slack_webhook_url": hook},
                            "sources": {"prometheus": {"url": "http://prom:prompw-secret@prom:9090"},
                                        "health": {"checks": {"api": "https://probe:probe-secret@api/health"}}}}))
    res = run_hub("check-config", "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["notify"]["slack_webhook_url"] == "https://hooks.slack.com/<redacted>"
    assert out["sources"]["prometheus"]["url"] == "http://prom:***@prom:9090"
    assert out["sources"]["health"]["checks"] == {"api": "https://probe:***@api/health"}
    for secret in ("WEBHOOKTOKEN", "prompw-secret", "probe-secret"):
        assert secret not in res.stdout + res.stderr


def test_missing_config_file_is_a_clear_error(tmp_path):
    res = run_hub("check-config", "--config", str(tmp_path / "nope.toml"))
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_token_new_prints_token_and_hash_line():
    res = run_hub("token", "new", "wallboard")
    assert res.returncode == 0
    token = res.stdout.split("token: ", 1)[1].split()[0]
    assert f'{{name = "wallboard", hash = "{hash_token(token)}"}}' in res.stdout


async def test_sigterm_closes_clients_1001_and_exits_0(tmp_path):
    hub = HubProcess(FAST, tmp_path).start()
    try:
        async with aiohttp.ClientSession() as session:
            wss = [await session.ws_connect(hub.url + "/ws") for _ in range(3)]
            for ws in wss:
                assert (await ws.receive(timeout=5)).type is aiohttp.WSMsgType.TEXT
            t0 = time.monotonic()
            assert hub.proc is not None
            hub.proc.send_signal(signal.SIGTERM)
            for ws in wss:
                async with asyncio.timeout(5):
                    while True:
                        msg = await ws.receive()
                        if msg.type is not aiohttp.WSMsgType.TEXT:
                            break
                assert msg.type is aiohttp.WSMsgType.CLOSE, msg
                assert msg.data == 1001
            code = await asyncio.to_thread(hub.proc.wait, 10)
            assert code == 0, hub.log()
            assert time.monotonic() - t0 < 5.0
    finally:
        hub.stop(kill=True)


def test_sigint_exits_0(tmp_path):
    hub = HubProcess(FAST, tmp_path).start()
    assert hub.proc is not None
    hub.proc.send_signal(signal.SIGINT)
    assert hub.proc.wait(timeout=10) == 0, hub.log()
    hub.stop()


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_default_config_serves_without_prometheus_and_mongodb(tmp_path):
    """The shipped config.toml, nothing else running: /ws, /metrics, /health work; the two sources say error."""
    from tests.support import free_port

    port = free_port()
    log = tmp_path / "hub.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hub", "serve", "--config", str(ROOT / "config.toml"),
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(30):
                while True:
                    try:
                        async with session.get(url + "/ready") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        pass
                    await asyncio.sleep(0.1)
            assert (await (await session.get(url + "/health")).json()) == {"status": "ok"}
            async with session.ws_connect(url + "/ws") as ws:
                snap = json.loads((await ws.receive(timeout=10)).data)
            assert snap["type"] == "metrics_update"
            assert snap["sources"]["process"]["status"] == "ok" and snap["data"]["application"]
            for name, port_, sections in (("prometheus", 9090, ("system", "alerts")),
                                          ("business", 27017, ("business",))):
                if not _port_open(port_):  # nothing there: the source must say so, readably
                    assert snap["sources"][name]["status"] == "error", snap["sources"][name]
                    assert snap["sources"][name]["error"]
                    assert all(snap["data"][s] is None for s in sections)
            text = await (await session.get(url + "/metrics")).text()
            assert "hub_ws_connections" in text and 'hub_collect_errors_total{source="prometheus"}' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, log.read_text()[-3000:]
