"""Every message decodes identically for every kind of client: aiohttp with and without
permessage-deflate, a Node `ws` client (with deflate, at the seed's old address `/`), Chromium, and a
raw socket that offers no extension and so must get plain frames."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import subprocess
import threading
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.fanout import run as fanout_run
from tests.support import need_program
from tests.support.browser import chromium, open_page, wait_for  # noqa: F401
from tests.support.hubproc import HubProcess

pytestmark = [pytest.mark.timeout(180)]
WANT = 14  # metrics_update messages each client collects (all run at once, so their seqs overlap)

NODE_CLIENT = r"""
const WebSocket = require('ws');
const ws = new WebSocket(process.argv[1], { perMessageDeflate: true });
const want = Number(process.argv[2]);
let n = 0;
ws.on('open', () => { process.stdout.write(JSON.stringify({ extensions: ws.extensions }) + '\n'); });
ws.on('message', (data) => {
  const m = JSON.parse(data.toString());
  process.stdout.write(JSON.stringify(m) + '\n');
  if (m.type === 'metrics_update' && ++n >= want) ws.close(1000);
});
ws.on('close', () => process.exit(0));
ws.on('error', (e) => { console.error(String(e)); process.exit(2); });
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("wire")
    cfg = {"broadcast": {"interval": 0.3, "heartbeat": 30.0},
           "sources": {"prometheus": {"enabled": False}, "business": {"enabled": False}}}
    proc = HubProcess(cfg, tmp).start()
    try:
        yield proc
    finally:
        proc.stop()


def _raw_client(port: int, want: int) -> list[dict[str, Any]]:
    """A bare-socket client offering no extension: every frame must be a plain, unmasked text frame."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(4096)
    head, buf = buf.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101") and b"sec-websocket-extensions" not in head.lower()
    out: list[dict[str, Any]] = []
    while sum(m["type"] == "metrics_update" for m in out) < want:
        while len(buf) < 2 or len(buf) < _frame_len(buf):
            buf += sock.recv(1 << 16)
        n = _frame_len(buf)
        frame, buf = buf[:n], buf[n:]
        assert frame[0] == 0x81, f"expected a plain final text frame, got {frame[0]:#x}"  # RSV1 clear
        out.append(json.loads(frame[_header_len(frame):]))
    sock.close()
    return out


def _header_len(b: bytes) -> int:
    return {126: 4, 127: 10}.get(b[1] & 0x7F, 2)


def _frame_len(b: bytes) -> int:
    if len(b) < 2:
        return 1 << 30
    n = b[1] & 0x7F
    if n == 126:
        return 4 + struct.unpack("!H", b[2:4])[0] if len(b) >= 4 else 1 << 30
    if n == 127:
        return 10 + struct.unpack("!Q", b[2:10])[0] if len(b) >= 10 else 1 << 30
    return 2 + n


async def _aiohttp_client(url: str, compress: int, want: int) -> tuple[list[dict[str, Any]], str]:
    out: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as s, s.ws_connect(url + "/ws", compress=compress) as ws:
        ext = ws._response.headers.get("Sec-WebSocket-Extensions", "")
        while sum(m["type"] == "metrics_update" for m in out) < want:
            msg = await ws.receive(timeout=10)
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            out.append(json.loads(msg.data))
    return out, ext


def _by_seq(msgs: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {m["seq"]: m for m in msgs if m.get("type") == "metrics_update"}


def test_every_client_decodes_the_same_messages(hub: HubProcess, open_page) -> None:  # noqa: F811
    need_program("node", hint="the drop-in test connects with the ws package like the guide's dashboards")
    fanout_run.ensure_node_deps(fanout_run.FANOUT_DIR)
    ws_url = hub.url.replace("http", "ws", 1)
    node = subprocess.Popen(["node", "-e", NODE_CLIENT, ws_url + "/", str(WANT)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NODE_PATH": str(Path(fanout_run.FANOUT_DIR) / "node_modules")})
    results: dict[str, Any] = {}

    def in_thread() -> None:
        async def all_three() -> None:
            raw, (deflate, deflate_ext), (plain, plain_ext) = await asyncio.gather(
                asyncio.to_thread(_raw_client, hub.port, WANT),
                _aiohttp_client(hub.url, 15, WANT), _aiohttp_client(hub.url, 0, WANT))
            results.update(raw=raw, deflate=deflate, deflate_ext=deflate_ext, plain=plain, plain_ext=plain_ext)

        asyncio.run(all_three())

    t = threading.Thread(target=in_thread)
    t.start()
    page = open_page()
    page.page.goto(hub.url + "/health")
    page.page.evaluate("""(url) => { window.__msgs = []; const ws = new WebSocket(url);
        ws.onmessage = (e) => window.__msgs.push(e.data); window.__ws = ws; }""", ws_url + "/ws")
    wait_for(lambda: sum('"metrics_update"' in m for m in page.js("window.__msgs")) >= WANT, timeout=20,
             what="Chromium's messages")
    chromium_ext = page.js("window.__ws.extensions")
    chromium_msgs = [json.loads(m) for m in page.js("window.__msgs")]
    out, err = node.communicate(timeout=30)
    t.join(timeout=60)
    assert node.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    node_ext, node_msgs = lines[0]["extensions"], lines[1:]

    # Compression was negotiated where offered (Node's ws reports extension names only), and the
    # hub's answer always adds server_no_context_takeover.
    for ext in (results["deflate_ext"], node_ext, chromium_ext):
        assert "permessage-deflate" in ext, ext
    assert "server_no_context_takeover" in results["deflate_ext"]
    assert results["plain_ext"] == ""

    views = {"raw": _by_seq(results["raw"]), "plain": _by_seq(results["plain"]),
             "deflate": _by_seq(results["deflate"]), "node": _by_seq(node_msgs),
             "chromium": _by_seq(chromium_msgs)}
    common = set.intersection(*(set(v) for v in views.values()))
    assert len(common) >= 2, {k: sorted(v) for k, v in views.items()}
    for seq in common:
        first = views["raw"][seq]
        for name, view in views.items():
            assert view[seq] == first, (name, seq)
    for name, view in views.items():
        seqs = sorted(view)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (name, seqs)


def test_a_compressed_broadcast_is_a_valid_message_for_any_context_takeover() -> None:
    # RFC 7692 7.2.1: a message compressed on its own decodes in a receiver that kept its window
    # from earlier messages (context takeover) exactly as in a fresh one.
    from hub.frames import deflate_message

    a, b = b'{"seq":1,"x":"' + b"a" * 5000 + b'"}', b'{"seq":2,"x":"' + b"a" * 5000 + b'"}'
    d = zlib.decompressobj(-15)
    tail = b"\x00\x00\xff\xff"
    assert d.decompress(deflate_message(a) + tail) == a
    assert d.decompress(deflate_message(b) + tail) == b  # same inflater: context taken over
