"""permessage-deflate offers that RFC 7692 makes invalid are declined, and the connection goes on
without compression; a valid offer beside them is still taken."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import zlib

import orjson
import pytest

from hub.app import create_app


async def _upgrade(port: int, extensions: str) -> tuple[bytes, int, bytes]:
    """Upgrade with `extensions` offered: (the response head, the first frame's first byte, its
    payload inflated when RSV1 says it is compressed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                      f"Sec-WebSocket-Extensions: {extensions}\r\n\r\n").encode())
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            b0, b1 = await reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await reader.readexactly(8))
            payload = await reader.readexactly(n)
    finally:
        writer.close()
    if b0 & 0x40:  # RSV1: a compressed message (RFC 7692 7.2.2: append 00 00 ff ff, inflate raw)
        payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
    return head, b0, payload


@pytest.mark.parametrize("offer", [
    "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
    "permessage-deflate; server_max_window_bits=10; server_max_window_bits=12",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; client_max_window_bits; client_max_window_bits=12",
])
async def test_an_offer_with_a_duplicated_parameter_is_declined_and_the_socket_works_uncompressed(
        aiohttp_client, make_config, offer):
    # Before: aiohttp took the first parameter it understood and answered permessage-deflate.
    client = await aiohttp_client(create_app(make_config()))
    head, b0, payload = await _upgrade(client.server.port, offer)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"sec-websocket-extensions" not in head.lower(), head
    assert b0 & 0x70 == 0 and b0 & 0x0F == 0x1, hex(b0)  # a plain text frame
    assert orjson.loads(payload)["type"] == "metrics_update"


async def test_a_valid_offer_after_an_invalid_one_is_accepted(aiohttp_client, make_config):
    client = await aiohttp_client(create_app(make_config()))
    head, b0, payload = await _upgrade(
        client.server.port,
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10, "
        "permessage-deflate; server_max_window_bits=12")
    assert head.startswith(b"HTTP/1.1 101"), head
    ext = next(line for line in head.decode().split("\r\n") if line.lower().startswith("sec-websocket-extensions"))
    assert "server_max_window_bits=12" in ext and "server_no_context_takeover" in ext, ext
    assert b0 & 0x40, "the message is compressed"
    assert orjson.loads(payload)["type"] == "metrics_update"
