"""REST under concurrency: history within the client byte budget, streamed bodies, a bounded number of
them at once, Retry-After on every 503, and REST refusals counted apart from WebSocket upgrades."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from hub.app import create_app
from hub.auth import hash_token
from hub.context import HUB, Hub
from hub.feed import Entry
from hub.bodies import BODY_SLOTS, CHUNK, BodySlots
from tests.support.aio import sample, wait_for
from tests.support.raw import GateSource, raw_http_get, read_body, read_head

KiB, MiB = 1024, 1 << 20
#: ticks never come by themselves: the tests add snapshots to the feed, so what it holds is exact
STILL = {"interval": 3600.0}


def add_snapshots(hub: Hub, n: int, pad: int) -> None:
    """Append `n` snapshots of ~`pad` bytes each after the latest (same epoch, next seqs)."""
    for _ in range(n):
        latest = hub.feed.latest
        assert latest is not None
        data = {"business": {"pad": "x" * pad}}
        entry = Entry.from_snapshot({"seq": latest.seq + 1, "epoch": latest.epoch, "timestamp": latest.timestamp,
                                     "data": data, "sources": {}})
        assert hub.feed.append(entry, data)


async def started(aiohttp_client: Any, app: web.Application) -> tuple[Any, Hub]:
    """The test client of `app`, once its first (and, with STILL, only) tick is in the feed."""
    client = await aiohttp_client(app)
    hub = app[HUB]
    await wait_for(lambda: hub.feed.seq >= 1, what="the first tick")
    return client, hub


def history_body(hub: Hub, max_bytes: int, limit: int | None = None) -> bytes:
    """What /ws?history=N would send as items, as the REST body."""
    items, _ = hub.feed.encode_items(hub.feed.items(limit or len(hub.feed.history)), None, max_bytes=max_bytes)
    return b'{"items":' + items + b"}"


async def test_rest_history_obeys_the_client_byte_budget_and_keeps_the_newest(aiohttp_client, make_config):
    budget = 200 * KiB
    app = create_app(make_config({"broadcast": {**STILL, "history_size": 60, "max_client_buffer_bytes": budget}}))
    client, hub = await started(aiohttp_client, app)
    add_snapshots(hub, 10, 64 * KiB)

    resp = await client.get("/api/metrics/history", headers={"Accept-Encoding": "identity"})
    body = await resp.read()
    # Byte for byte what the /ws history message carries as items, within the same budget.
    assert body == history_body(hub, budget)
    seqs = [item["seq"] for item in orjson.loads(body)["items"]]
    assert seqs[-1] == hub.feed.seq, "the newest is always there"
    assert seqs == list(range(seqs[0], seqs[-1] + 1)) and seqs[0] > hub.feed.history[0].seq, "the oldest dropped"
    assert 1 < len(seqs) < 5
    # gzip for clients that accept it, the same JSON inside.
    gz = await client.get("/api/metrics/history", headers={"Accept-Encoding": "gzip"})
    assert gz.headers["Content-Encoding"] == "gzip" and await gz.read() == body

    # A snapshot over the budget on its own is still sent: the newest always is.
    add_snapshots(hub, 1, 300 * KiB)
    items = orjson.loads(await (await client.get("/api/metrics/history")).read())["items"]
    assert [item["seq"] for item in items] == [hub.feed.seq]


@pytest.mark.parametrize("path", ["/api/metrics/history", "/api/metrics/snapshot"])
async def test_a_slow_reader_holds_about_one_chunk_not_the_body(aiohttp_client, make_config, path):
    app = create_app(make_config({"broadcast": {**STILL, "max_client_buffer_bytes": 64 * MiB}}))
    requests: list[web.BaseRequest] = []

    async def capture(request: web.Request, response: web.StreamResponse) -> None:
        if request.path == path:
            requests.append(request)

    app.on_response_prepare.append(capture)
    client, hub = await started(aiohttp_client, app)
    if path.endswith("history"):
        add_snapshots(hub, 40, 256 * KiB)  # ~10 MB of body: more than the kernel's socket buffers take
        expected = history_body(hub, 64 * MiB)
    else:
        add_snapshots(hub, 1, 12 * MiB)
        assert hub.feed.latest is not None
        expected = hub.feed.latest.encode(None, hub.feed.source_sections)
    sock = await asyncio.to_thread(raw_http_get, client.server.port, path, rcvbuf=4096)
    try:
        await wait_for(lambda: requests, what="the response to start")
        transport = requests[0].transport
        assert transport is not None
        # The reader reads nothing: once the kernel's buffers are full, what the hub holds for it
        # is the transport's buffer, which a single-piece body would fill with the whole rest.
        held = await wait_for(transport.get_write_buffer_size, what="the socket buffers to fill")
        assert held <= 2 * CHUNK + 64 * KiB, f"{held} bytes buffered for one slow reader"
        assert app[BODY_SLOTS].active == 1, "the response is still being streamed"
        status, headers, rest = await asyncio.to_thread(read_head, sock, timeout=10)
        body = await asyncio.to_thread(read_body, sock, headers, rest, timeout=30)
    finally:
        sock.close()
    assert status == 200 and headers["content-type"] == "application/json"
    assert body == expected
    await wait_for(lambda: app[BODY_SLOTS].active == 0, what="the turn to be given back")


@pytest.mark.parametrize("path", ["/api/metrics/history", "/api/metrics/snapshot"])
async def test_head_gets_the_headers_and_no_body(aiohttp_client, make_config, path):
    # A streamed body is written by the handler itself, so HEAD must be answered apart.
    client, hub = await started(aiohttp_client, create_app(make_config({"broadcast": STILL})))
    add_snapshots(hub, 2, 4 * KiB)
    length = len(await (await client.get(path, headers={"Accept-Encoding": "identity"})).read())
    port = client.server.port

    def head_then_health() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n"
                      "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            return data

    head, _, rest = (await asyncio.to_thread(head_then_health)).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {length}".encode() in head
    assert rest.startswith(b"HTTP/1.1 200"), "the next response follows the HEAD's headers at once"


async def test_large_bodies_stream_a_few_at_a_time_then_503_busy_with_retry_after(aiohttp_client, make_config):
    app = create_app(make_config({"broadcast": STILL}))
    app[BODY_SLOTS] = slots = BodySlots(limit=1, wait=0.0)
    client, hub = await started(aiohttp_client, app)
    add_snapshots(hub, 1, 8 * MiB)
    sock = await asyncio.to_thread(raw_http_get, client.server.port, "/api/metrics/snapshot", rcvbuf=4096)
    try:
        await wait_for(lambda: slots.active == 1, what="the slow reader to hold the only turn")
        busy = await client.get("/api/metrics/snapshot")
        assert busy.status == 503 and busy.headers["Retry-After"] == "3600"
        assert "busy" in (await busy.json())["error"]
        assert sample(hub.metrics, "hub_http_rejected_total", reason="busy") == 1
        # Small bodies never wait for a turn.
        assert (await client.get("/api/metrics/history?limit=0")).status == 200
        status, headers, rest = await asyncio.to_thread(read_head, sock, timeout=10)
        await asyncio.to_thread(read_body, sock, headers, rest, timeout=30)
    finally:
        sock.close()
    await wait_for(lambda: slots.active == 0, what="the turn to be given back")
    assert (await client.get("/api/metrics/snapshot")).status == 200


async def test_a_reader_too_slow_for_the_deadline_is_cut_and_frees_its_turn(aiohttp_client, make_config):
    app = create_app(make_config({"broadcast": STILL}))
    app[BODY_SLOTS] = slots = BodySlots(limit=1, wait=0.0, deadline=0.5)
    client, hub = await started(aiohttp_client, app)
    add_snapshots(hub, 1, 8 * MiB)
    sock = await asyncio.to_thread(raw_http_get, client.server.port, "/api/metrics/snapshot", rcvbuf=4096)
    try:
        await wait_for(lambda: slots.active == 1, what="the reader to take the turn")
        await wait_for(lambda: slots.active == 0, what="the deadline to cut it")
        status, headers, rest = await asyncio.to_thread(read_head, sock, timeout=10)
        cut = await asyncio.to_thread(read_body, sock, {}, rest, timeout=10)  # up to the close
    finally:
        sock.close()
    assert status == 200 and len(cut) < int(headers["content-length"])
    assert len(await (await client.get("/api/metrics/snapshot")).read()) == int(headers["content-length"])


async def test_every_503_says_when_to_retry(aiohttp_client, make_config):
    # interval 9.5: Retry-After is the interval rounded up; the gated first tick stays pending for
    # its budget (0.8 x interval), long enough for every request below.
    gate = GateSource()
    app = create_app(make_config({"broadcast": {"interval": 9.5}, "server": {"max_connections": 1}}),
                     extra_sources=[gate])
    client = await aiohttp_client(app)
    for path in ("/ready", "/api/metrics/snapshot", "/api/metrics/business"):
        resp = await client.get(path)
        assert resp.status == 503 and resp.headers.get("Retry-After") == "10", path
    async with client.ws_connect("/ws"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect("/ws")
    assert info.value.status == 503 and info.value.headers is not None
    assert info.value.headers.get("Retry-After") == "10"
    assert app[HUB].feed.latest is None, "all of the above happened before the first tick"
    gate.gate.set()


async def test_rest_refusals_count_as_http_and_upgrades_as_ws(aiohttp_client, make_config):
    cfg = make_config({"auth": {"tokens": [{"name": "wall", "hash": hash_token("wall-token"), "topics": ["system"]}]},
                       "server": {"auth_failures_per_minute": 2}})
    client = await aiohttp_client(create_app(cfg))
    metrics = client.app[HUB].metrics
    token = {"Authorization": "Bearer wall-token"}

    def counts(name: str) -> dict[str, float]:
        return {r: sample(metrics, name, reason=r) for r in ("unauthorized", "auth_rate_limited", "topic_not_allowed")}

    assert (await client.get("/api/metrics/business", headers=token)).status == 403
    assert (await client.get("/api/metrics/snapshot")).status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/ws")
    assert info.value.status == 401
    # Two failures: the address is locked out, on both paths.
    assert (await client.get("/api/metrics/snapshot", headers=token)).status == 429
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/ws", headers=token)
    assert info.value.status == 429

    assert counts("hub_http_rejected_total") == {"unauthorized": 1, "auth_rate_limited": 1, "topic_not_allowed": 1}
    assert counts("hub_ws_rejected_total") == {"unauthorized": 1, "auth_rate_limited": 1, "topic_not_allowed": 0}
    exposition = await (await client.get("/metrics")).text()
    assert 'hub_http_rejected_total{reason="busy"} 0.0' in exposition, "zeros are exported"
