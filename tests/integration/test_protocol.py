"""RFC 6455 deviations a raw client can provoke: unmasked frames and reserved close codes fail with 1002."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest

from hub.app import create_app
from hub.context import HUB
from tests.support.aio import sample, wait_for
from tests.support.raw import raw_ws_connect, read_frames_until_close


def _frame(opcode: int, payload: bytes, *, masked: bool = True) -> bytes:
    n = len(payload)
    head = struct.pack("!BB", 0x80 | opcode, (0x80 if masked else 0) | n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _exchange(port: int, frame: bytes) -> int | None:
    sock = raw_ws_connect(port)
    try:
        sock.sendall(frame)
        code, _ = read_frames_until_close(sock, timeout=5)
        return code
    finally:
        sock.close()


@pytest.mark.parametrize("frame, expected", [
    (_frame(0x1, b'{"type":"ping"}', masked=False), 1002),      # unmasked client frame
    (_frame(0x8, struct.pack("!H", 1006)), 1002),                # reserved: "abnormal closure"
    (_frame(0x8, struct.pack("!H", 1005)), 1002),                # reserved: "no status"
    (_frame(0x8, struct.pack("!H", 5000)), 1002),                # beyond 4999
    (_frame(0x8, struct.pack("!H", 1000)), 1000),                # a normal close is echoed
    (_frame(0x8, struct.pack("!H", 4001) + b"bye"), 1000),       # an application code is fine
], ids=["unmasked", "close-1006", "close-1005", "close-5000", "close-1000", "close-4001"])
async def test_frames_rfc6455_forbids_fail_the_connection_with_1002(aiohttp_client, make_config, frame, expected):
    client = await aiohttp_client(create_app(make_config({"broadcast": {"interval": 5.0}})))
    hub = client.app[HUB]
    code = await asyncio.to_thread(_exchange, client.server.port, frame)
    assert code == expected
    if expected == 1002:
        await wait_for(lambda: sample(hub.metrics, "hub_ws_disconnects_total", reason="protocol_error") == 1)
    await wait_for(lambda: hub.admission.open == 0)


async def test_an_origin_that_cannot_be_parsed_is_a_403_not_a_500(aiohttp_client, make_config):
    client = await aiohttp_client(create_app(make_config()))
    for origin in ("http://[::1", "http://[zz]", "ftp://127.0.0.1", "http://127.0.0.1:99999"):
        resp = await client.get("/ws", headers={"Origin": origin, "Upgrade": "websocket", "Connection": "Upgrade",
                                                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                                "Sec-WebSocket-Version": "13"})
        assert resp.status == 403, origin


async def test_the_origin_scheme_must_match_the_hubs_own(aiohttp_client, make_config):
    client = await aiohttp_client(create_app(make_config()))
    host = f"{client.server.host}:{client.server.port}"
    ok = await client.ws_connect("/ws", origin=f"http://{host}")
    await ok.close()
    for origin in (f"https://{host}", f"ftp://{host}"):
        resp = await client.get("/ws", headers={"Origin": origin, "Upgrade": "websocket", "Connection": "Upgrade",
                                                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                                "Sec-WebSocket-Version": "13"})
        assert resp.status == 403, origin


async def test_pong_floods_count_against_the_rate_limit(aiohttp_client, make_config):
    cfg = make_config({"server": {"client_rate_limit": 5.0, "client_rate_burst": 10},
                       "broadcast": {"interval": 5.0}})
    client = await aiohttp_client(create_app(cfg))
    hub = client.app[HUB]

    def flood() -> int | None:
        sock = raw_ws_connect(client.server.port)
        try:
            for _ in range(200):
                try:
                    sock.sendall(_frame(0xA, b"p"))
                except OSError:
                    break
            return read_frames_until_close(sock, timeout=5)[0]
        finally:
            sock.close()

    assert await asyncio.to_thread(flood) == 1008
    await wait_for(lambda: sample(hub.metrics, "hub_ws_disconnects_total", reason="rate_limited") == 1)


async def test_a_bearer_subprotocol_in_any_case_without_hub_v1_is_refused_before_anything_logs_it(
        aiohttp_client, make_config, caplog):
    client = await aiohttp_client(create_app(make_config()))
    secret = "S3CRETTOKENVALUE"
    resp = await client.get("/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                            "Sec-WebSocket-Version": "13", "Authorization": "Bearer x",
                                            "Sec-WebSocket-Protocol": f"Bearer.{secret}"})
    assert resp.status == 400
    assert secret not in caplog.text
