"""Sign-in parts without a provider: the [auth.oidc] keys, rights from groups, the memory session store,
"https" defined once, and what a principal signs and audits."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from hub.admission import is_https, parse_networks
from hub.auth import Principal
from hub.config import ConfigError, build_config
from hub.oidc.gate import groups_of, rights
from hub.oidc.sessions import MAX_PENDING, Session, SessionStore

ISSUER = "https://login.example.org/realms/ops"


def oidc(**keys: Any) -> Any:
    return build_config({"auth": {"oidc": {"issuer": ISSUER, "client_id": "hub", **keys}}}, environ={}).auth.oidc


def test_defaults_and_a_full_section() -> None:
    cfg = oidc(roles={"oncall": {"actions": ["silence"]}})
    assert (cfg.scopes, cfg.roles_claim, cfg.redirect_url, cfg.session_ttl) == (
        ("openid", "profile", "email"), "groups", "", 28800.0)
    assert cfg.roles["oncall"].actions == ("silence",) and cfg.roles["oncall"].topics == ()


@pytest.mark.parametrize(("keys", "message"), [
    ({"roles": {"oncall": {}}, "client_id": ""}, "auth.oidc.client_id: required with auth.oidc.issuer"),
    ({}, "auth.oidc.roles: map at least one group of the identity provider"),
    ({"roles": {"g": {}}, "scopes": ["profile"]}, "auth.oidc.scopes: must include \"openid\", got ['profile']"),
    ({"roles": {"g": {"topics": ["nope"]}}}, "auth.oidc.roles.g.topics[0]: must be one of"),
    ({"roles": {"g": {"actions": ["delete"]}}}, "auth.oidc.roles.g.actions[0]: must be one of"),
    ({"roles": {"g": {}}, "session_ttl": 0}, "auth.oidc.session_ttl: must be > 0 seconds, got 0"),
    ({"roles": {"g": {}}, "redirect_url": "ftp://x"}, "auth.oidc.redirect_url: must be an http(s) URL"),
])
def test_bad_sections_name_the_key(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        oidc(**keys)
    assert str(caught.value).startswith(message), str(caught.value)


def test_keys_without_an_issuer_are_refused_and_the_secret_is_not_shown() -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({"auth": {"oidc": {"client_id": "hub", "client_secret": "s3cr3t-value"}}}, environ={})
    assert str(caught.value).startswith("auth.oidc.issuer: required when auth.oidc.client_id is set")
    with pytest.raises(ConfigError) as caught:
        build_config({"auth": {"oidc": {"issuer": ISSUER, "client_id": "hub", "client_secret": 5,
                                        "roles": {"g": {}}}}}, environ={})
    assert str(caught.value) == "auth.oidc.client_secret: expected a string, got an integer (not shown: secret)"


def test_rights_are_the_union_of_mapped_groups() -> None:
    roles = oidc(roles={"oncall": {"actions": ["silence"], "topics": ["alerts", "health"]},
                        "sys": {"topics": ["system"]}, "all": {}}).roles
    assert rights(roles, ["sys", "unknown"]) == (("system",), ())
    assert rights(roles, ["oncall", "sys"]) == (("system", "alerts", "health"), ("silence",))
    assert rights(roles, ["sys", "all"]) == (None, ())  # a group with no topics listed sees everything
    assert rights(roles, ["unknown"]) is None
    assert rights(roles, []) is None


def test_groups_claim_forms() -> None:
    assert groups_of({"groups": ["a", 1, "b"]}, "groups") == ("a", "b")
    assert groups_of({"roles": "admin"}, "roles") == ("admin",)
    assert groups_of({"groups": {"a": 1}}, "groups") == ()
    assert groups_of({}, "groups") == ()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_store_expires_takes_once_and_reports_alive() -> None:
    clock = Clock()
    store = SessionStore(clock=clock)
    await store.put("session:a", b"A", 10)
    await store.put("login:s", b"S", 5)
    assert await store.get("session:a") == b"A"
    assert await store.alive(["session:a", "session:b"]) == [True, False]
    assert await store.take("login:s") == b"S"
    assert await store.take("login:s") is None  # a pending login is used once
    clock.now += 10
    assert await store.get("session:a") is None
    assert await store.alive(["session:a"]) == [False]
    await store.put("session:c", b"C", 10)
    await store.delete("session:c")
    assert await store.get("session:c") is None


async def test_memory_store_bounds_pending_logins_not_sessions() -> None:
    store = SessionStore(clock=Clock())
    await store.put("session:keep", b"K", 100)
    for i in range(MAX_PENDING + 5):
        await store.put(f"login:{i}", b"x", 100)
    assert await store.get("login:0") is None and await store.get(f"login:{MAX_PENDING + 4}") == b"x"
    assert await store.get("session:keep") == b"K"


def test_session_round_trip_and_foreign_values() -> None:
    s = Session(sub="u1", name="Ann", email="ann@example.org", groups=("oncall",), topics=None,
                actions=("silence",), csrf="c" * 32, expires=2000.0, id_token="x.y.z")
    assert Session.from_json(s.to_json()) == s
    assert Session.from_json(b"not json") is None
    assert Session.from_json(b'{"sub": "u1"}') is None


@pytest.mark.parametrize(("peer", "proto", "expected"), [
    ("10.0.0.5", "https", True),          # a trusted proxy says https
    ("10.0.0.5", "http, https", True),    # the right-most value: the one the proxy wrote
    ("10.0.0.5", "https, http", False),
    ("192.0.2.9", "https", False),        # anyone else's header is not believed
    ("10.0.0.5", None, False),
])
def test_https_is_the_request_or_a_trusted_proxys_header(peer: str, proto: str | None, expected: bool) -> None:
    headers = {"X-Forwarded-Proto": proto} if proto else {}
    req = make_mocked_request("GET", "/", headers=headers, transport=_Transport(peer))
    assert is_https(req, parse_networks(["10.0.0.0/8"])) is expected


class _Transport:
    def __init__(self, peer: str) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.peer, 1234) if name == "peername" else default


def test_a_person_signs_with_name_and_email_a_token_with_its_name() -> None:
    person = Principal(name="Ann Lee", topics=None, actions=("silence",), sub="u1", email="ann@example.org",
                       session="session:abc")
    token = Principal(name="wallboard", topics=None)
    assert person.created_by == "Ann Lee <ann@example.org>"
    assert person.audit() == {"sub": "u1", "name": "Ann Lee", "email": "ann@example.org"}
    assert token.created_by == "wallboard" and token.audit() == {"token": "wallboard"}
    assert token.person_fields() == {} and person.person_fields() == {"sub": "u1", "email": "ann@example.org"}
