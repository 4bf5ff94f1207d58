"""The hub's own WebSocket receive path (hub/peer.py), byte by byte as a raw client sends it:
fragments, control frames between them, segments of any size, and every frame RFC 6455 and RFC 7692
make the server fail, with the close code the client gets."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
import zlib

import pytest
from aiohttp import WSMsgType

from hub.app import create_app
from hub.context import HUB
from tests.support.aio import recv_type, sample, wait_for
from tests.support.raw import client_frame, raw_ws_connect, read_frames_until_close

PING = b'{"type":"ping","id":7}'


def _next_frame(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    """(opcode, payload) of the next server frame (unmasked, unfragmented)."""
    def need(n: int) -> None:
        while len(buf) < n:
            chunk = sock.recv(1 << 16)
            assert chunk, "the hub closed the socket"
            buf.extend(chunk)

    need(2)
    n, head = buf[1] & 0x7F, 2
    if n == 126:
        need(4)
        n, head = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        need(10)
        n, head = struct.unpack("!Q", buf[2:10])[0], 10
    need(head + n)
    opcode, payload = buf[0] & 0x0F, bytes(buf[head:head + n])
    del buf[:head + n]
    return opcode, payload


def _until(sock: socket.socket, buf: bytearray, want: int, kind: str | None = None) -> bytes:
    """The payload of the next frame with opcode `want` (and, for text, JSON `type` == `kind`)."""
    while True:
        opcode, payload = _next_frame(sock, buf)
        if opcode == want and (kind is None or json.loads(payload)["type"] == kind):
            return payload


@pytest.fixture
async def hub_port(aiohttp_client, make_config):
    client = await aiohttp_client(create_app(make_config({"broadcast": {"interval": 5.0},
                                                          "server": {"max_message_bytes": 1000}})))
    return client


def _talk(port: int, *frames: bytes, bytewise: bool = False) -> tuple[list[bytes], list[bytes]]:
    """Send `frames` (one byte per segment when `bytewise`); return (pong payloads, pong-message ids)."""
    sock = raw_ws_connect(port)
    sock.settimeout(5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()
    try:
        _until(sock, buf, 0x1, "metrics_update")
        data = b"".join(frames)
        if bytewise:
            for i in range(len(data)):
                sock.send(data[i:i + 1])
                time.sleep(0.002)
        else:
            sock.sendall(data)
        control = [f for f in frames if f[0] & 0x0F == 0x9]
        pongs = [_until(sock, buf, 0xA) for _ in control]
        reply = json.loads(_until(sock, buf, 0x1, "pong"))
        return pongs, [reply["id"]]
    finally:
        sock.close()


async def test_a_message_in_fragments_with_a_ping_between_them_is_answered(hub_port):
    first = client_frame(0x1, PING[:5], fin=False)
    middle = client_frame(0x0, PING[5:12], fin=False)
    last = client_frame(0x0, PING[12:])
    ping = client_frame(0x9, b"hb")
    pongs, ids = await asyncio.to_thread(_talk, hub_port.server.port, first, ping, middle, last)
    assert pongs == [b"hb"] and ids == [7]


async def test_frames_split_into_one_byte_segments_are_parsed_and_counted_once(aiohttp_client, make_config):
    # A burst of 2 frames: were a frame counted once per segment, this 28-byte frame would be refused.
    cfg = make_config({"broadcast": {"interval": 5.0}, "server": {"client_rate_limit": 0.5, "client_rate_burst": 2}})
    client = await aiohttp_client(create_app(cfg))
    _, ids = await asyncio.to_thread(_talk, client.server.port, client_frame(0x1, PING), bytewise=True)
    assert ids == [7]


def _closing(port: int, *frames: bytes) -> int | None:
    sock = raw_ws_connect(port)
    try:
        sock.sendall(b"".join(frames))
        return read_frames_until_close(sock, timeout=5)[0]
    finally:
        sock.close()


@pytest.mark.parametrize("frames, code, reason", [
    ((client_frame(0x0, b"x"),), 1002, "protocol_error"),                               # continuation, no message
    ((client_frame(0x1, b"{", fin=False), client_frame(0x1, b"}")), 1002, "protocol_error"),  # new message mid-way
    ((client_frame(0x1, PING, rsv=2),), 1002, "protocol_error"),                          # RSV2
    ((client_frame(0x1, PING, rsv=4),), 1002, "protocol_error"),                          # RSV1, no deflate agreed
    ((client_frame(0x3, b"x"),), 1002, "protocol_error"),                                 # reserved opcode
    ((client_frame(0x9, b"p" * 126),), 1002, "protocol_error"),                           # control frame > 125 bytes
    ((client_frame(0x9, b"p", fin=False),), 1002, "protocol_error"),                      # fragmented control frame
    ((client_frame(0x8, b"\x03"),), 1002, "protocol_error"),                              # 1-byte close payload
    ((client_frame(0x1, b'{"type":"\xff"}'),), 1007, "protocol_error"),                   # invalid UTF-8
    ((client_frame(0x8, struct.pack("!H", 1000) + b"\xff"),), 1007, "protocol_error"),    # invalid UTF-8 reason
    ((client_frame(0x1, b"x" * 600, fin=False), client_frame(0x0, b"x" * 401)), 1009, "too_large"),
    ((client_frame(0x2, b"\x00"),), 1003, "protocol_error"),                              # binary: not supported
    ((client_frame(0x8, b""),), 1000, "error"),                                           # close without a code
], ids=["orphan-continuation", "interleaved-message", "rsv2", "rsv1-plain", "opcode-3", "long-ping",
        "fragmented-ping", "close-1-byte", "bad-utf8", "bad-utf8-close", "fragments-too-large", "binary",
        "close-no-code"])
async def test_what_the_rfcs_forbid_fails_the_connection_with_its_code(hub_port, frames, code, reason):
    hub = hub_port.app[HUB]
    got = await asyncio.to_thread(_closing, hub_port.server.port, *frames)
    assert got == code
    await wait_for(lambda: sample(hub.metrics, "hub_ws_disconnects_total", reason=reason) == 1)
    await wait_for(lambda: hub.admission.open == 0 and len(hub.peers) == 0)


async def test_a_compressed_message_is_inflated_and_one_that_inflates_past_the_limit_closes_1009(hub_port):
    hub = hub_port.app[HUB]
    async with hub_port.ws_connect("/ws", compress=15) as ws:
        await recv_type(ws, "metrics_update")
        await ws.send_str('{"type":"subscribe","topics":["system"]}')  # compressed by aiohttp's client
        assert (await recv_type(ws, "subscribed"))["topics"] == ["system"]
        big = '{"type":"ping","pad":"' + "x" * 2000 + '"}'
        assert len(zlib.compress(big.encode())) < 1000
        await ws.send_str(big)
        while (msg := await ws.receive(timeout=5)).type is WSMsgType.TEXT:
            pass
        assert msg.type is WSMsgType.CLOSE and msg.data == 1009
    await wait_for(lambda: sample(hub.metrics, "hub_ws_disconnects_total", reason="too_large") == 1)


async def test_a_bare_fin_gets_a_close_frame_and_frees_the_slot(hub_port):
    hub = hub_port.app[HUB]

    def half_close() -> int | None:
        sock = raw_ws_connect(hub_port.server.port)
        try:
            sock.shutdown(socket.SHUT_WR)
            return read_frames_until_close(sock, timeout=5)[0]
        finally:
            sock.close()

    assert await asyncio.to_thread(half_close) == 1000
    await wait_for(lambda: hub.admission.open == 0 and len(hub.peers) == 0)
    assert sample(hub.metrics, "hub_ws_disconnects_total", reason="normal") == 1
