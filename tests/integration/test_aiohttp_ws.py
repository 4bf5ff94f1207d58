"""hub/aiohttp_ws.py relies on private aiohttp names and on how aiohttp lets a connection go (pinned
in pyproject.toml): these tests fail when aiohttp changes them underneath, before a user meets the
change as a leak or a silent hole."""

from __future__ import annotations

import asyncio
import gc
import inspect
from importlib.metadata import version

import aiohttp
from aiohttp import web
from aiohttp.http_writer import StreamWriter
from aiohttp.web_protocol import RequestHandler

from hub.aiohttp_ws import PRIVATE, Handshake
from hub.app import create_app
from hub.context import HUB
from tests.support.aio import recv_json, recv_type, wait_for


def test_the_aiohttp_release_is_within_the_pinned_range():
    major, minor, *_ = (int(x) for x in version("aiohttp").split(".")[:3])
    assert (major, minor) == (3, 14), "hub/aiohttp_ws.py was checked against aiohttp 3.14 only"
    assert aiohttp.__version__ == version("aiohttp")


def test_every_private_name_relied_on_still_exists():
    for owner, name in PRIVATE:
        assert hasattr(owner, name) or name in inspect.getsource(owner.__init__), (owner, name)


def test_the_hand_over_rests_on_what_aiohttp_does_today():
    # prepare() writes the 101, then calls _post_start (where Handshake installs nothing).
    prepare = inspect.getsource(web.WebSocketResponse.prepare)
    assert prepare.index("await super().prepare(request)") < prepare.index("self._post_start(")
    # An upgraded connection without a payload parser keeps what arrives in _message_tail.
    data_received = inspect.getsource(RequestHandler.data_received)
    assert "elif self._payload_parser is None and self._upgraded and data:" in data_received
    assert "self._message_tail += data" in data_received
    # connection_lost closes the transport only through force_close, which skips a None transport.
    force_close = inspect.getsource(RequestHandler.force_close)
    assert "if self.transport is not None:" in force_close
    lost = inspect.getsource(RequestHandler.connection_lost)
    assert "self.force_close()" in lost and "self.transport.close()" not in lost
    # The handler's response goes through the protocol's transport: None, so it is never written.
    assert "transport = self._protocol.transport" in inspect.getsource(StreamWriter._write)


def test_handshake_overrides_only_what_it_says():
    own = {n for n, v in vars(Handshake).items() if callable(v) and not n.startswith("__")}
    assert own == {"_handshake", "_post_start"}


async def test_a_handed_over_connection_keeps_nothing_of_aiohttp(aiohttp_client, make_config):
    # Memory per connection: once upgraded, aiohttp's request, its RequestHandler and every task are
    # released; the hub's Peer owns the socket. Fails if aiohttp keeps any of them (or the hand-over
    # stops working): then each connection costs kilobytes more again.
    client = await aiohttp_client(create_app(make_config({"broadcast": {"interval": 5.0}})))
    hub = client.app[HUB]
    server = client.server.runner.server
    assert server is not None
    tasks_before = len(asyncio.all_tasks())
    wss = []
    for _ in range(5):
        ws = await client.ws_connect("/ws")
        await recv_json(ws)
        wss.append(ws)
    await wait_for(lambda: len(hub.broadcaster.clients) == 5)
    await wait_for(lambda: not server._connections, what="aiohttp's connections released")
    await wait_for(lambda: len(asyncio.all_tasks()) <= tasks_before, what="no task per connection")
    gc.collect()
    handlers = [o for o in gc.get_objects() if type(o) is RequestHandler]
    assert handlers == [], f"{len(handlers)} RequestHandler(s) still alive"
    requests = [o for o in gc.get_objects() if isinstance(o, web.BaseRequest)]
    assert requests == [], f"{len(requests)} request(s) still alive"
    # ... and the connections still work both ways.
    for ws in wss:
        await ws.send_str('{"type":"ping","id":1}')
        assert (await recv_type(ws, "pong"))["id"] == 1
        await ws.close()
    await wait_for(lambda: hub.admission.open == 0)
