"""hub/aiohttp_ws.py relies on private aiohttp names (pinned in pyproject.toml): these tests fail
when aiohttp changes them underneath, before a user meets the change as a silent hole."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from hub.aiohttp_ws import PRIVATE, HubWebSocket


def test_the_aiohttp_release_is_within_the_pinned_range():
    major, minor, *_ = (int(x) for x in version("aiohttp").split(".")[:3])
    assert (major, minor) == (3, 14), "hub/aiohttp_ws.py was checked against aiohttp 3.14 only"
    assert aiohttp.__version__ == version("aiohttp")


def test_every_private_name_relied_on_still_exists():
    for owner, name in PRIVATE:
        slots = getattr(owner, "__slots__", ())
        assert hasattr(owner, name) or name in slots or name in inspect.getsource(owner.__init__), (owner, name)


def test_the_upgrade_tail_is_still_fed_by_set_parser_from_message_tail():
    # HubWebSocket._post_start empties _message_tail before aiohttp's own _post_start, then feeds it
    # through the frame guard; that only works while set_parser feeds exactly this attribute.
    src = inspect.getsource(RequestHandler.set_parser)
    assert "self._message_tail" in src and "self._payload_parser = parser" in src
    post = inspect.getsource(web.WebSocketResponse._post_start)
    assert "set_parser(" in post and "self._reader = " in post
    receive = inspect.getsource(web.WebSocketResponse.receive)
    # aiohttp closes on a reader error by calling self.close(...): HubWebSocket.close bounds it.
    assert "await self.close(code=exc.code)" in receive
    # ... and ends every close through _close_transport, which HubWebSocket makes a lingering close.
    for method in (web.WebSocketResponse._set_code_close_transport, web.WebSocketResponse.close):
        assert "_close_transport()" in inspect.getsource(method)


def test_hubwebsocket_overrides_only_what_it_says():
    own = {n for n, v in vars(HubWebSocket).items() if callable(v) and not n.startswith("__")}
    assert own == {"_handshake", "_post_start", "_violated", "_stop_reading", "_close_transport", "close",
                   "_set_closed"}


def test_closed_turns_true_only_in_set_closed():
    # HubWebSocket.on_closed (the client's `sending` flag, read by fan-out instead of `closed`) hooks
    # _set_closed: that holds while it is aiohttp's one place that sets the flag `closed` returns.
    src = inspect.getsource(web.WebSocketResponse)
    assert src.count("self._closed = True") == 1
    assert "self._closed = True" in inspect.getsource(web.WebSocketResponse._set_closed)
    assert "return self._closed" in inspect.getsource(web.WebSocketResponse.closed.fget)


def test_the_client_stops_sending_when_its_websocket_starts_closing():
    from types import SimpleNamespace

    from hub.client import Client

    ws = HubWebSocket(close_grace=1.0)
    client = Client(ws=ws, transport=SimpleNamespace(is_closing=lambda: False))  # type: ignore[arg-type]
    assert client.sending and client.can_send()
    ws._set_closed()  # what aiohttp's close(), a reader error or a failed ping runs first
    assert ws.closed and not client.sending and not client.can_send()


def test_the_http_parser_is_optional_after_an_accepted_upgrade():
    # HubWebSocket._post_start drops RequestHandler._parser once upgraded (memory per connection).
    # aiohttp sets it to None itself at connection_lost; every later use must stay guarded.
    src = inspect.getsource(RequestHandler)
    assert "self._parser = None" in inspect.getsource(RequestHandler.connection_lost)
    uses = [line.strip() for line in src.splitlines() if "self._parser." in line]
    assert uses == ["messages, upgraded, tail = self._parser.feed_data(data)",
                    "self._parser.message_consumed()", "self._parser.set_upgraded(False)",
                    "messages, upgraded, tail = self._parser.feed_data("], uses
    data_received = inspect.getsource(RequestHandler.data_received)
    assert "if self._payload_parser is None and not self._upgraded:" in data_received
    start = inspect.getsource(RequestHandler.start)
    assert "if self._parser is not None:" in start


def test_the_message_queue_is_not_appended_to_after_an_accepted_upgrade():
    # HubWebSocket._post_start swaps RequestHandler._messages for one shared, always-empty deque.
    # That holds while aiohttp appends to it only on paths an accepted upgrade never takes.
    src = inspect.getsource(RequestHandler)
    assert src.count("self._messages.append(") == 2
    data_received = inspect.getsource(RequestHandler.data_received)
    head, _, _ = data_received.partition("self._messages.append(")
    assert "if self._payload_parser is None and not self._upgraded:" in head
    # ... and in finish_response's declined-upgrade path, which an accepted upgrade (a payload parser) skips
    finish = inspect.getsource(RequestHandler.finish_response)
    assert "and self._payload_parser is None" in finish and "self._messages.append(" in finish


async def test_an_upgraded_connection_keeps_a_shared_key_instance_dict(aiohttp_client, make_config):
    # Memory per connection: HubWebSocket keeps its own attributes in slots so the instance dict
    # aiohttp fills stays within CPython's shared-key limit (0.3 KB, not a 1.6 KB private table).
    # Fails when aiohttp adds attributes, or HubWebSocket moves one back into the dict.
    import sys

    from hub.app import create_app
    from hub.context import HUB
    from tests.support.aio import recv_json, wait_for

    client = await aiohttp_client(create_app(make_config()))
    hub = client.app[HUB]
    async with client.ws_connect("/ws") as ws:
        await recv_json(ws)
        await wait_for(lambda: len(hub.broadcaster.clients) == 1)
        (c,) = hub.broadcaster.clients
        assert c.ws.__dict__.keys().isdisjoint(HubWebSocket.__slots__)
        assert sys.getsizeof(c.ws.__dict__) < 600, (len(c.ws.__dict__), sorted(c.ws.__dict__))
        await ws.close()
        await wait_for(lambda: c.ws.closed)
        # a close assigns more of aiohttp's attributes: they land in slots too
        assert sys.getsizeof(c.ws.__dict__) < 600, (len(c.ws.__dict__), sorted(c.ws.__dict__))


def test_the_slotted_attributes_are_the_class_level_defaults_of_websocketresponse():
    # A slot shadows the class-level default it replaces: it must start at that value, and every
    # default WebSocketResponse declares (except the one StreamResponse owns) must be in LAZY, so
    # none is added to the instance dict after the upgrade.
    from aiohttp.web_response import StreamResponse

    from hub.aiohttp_ws import LAZY

    declared = {n for n, v in vars(web.WebSocketResponse).items()
                if n.startswith("_") and not n.startswith("__") and not callable(v) and not isinstance(v, property)}
    assert declared - {"_abc_impl", "_length_check"} == set(LAZY)
    assert "_length_check" in vars(StreamResponse)
    ws = HubWebSocket(close_grace=1.0)
    assert all(getattr(ws, n) == getattr(web.WebSocketResponse, n) for n in LAZY)
