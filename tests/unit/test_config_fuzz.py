"""Hypothesis: arbitrary TOML values and environment overrides give a Config or a ConfigError naming the key.

Never another exception, and never a planted secret in the message or in `check-config`'s output.
"""

from __future__ import annotations

import json
import re
import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.config import Config, ConfigError, build_config, load_config, redacted_dict
from tests.support.hubproc import toml_value
from tests.unit.test_config import leaf_keys

SECRET = "PLANTEDSECRET"
KEYS = leaf_keys()
SECTIONS = sorted({p.split(".")[0] for p in KEYS})
FUZZ = settings(max_examples=int(__import__("os").environ.get("FUZZ_N", "400")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ODD = ["", " ", "\x00", "é", "nan", "inf", "-inf", "1h", "2h", "system", "nope", "0", "-1",
       "http://[::1", "http://[zz]", "http://h:99999", "http://h:-1", "ftp://h:21", "http://", "https://x/y?z",
       "redis://", "unix://", "unix:///run/r.sock", "rediss://r:6380/0", "mongodb://", "mongodb://a:1,b:2/db",
       "mongodb+srv://a:1/db", "mongodb+srv://a,b/db", "mongodb://[::1]:27017/x", "0.0.0.0", "::", "[::1]",
       "10.0.0.0/8", "10.0.0.0/33", "fd00::/8", "localhost", "a" * 300, "sha256:" + "a" * 64, "sha256:xyz",
       "/dev/null", "/etc/hostname", "/nonexistent.pem", "https://hooks.slack.com/services/a/b/c"]
scalars = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**25), max_value=10**25),
    st.sampled_from([0, 1, -1, 65535, 65536, 10**20, 10**400, 99999999999999999999]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 0.05, 1e308, 5e-324]),
    st.sampled_from(ODD),
    st.text(max_size=20),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=8)

secret_word = st.builds(lambda s: SECRET + s, st.text(string.ascii_letters + string.digits + "%@:!~", max_size=6))
url_schemes = st.sampled_from(["http", "https", "mongodb", "mongodb+srv", "redis", "rediss", "ftp", "unix", "x"])
hosts = st.sampled_from(["h", "h:1", "h:99999", "[::1", "[::1]:6379", "a:1,b:2", "", "db.internal"])


@st.composite
def secret_values(draw: st.DrawFn, kind: str) -> Any:
    """A value for a secret key that plants SECRET where only a secret belongs."""
    word = draw(secret_word)
    if kind == "url":
        user = draw(st.sampled_from(["", "u", "reader"]))
        return f"{draw(url_schemes)}://{user}:{word}@{draw(hosts)}{draw(st.sampled_from(['', '/', '/db', '/x?y=1']))}"
    if kind == "webhook":
        return draw(st.sampled_from([f"https://hooks.slack.com/services/{word}", f"http://hooks/{word}",
                                     word, f"https://[::1/{word}", f"ftp://x/{word}"]))
    return draw(st.one_of(st.just(word), st.just("sha256:" + word), st.just([word]), st.just({"x": word})))


def token_tables() -> st.SearchStrategy[Any]:
    token = st.fixed_dictionaries(
        {"name": st.one_of(st.sampled_from(["a", "b", ""]), scalars)},
        optional={"hash": st.one_of(secret_values("value"), st.just("sha256:" + "0" * 64)),
                  "topics": st.one_of(st.lists(st.sampled_from(["system", "alerts", "bogus"]), max_size=3), scalars),
                  "extra": scalars})
    return st.one_of(st.lists(token, max_size=3), st.lists(secret_word, min_size=1, max_size=2), secret_word)


GOOD = {"host": ["127.0.0.1", "::", "localhost"], "origin": ["https://ops.example.com", "http://h:8080"],
        "cidr": ["10.0.0.0/8", "fd00::/8"], "http_url": ["http://prom:9090", "https://x/"],
        "https_url": ["", "https://hooks.slack.com/services/T/B/abcdefghij"], "redis_url": ["", "redis://r:6379/0"],
        "mongodb_uri": ["mongodb://db:27017/h", "mongodb+srv://c.example/h"], "pem_file": [""],
        "token_hash": ["sha256:" + "0" * 64]}


def valid_for(path: str) -> st.SearchStrategy[Any]:
    """Values the key accepts, so that most examples get past one key and on to the next."""
    tp, spec, default = KEYS[path]
    options: list[st.SearchStrategy[Any]] = [st.just(default)]
    if spec is not None and tp is int:
        options.append(st.integers(int(spec.lo if spec.lo is not None else spec.gt + 1), int(spec.hi)))
    if spec is not None and tp is float:
        options.append(st.floats(spec.lo if spec.lo is not None else spec.gt, spec.hi, exclude_min=spec.lo is None))
    if spec is not None and spec.choices:
        options.append(st.sampled_from(spec.choices))
    if spec is not None and spec.check in GOOD and tp is str:
        options.append(st.sampled_from(GOOD[spec.check]))
    return st.one_of(options)


