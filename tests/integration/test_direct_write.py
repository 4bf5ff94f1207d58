"""Fan-out writes straight to a client's socket when nothing is queued: the bytes on the wire are
the frames, whole and in order, also when the kernel takes only part of one."""

from __future__ import annotations

import asyncio
import socket
from types import SimpleNamespace

from hub.broadcast import Broadcaster
from hub.client import Client
from hub.feed import Entry, Feed
from hub.metrics import HubMetrics


async def test_partial_direct_writes_continue_through_the_transport_in_order() -> None:
    loop = asyncio.get_running_loop()
    ours, peer = socket.socketpair()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    try:
        feed = Feed(history_size=5, history_max_bytes=64 << 20, source_sections={})
        b = Broadcaster(feed=feed, max_client_buffer_bytes=64 << 20, metrics=HubMetrics())
        client = Client(ws=SimpleNamespace(closed=False), transport=transport)  # type: ignore[arg-type]
        b.add(client)
        assert client.fd == ours.fileno()
        frames = []
        for seq in (1, 2, 3):
            # 600 KB each: far more than the socket buffers, so the first write is partial and
            # the later ones find a backlog and queue behind it
            entry = Entry(seq=seq, epoch="e", timestamp="t", sections={"business": b'"' + b"x" * 600_000 + b'"'},
                          sources={})
            await b.deliver(entry, {})
            frames.append(b.frame(entry, client.key))
        assert transport.get_write_buffer_size() > 0  # the transport holds the rest
        expected = b"".join(frames)
        received = bytearray()
        peer.setblocking(False)
        while len(received) < len(expected):
            try:
                chunk = peer.recv(1 << 20)
            except BlockingIOError:
                await asyncio.sleep(0.01)  # the transport sends more once the peer reads
                continue
            assert chunk
            received += chunk
        assert bytes(received) == expected
    finally:
        transport.close()
        peer.close()


async def test_a_client_without_a_socket_is_written_through_its_transport() -> None:
    from tests.support.raw import FakeTransport

    feed = Feed(history_size=5, history_max_bytes=1 << 20, source_sections={})
    b = Broadcaster(feed=feed, max_client_buffer_bytes=1 << 20, metrics=HubMetrics())
    t = FakeTransport()
    client = Client(ws=SimpleNamespace(closed=False), transport=t)  # type: ignore[arg-type]
    b.add(client)
    assert client.fd == -1
    await b.deliver(Entry(seq=1, epoch="e", timestamp="t", sections={}, sources={}), {})
    assert t.written > 0
