"""Config is total: every key declared once, every number bounded, every URL parsed, no secret in an error."""

from __future__ import annotations

import base64
import dataclasses
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest

from hub.config import (
    DEFAULT_HEALTH_CHECKS,
    Config,
    ConfigError,
    HealthSourceConfig,
    NotifyConfig,
    build_config,
    env_overrides,
    load_config,
    redacted_dict,
    with_overrides,
)
from hub.config.spec import spec_of
from hub.config import secrets_of
from hub.secrets import passwords_of, redact_url, scrub

ROOT = Path(__file__).resolve().parents[2]


def leaf_keys(cls: type = Config, prefix: str = "") -> dict[str, tuple[Any, Any, Any]]:
    """Every declared key: dotted path -> (type, spec, default)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[Any, Any, Any]] = {}
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and spec_of(f) is None:
            out.update(leaf_keys(tp, path))
            continue
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        out[path] = (tp, spec_of(f), default)
    return out


def build(raw: dict[str, Any], env: dict[str, str] | None = None) -> Config:
    return build_config(raw, environ=env or {})


def error_of(raw: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        build(raw, env)
    return str(info.value)


# ----------------------------------------------------------------------------- one declaration per key


def test_every_key_is_declared_with_a_description_and_numbers_have_both_bounds():
    keys = leaf_keys()
    assert len(keys) > 50
    for path, (tp, spec, _default) in keys.items():
        if path.startswith("auth.tokens"):
            continue
        assert spec is not None and spec.doc, f"{path} has no Spec/description"
        if tp in (int, float):
            assert spec.lo is not None or spec.gt is not None, f"{path} has no lower bound"
            assert spec.hi is not None, f"{path} has no upper bound"


def test_shipped_config_toml_holds_every_key_with_its_default_and_loads():
    raw = tomllib.loads((ROOT / "config.toml").read_text(encoding="utf-8"))
    for path, (_tp, _spec, default) in leaf_keys().items():
        node: Any = raw
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f"config.toml lacks {path}"
            node = node[part]
        assert node == to_raw_value(default), f"config.toml: {path} = {node!r}, schema default {default!r}"
    assert load_config(ROOT / "config.toml", environ={}) == Config()


def to_raw_value(default: Any) -> Any:
    if isinstance(default, tuple):
        return list(default)
    if isinstance(default, typing.Mapping):
        return dict(default)
    return default


def test_readme_configuration_table_names_every_key():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for path in leaf_keys():
        section, _, name = path.rpartition(".")
        row = next((line for line in table.splitlines() if line.startswith(f"| `[{section}]`")), "")
        assert f"`{name}`" in row or f"`[{path}]`" in row, f"README configuration table lacks {path}"


def test_new_keys_and_their_defaults():
    cfg = Config()
    assert cfg.broadcast.history_max_bytes == 64 * 1024 * 1024
    assert cfg.sources.prometheus.max_series == 10000
    assert cfg.sources.prometheus.max_response_bytes == 8 * 1024 * 1024
    assert cfg.server.trusted_proxies == ()
    assert cfg.server.auth_failures_per_minute == 10
    assert cfg.server.handshake_timeout == 10.0
    assert cfg.sources.business.reconcile_interval == 300.0
    assert isinstance(cfg.sources.health, HealthSourceConfig) and isinstance(cfg.notify, NotifyConfig)
    h = cfg.sources.health
    assert (h.enabled, h.timeout, h.failures_before_down, h.ca_file) == (True, 5.0, 3, "")
    assert dict(h.checks) == {"frontend": "http://healthcare-frontend/health",
                              "backend": "http://healthcare-backend/api/health"} == DEFAULT_HEALTH_CHECKS
    assert cfg.notify.slack_webhook_url == ""


def test_health_checks_table_replaces_the_defaults_and_urls_are_checked():
    cfg = build({"sources": {"health": {"checks": {"api": "https://api.internal/healthz"}}}})
    assert dict(cfg.sources.health.checks) == {"api": "https://api.internal/healthz"}
    assert "sources.health.checks.api: must be an http(s) URL" in error_of(
        {"sources": {"health": {"checks": {"api": "ftp://x/"}}}})
    assert "sources.health.checks: must hold at least 1" in error_of({"sources": {"health": {"checks": {}}}})
    assert "sources.health.failures_before_down: must be >= 1" in error_of(
        {"sources": {"health": {"failures_before_down": 0}}})


def test_trusted_proxies_are_cidrs():
    cfg = build({"server": {"trusted_proxies": ["10.0.0.0/8", "fd00::/8", "192.168.1.7"]}})
    assert cfg.server.trusted_proxies == ("10.0.0.0/8", "fd00::/8", "192.168.1.7")
    assert "server.trusted_proxies[1]: must be an IP network" in error_of(
        {"server": {"trusted_proxies": ["10.0.0.0/8", "10.0.0.0/33"]}})


def test_slack_webhook_must_be_https():
    assert build({"notify": {"slack_webhook_url": "https://hooks.slack.com/services/T0/B0/abcdefghijkl"}})
    msg = error_of({"notify": {"slack_webhook_url": "http://hooks.slack.com/services/T0/B0/abcdefghijkl"}})
    assert msg.startswith("notify.slack_webhook_url: must be an https:// URL") and "abcdefghijkl" not in msg


# ----------------------------------------------------------------------------- issue 13 item 8: finite, bounded


@pytest.mark.parametrize("raw, key", [
    ({"broadcast": {"interval": float("inf")}}, "broadcast.interval"),
    ({"broadcast": {"interval": float("nan")}}, "broadcast.interval"),
    ({"broadcast": {"heartbeat": float("inf")}}, "broadcast.heartbeat"),
    ({"sources": {"prometheus": {"timeout": float("nan")}}}, "sources.prometheus.timeout"),
    ({"server": {"client_rate_limit": float("nan")}}, "server.client_rate_limit"),
    ({"broadcast": {"history_size": 99999999999999999999}}, "broadcast.history_size"),
    ({"server": {"max_connections": 10**12}}, "server.max_connections"),
    ({"sources": {"business": {"timeout": 1e308}}}, "sources.business.timeout"),
    ({"server": {"handshake_timeout": 10**400}}, "server.handshake_timeout"),
])
def test_non_finite_and_huge_numbers_are_errors_naming_the_key(raw, key):
    msg = error_of(raw)
    assert msg.startswith(f"{key}: must be"), msg


def test_nan_from_the_environment_is_rejected_too():
    assert error_of({}, {"HUB_BROADCAST__INTERVAL": "nan"}).startswith(
        "HUB_BROADCAST__INTERVAL: broadcast.interval: must be a finite number")


# ----------------------------------------------------------------------------- item 9: clean errors


def test_config_file_that_is_not_utf8_is_a_clear_error(tmp_path):
    p = tmp_path / "latin1.toml"
    p.write_bytes('[server]\nhost = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 0xe9 at offset 20\)"):
        load_config(p, environ={})


@pytest.mark.parametrize("raw, env, key", [
    ({"sources": {"prometheus": {"url": "http://[::1"}}}, {}, "sources.prometheus.url"),
    ({"cluster": {"redis_url": "redis://[::1"}}, {}, "cluster.redis_url"),
    ({"server": {"allowed_origins": ["http://[::1"]}}, {}, "server.allowed_origins[0]"),
    ({"server": {"allowed_origins": ["http://h:99999"]}}, {}, "server.allowed_origins[0]"),
    ({}, {"PROMETHEUS_URL": "http://[::1"}, "PROMETHEUS_URL: sources.prometheus.url"),
    ({"sources": {"business": {"mongodb_uri": "mongodb://[::1/x"}}}, {}, "sources.business.mongodb_uri"),
    ({"sources": {"business": {"mongodb_uri": "mongodb://a:1,b:x/db"}}}, {}, "sources.business.mongodb_uri"),
    ({"sources": {"health": {"checks": {"web": "http://[zz]/"}}}}, {}, "sources.health.checks.web"),
])
def test_unparsable_urls_are_errors_naming_the_key(raw, env, key):
    assert error_of(raw, env).startswith(f"{key}: "), error_of(raw, env)


def test_section_that_is_not_a_table_plus_env_override_is_a_clean_error():
    msg = error_of({"server": "x"}, {"HUB_SERVER__PORT": "1"})
    assert msg == "server: expected a table, got a string (while applying HUB_SERVER__PORT)"


@pytest.mark.parametrize("section", ["prometheus", "health"])
def test_ca_file_that_is_not_pem_is_an_error(tmp_path, section):
    bad = tmp_path / "ca.pem"
    bad.write_bytes(b"\x00\x01 not a certificate")
    msg = error_of({"sources": {section: {"ca_file": str(bad)}}})
    assert msg.startswith(f"sources.{section}.ca_file: is not a PEM certificate bundle"), msg
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
    assert error_of({"sources": {section: {"ca_file": str(garbage)}}}).startswith(
        f"sources.{section}.ca_file: is not a valid PEM certificate bundle")
    assert "file does not exist" in error_of({"sources": {section: {"ca_file": str(tmp_path / "nope")}}})


def test_a_real_pem_bundle_is_accepted():
    import certifi

    cfg = build({"sources": {"prometheus": {"ca_file": certifi.where()}, "health": {"ca_file": certifi.where()}}})
    assert cfg.sources.prometheus.ca_file == certifi.where()


@pytest.mark.parametrize("overrides, label, key", [
    ({"server.port": 70000}, "--port", "server.port: must be <= 65535, got 70000"),
    ({"server.port": -5}, "--port", "server.port: must be >= 0, got -5"),
    ({"server.host": "not a host"}, "--host", "server.host: must be an IP address or a host name"),
    ({"server.host": ""}, "--host", "server.host: must not be empty"),
    ({"server.host": "http://x"}, "--host", "server.host: must be an IP address"),
])
def test_with_overrides_validates_like_the_file_and_names_the_option(overrides, label, key):
    with pytest.raises(ConfigError) as info:
        with_overrides(Config(), overrides, labels={"server.host": "--host", "server.port": "--port"})
    assert str(info.value).startswith(f"{label}: {key}"), str(info.value)


def test_with_overrides_keeps_everything_else():
    base = build({"auth": {"tokens": [{"name": "a", "hash": "plain"}]}, "server": {"max_connections": 7}})
    cfg = with_overrides(base, {"server.host": "::", "server.port": 0})
    assert (cfg.server.host, cfg.server.port, cfg.server.max_connections) == ("::", 0, 7)
    assert cfg.auth == base.auth and cfg.sources == base.sources
    with pytest.raises(ConfigError, match="server.nope is not a config key"):
        with_overrides(base, {"server.nope": 1})


# ----------------------------------------------------------------------------- item 10: nothing silent


def test_unknown_key_under_a_known_section_in_the_environment_is_an_error():
    with pytest.raises(ConfigError, match=r"^HUB_SERVER__NOPE: server.nope is not a config key"):
        build({}, {"HUB_SERVER__NOPE": "1"})
    with pytest.raises(ConfigError, match=r"^HUB_SOURCES__PROMETHEUS__URLL: "):
        build({}, {"HUB_SOURCES__PROMETHEUS__URLL": "http://x"})
    with pytest.raises(ConfigError, match=r"^HUB_SERVER__PORT__X: "):
        build({}, {"HUB_SERVER__PORT__X": "1"})
    # Variables of other tools (no known section) and without "__" stay ignored.
    assert env_overrides({"HUB_REQUIRE_SERVICES": "1", "HUB_NOT__A__KEY": "x", "HUB_CONFIG": "c"}) == []


def test_empty_host_is_an_error_from_file_and_environment():
    assert error_of({"server": {"host": ""}}) == "server.host: must not be empty"
    assert error_of({}, {"HUB_SERVER__HOST": ""}) == "HUB_SERVER__HOST: server.host: must not be empty"


def test_port_zero_means_an_ephemeral_port():
    assert build({"server": {"port": 0}}).server.port == 0


# ----------------------------------------------------------------------------- item 11: no secret in errors


def test_plaintext_token_in_place_of_a_table_is_not_echoed():
    msg = error_of({"auth": {"tokens": ["PLAINTEXTSECRETTOKEN"]}})
    assert msg == "auth.tokens[0]: expected a table, got a string"


def test_malformed_token_hash_is_not_echoed():
    bad_hash = "sha256:" + "ab" * 31 + "zz"
    msg = error_of({"auth": {"tokens": [{"name": "wall", "hash": bad_hash}]}})
    assert msg.startswith("auth.tokens[0].hash: 'sha256:' must be followed by 64 hex digits")
    assert bad_hash not in msg and "abab" not in msg
    assert "SECRETHASH" not in error_of({"auth": {"tokens": [{"name": "w", "hash": "SECRETHASH", "x": 1}]}})
    assert "SECRETHASH" not in error_of({"auth": {"tokens": [{"name": "w", "hash": ["SECRETHASH"]}]}})


@pytest.mark.parametrize("text", ['[{name = "a", hash = "SECRETVALUE"', '{name = "a", hash = "SECRETVALUE"}',
                                  '["SECRETVALUE"]', "SECRETVALUE"])
def test_bad_auth_tokens_variable_does_not_echo_its_value(text):
    msg = error_of({}, {"HUB_AUTH__TOKENS": text})
    assert msg.startswith("HUB_AUTH__TOKENS") and "auth.tokens" in msg and "SECRETVALUE" not in msg


@pytest.mark.parametrize("raw", [
    {"sources": {"prometheus": {"bearer_token": 12345678}}},
    {"sources": {"prometheus": {"basic_auth_user": "u", "basic_auth_password": ["SECRETPW"]}}},
    {"sources": {"business": {"mongodb_uri": "mongo://reader:SECRETPW@db/x"}}},
    {"sources": {"business": {"mongodb_uri": "SECRETPW"}}},
    {"cluster": {"redis_url": "http://:SECRETPW@redis:6379"}},
    {"sources": {"prometheus": {"url": "ftp://u:SECRETPW@prom"}}},
    {"sources": {"health": {"checks": {"a": "gopher://u:SECRETPW@x/"}}}},
    {"notify": {"slack_webhook_url": "http://hooks.slack.com/services/SECRETPW"}},
])
def test_errors_about_secret_keys_never_echo_the_secret(raw):
    msg = error_of(raw)
    assert "SECRETPW" not in msg and "12345678" not in msg, msg


def test_url_credentials_are_scrubbed_in_base64_and_url_encoded_forms():
    cfg = build({"sources": {"prometheus": {"url": "http://prom:p%40ss w0rd!@prom.internal:9090"}}})
    secrets = secrets_of(cfg)
    basic = base64.b64encode(b"prom:p@ss w0rd!").decode()
    echoed = (f"401 for Authorization: Basic {basic}; url had p%40ss w0rd! and p%40ss%20w0rd%21 "
              f"and p@ss w0rd!")
    out = scrub(echoed, secrets)
    for form in (basic, "p%40ss w0rd!", "p%40ss%20w0rd%21", "p@ss w0rd!"):
        assert form not in out, out
    # scrub alone expands a URL passed as a secret, too.
    assert basic not in scrub(echoed, ["http://prom:p%40ss w0rd!@prom.internal:9090"])


def test_basic_auth_pair_is_scrubbed_as_a_header():
    cfg = build({"sources": {"prometheus": {"basic_auth_user": "ops", "basic_auth_password": "hunter2!"}}})
    header = base64.b64encode(b"ops:hunter2!").decode()
    assert scrub(f"Basic {header}", secrets_of(cfg)) == "Basic ***"


def test_secrets_of_includes_webhook_and_its_path_token_and_health_check_passwords():
    hook = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"
    cfg = build({"notify": {"slack_webhook_url": hook},
                 "sources": {"health": {"checks": {"api": "https://probe:chk-pw-1@api/health"}}}})
    secrets = secrets_of(cfg)
    assert hook in secrets and "XXXXXXXXXXXXXXXXXXXXXXXX" in secrets and "chk-pw-1" in secrets
    assert scrub("POST /services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX failed", secrets) == "POST *** failed"
    shown = redacted_dict(cfg)
    assert shown["notify"]["slack_webhook_url"] == "https://hooks.slack.com/<redacted>"
    assert shown["sources"]["health"]["checks"]["api"] == "https://probe:***@api/health"


def test_redact_url_and_passwords_of_never_raise():
    assert redact_url("http://[::1") == "http://[::1"
    assert redact_url("mongodb://u:p@ss@h1:1,h2:2/db?x=1") == "mongodb://u:***@h1:1,h2:2/db?x=1"
    assert passwords_of("mongodb://u:p%40ss@h1,h2/db") == ["p%40ss", "p@ss"]
    assert passwords_of("http://[::1") == [] and passwords_of("") == []


def test_env_overrides_are_validated_like_the_file():
    assert error_of({}, {"HUB_SERVER__PORT": "70000"}) == \
        "HUB_SERVER__PORT: server.port: must be <= 65535, got 70000"
    assert error_of({}, {"HUB_SERVER__TRUSTED_PROXIES": '["nope"]'}).startswith(
        "HUB_SERVER__TRUSTED_PROXIES: server.trusted_proxies[0]: must be an IP network")
    assert error_of({}, {"HUB_SOURCES__PROMETHEUS__BASIC_AUTH_PASSWORD": "pw"}).startswith(
        "HUB_SOURCES__PROMETHEUS__BASIC_AUTH_PASSWORD: sources.prometheus.basic_auth_user/basic_auth_password")
    cfg = build({}, {"HUB_SOURCES__HEALTH__CHECKS": '{api = "http://api/health"}',
                     "HUB_NOTIFY__SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/a/b/c"})
    assert dict(cfg.sources.health.checks) == {"api": "http://api/health"}
    assert cfg.notify.slack_webhook_url.endswith("/a/b/c")


def test_no_secret_reaches_the_error_through_re_exported_names():
    from hub.config import redact_url as r1
    from hub.config import scrub as s1

    assert (r1, s1) == (redact_url, scrub)
    assert re.fullmatch(r"\*\*\*", scrub("abc", ["abc"]))