def value_for(path: str) -> st.SearchStrategy[Any]:
    _tp, spec, _default = KEYS[path]
    if path == "auth.tokens":
        return token_tables()
    if spec is not None and spec.secret:
        if path.endswith("checks"):
            return st.dictionaries(st.sampled_from(["a", "b", ""]), secret_values("url"), max_size=2)
        return st.one_of(secret_values(spec.secret), valid_for(path), scalars)
    return st.one_of(valid_for(path), valid_for(path), values)


@st.composite
def raw_configs(draw: st.DrawFn) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    paths = draw(st.lists(st.sampled_from(sorted(KEYS) + ["server.nope", "nope", "sources.health.nope"]),
                          max_size=6, unique=True))
    for path in paths:
        value = draw(value_for(path) if path in KEYS else values)
        node = raw
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[last] = value
    if draw(st.booleans()) and draw(st.integers(0, 9)) == 0:
        raw[draw(st.sampled_from(SECTIONS))] = draw(scalars)  # a section that is not a table
    return raw


def planted_paths(raw: dict[str, Any], env: dict[str, str]) -> list[str]:
    """Every dotted path the raw config or the environment sets."""
    out: list[str] = []

    def walk(node: dict[str, Any], prefix: str) -> None:
        for k, v in node.items():
            path = f"{prefix}.{k}" if prefix else k
            out.append(path)
            if isinstance(v, dict):
                walk(v, path)

    walk(raw, "")
    seed = {"PROMETHEUS_URL": "sources.prometheus.url", "MONGODB_URI": "sources.business.mongodb_uri"}
    out += [seed.get(name) or name[4:].lower().replace("__", ".") for name in env]
    return out


def to_env_text(value: Any) -> str:
    """A valid value as a HUB_* variable holds it: strings raw, everything else as a TOML literal."""
    if isinstance(value, str):
        return value
    return toml_value(list(value) if isinstance(value, tuple) else dict(value) if hasattr(value, "keys") else value)


def env_name(path: str) -> str:
    return "HUB_" + path.upper().replace(".", "__")


@st.composite
def environments(draw: st.DrawFn) -> dict[str, str]:
    env: dict[str, str] = {}
    for path in draw(st.lists(st.sampled_from(sorted(KEYS)), max_size=3, unique=True)):
        spec = KEYS[path][1]
        if path == "auth.tokens" or (spec is not None and spec.secret):
            text = draw(st.one_of(secret_word, secret_values("url"),
                                  secret_word.map(lambda w: f'[{{name = "a", hash = "{w}"'),
                                  secret_word.map(lambda w: f'["{w}"]')))
        else:
            text = draw(st.one_of(valid_for(path).map(to_env_text), st.sampled_from(ODD), st.text(max_size=12),
                                  st.sampled_from(["1", "0.5", "true", "[]", "{}", "nan", "inf", "99999999999999999999"])))
        env[env_name(path)] = text
    if draw(st.booleans()):
        env[draw(st.sampled_from(["PROMETHEUS_URL", "MONGODB_URI"]))] = draw(secret_values("url"))
    if draw(st.integers(0, 5)) == 0:
        env[draw(st.sampled_from(["HUB_SERVER__NOPE", "HUB_SOURCES__X", "HUB_AUTH__TOKENS__NAME"]))] = "1"
    return env


@FUZZ
@given(raw=raw_configs(), env=st.one_of(st.just({}), environments()))
def test_arbitrary_values_and_overrides_give_a_config_or_an_error_naming_the_key(raw, env):
    try:
        cfg = build_config(raw, environ=env)
    except ConfigError as exc:
        msg = str(exc)
        assert SECRET not in msg, msg
        assert exc.key and exc.key in msg, msg
        # The key named is one that was set (or lies inside or above one that was set).
        keys = [re.sub(r"\[\d+\]", "", k) for k in exc.keys]
        assert any(k.startswith(p) or p.startswith(k) for k in keys for p in planted_paths(raw, env)), msg
        return
    assert isinstance(cfg, Config)
    shown = json.dumps(redacted_dict(cfg))
    assert SECRET not in shown, shown


@settings(max_examples=200, deadline=None, database=None)
@given(data=st.one_of(st.binary(max_size=200),
                      st.lists(st.sampled_from(["[server]", "port = 1", "port = nan", "host = ''", "[[auth.tokens]]",
                                                "name = 'a'", "hash = 'x'", "[broadcast]", "interval = inf",
                                                "[sources.health.checks]", "x = 'http://[::1'", "\xff", "= 1",
                                                "history_size = " + "9" * 5000, "server = 'x'"]),
                               max_size=6).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogateescape"))))
def test_arbitrary_files_give_a_config_or_a_config_error(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("cfg") / "c.toml"
    p.write_bytes(data)
    try:
        assert isinstance(load_config(p, environ={}), Config)
    except ConfigError as exc:
        assert str(exc), data
