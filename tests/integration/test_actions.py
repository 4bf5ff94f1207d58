"""Who may act: `[auth] tokens[].actions`, GET /api/me, and the refusals every action endpoint shares."""

from __future__ import annotations

import pytest

from hub.app import create_app
from hub.auth import hash_token
from hub.config import ConfigError, build_config

READER, ACTOR = "read-token-0123456789", "act-token-0123456789"


def tokens(make_config):
    return make_config({"auth": {"tokens": [
        {"name": "wall", "hash": hash_token(READER), "topics": ["alerts"]},
        {"name": "alice", "hash": hash_token(ACTOR), "actions": ["silence"]},
    ]}})


async def test_me_names_the_callers_topics_and_actions(aiohttp_client, make_config):
    client = await aiohttp_client(create_app(tokens(make_config)))
    resp = await client.get("/api/me", headers={"Authorization": f"Bearer {ACTOR}"})
    assert resp.status == 200
    assert await resp.json() == {"name": "alice", "actions": ["silence"],
                                 "topics": ["system", "application", "business", "alerts", "health"]}
    resp = await client.get("/api/me", headers={"Authorization": f"Bearer {READER}"})
    assert await resp.json() == {"name": "wall", "topics": ["alerts"], "actions": []}
    resp = await client.get("/api/me")
    assert resp.status == 401 and resp.headers["WWW-Authenticate"] == 'Bearer realm="hub"'
    resp = await client.get("/api/me", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401 and "invalid token" in (await resp.json())["error"]


async def test_open_mode_has_no_credential(aiohttp_client, make_config):
    client = await aiohttp_client(create_app(make_config()))
    resp = await client.get("/api/me")
    assert resp.status == 401
    assert "open mode" in (await resp.json())["error"]


def test_an_unknown_action_is_refused_naming_the_key():
    with pytest.raises(ConfigError) as err:
        build_config({"auth": {"tokens": [{"name": "x", "hash": hash_token(ACTOR), "actions": ["page"]}]}},
                     environ={})
    assert "actions" in str(err.value) and "page" in str(err.value)
