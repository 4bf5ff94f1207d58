"""Hypothesis-generated client input against a real `hub serve`: malformed, oversized, binary, random.

A system test: it starts a real `hub serve`. After every test, the autouse fixture checks that the
hub still answers and that the good client connected throughout has seen every seq, so each test
proves that on its own, in any order.

Each bad input gets its documented answer (an error message, or close 1002/1003/1007/1008/1009),
the hub never crashes or logs a traceback, and a good client connected the whole time keeps
every seq. Raw sockets, so frames aiohttp's client would refuse to build can be sent too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hub.vocab import TOPICS
from tests.support.hubproc import HubProcess
from tests.support.raw import client_frame

MAX_BYTES = 4096
RATE, BURST = 20.0, 40
#: documented close codes for bad input (docs/security.md)
BAD_INPUT_CODES = {1002, 1003, 1007, 1008, 1009}
FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ----------------------------------------------------------------------------- a raw WebSocket client


frame = client_frame


class RawWS:
    """A blocking WebSocket connection on a plain socket."""

    def __init__(self, port: int, *, timeout: float = 2.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, "closed during handshake"
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame; EOFError when the server closed the socket."""
        b0, b1 = self._read(2)
        assert b1 & 0x80 == 0, "server frames are never masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        return b0 & 0x0F, self._read(n)

    def send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the hub may already have closed on an earlier frame
            self.sock.sendall(data)

    def answer(self) -> tuple[str, Any]:
        """The hub's answer to what was sent: ("text", json) other than a broadcast, ("close", code),
        ("pong", payload), or ("eof", None)."""
        while True:
            try:
                op, payload = self.recv_frame()
            except (EOFError, ConnectionError):
                return "eof", None
            except TimeoutError:
                return "timeout", None
            if op == 0x1:
                msg = orjson.loads(payload)
                if msg["type"] not in ("metrics_update", "history"):
                    return "text", msg
            elif op == 0x8:
                return "close", struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            elif op == 0xA:
                return "pong", payload

    def drain_to_eof(self) -> list[int]:
        """Close codes seen until the server closes the socket (after our write side is shut)."""
        codes = []
        while True:
            kind, value = self.answer()
            if kind == "eof":
                return codes
            if kind == "close":
                codes.append(value)

    def close(self) -> None:
        self.sock.close()


# ----------------------------------------------------------------------------- the hub and a good client


class GoodClient:
    """An aiohttp client in its own thread and loop, connected throughout, recording every seq."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seqs: list[int] = []
        self.closed: Any = None
        self.ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "good client did not connect"

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with aiohttp.ClientSession() as session, session.ws_connect(self.url + "/ws") as ws:
            self.ready.set()
            reader = asyncio.create_task(self._read(ws))
            await self._stop.wait()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                m = orjson.loads(msg.data)
                if m["type"] == "metrics_update":
                    self.seqs.append(m["seq"])
        self.closed = (ws.close_code, ws.exception())

    def check(self) -> None:
        """Still connected, and every seq since connecting arrived exactly once, in order."""
        assert self.closed is None, f"good client was disconnected: {self.closed}"
        seqs = list(self.seqs)
        assert len(seqs) >= 2
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a seq was missed or repeated"

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)


class Hub:
    def __init__(self, proc: HubProcess, good: GoodClient) -> None:
        self.proc, self.good, self.port = proc, good, proc.port

    def check_alive(self) -> None:
        """The process runs, answers /health, logged no traceback, and the good client is intact."""
        assert self.proc.proc is not None and self.proc.proc.poll() is None, self.proc.log()
        self.proc.wait_healthy(timeout=5)
        log = self.proc.log_path.read_text(errors="replace")
        assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]
        seen = len(self.good.seqs)
        deadline = time.monotonic() + 5
        while len(self.good.seqs) < seen + 2:  # still receiving ticks right now
            assert time.monotonic() < deadline, "good client stopped receiving ticks"
            time.sleep(0.05)
        self.good.check()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    proc = HubProcess({"server": {"max_message_bytes": MAX_BYTES, "client_rate_limit": RATE,
                                  "client_rate_burst": BURST},
                       "broadcast": {"interval": 0.2, "heartbeat": 30.0},
                       "sources": {"prometheus": {"enabled": False}, "business": {"enabled": False}}},
                      tmp_path_factory.mktemp("fuzz-hub")).start()
    proc.wait_healthy(path="/ready")
    good = GoodClient(proc.url)
    try:
        yield Hub(proc, good)
    finally:
        good.stop()
        proc.stop()


@pytest.fixture(autouse=True)
def _hub_intact_after_each_test(hub: Hub) -> Iterator[None]:
    yield
    hub.check_alive()


# ----------------------------------------------------------------------------- the oracle


def expected_answer(text: str) -> tuple[str, Any]:
    """What the protocol (docs/security.md) promises for one text message."""
    if len(text.encode()) > MAX_BYTES:  # server.max_message_bytes is the largest allowed
        return "close", 1009
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        return "error", "invalid_json"
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        return "error", "invalid_message"
    if msg["type"] == "ping":
        return "pong", msg.get("id") if isinstance(msg.get("id"), (str, int, float)) else None
    if msg["type"] == "subscribe":
        topics = msg.get("topics")
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            return "error", "invalid_topics"
        if any(t not in TOPICS for t in topics):
            return "error", "unknown_topic"
        return "subscribed", set(topics)
    return "error", "unknown_type"


def check_answer(text: str, got: tuple[str, Any]) -> None:
    kind, value = expected_answer(text)
    if kind == "close":
        assert got == ("close", value), (text[:80], got)
        return
    assert got[0] == "text", (text[:80], got)
    msg = got[1]
    if kind == "error":
        assert msg["type"] == "error" and msg["error"] == value and isinstance(msg["message"], str), msg
    elif kind == "pong":
        assert msg["type"] == "pong" and isinstance(msg["seq"], int)
        if value is not None:
            assert msg["id"] == value
    else:
        assert msg["type"] == "subscribed" and set(msg["topics"]) == value


# ----------------------------------------------------------------------------- strategies

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                         st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                                            max_size=4),
                           max_leaves=10)
topic_lists = st.lists(st.sampled_from([*TOPICS, "secrets", "", "SYSTEM"]), max_size=6)
#: messages shaped like the protocol's, so every branch of the handler is reached often
protocol_messages = st.one_of(
    st.fixed_dictionaries({"type": st.just("subscribe"), "topics": st.one_of(topic_lists, json_values)},
                          optional={"id": json_values}),
    st.fixed_dictionaries({"type": st.just("ping")}, optional={"id": json_values, "topics": topic_lists}),
    st.fixed_dictionaries({"type": st.sampled_from(["unsubscribe", "PING", "", "subscribe"])},
                          optional={"id": json_values, "topics": json_values}),
)
messages = st.one_of(
    protocol_messages,
    st.fixed_dictionaries({"type": json_values}, optional={"topics": json_values}),
    json_values,
)


def as_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers beyond 64 bits: send them as literal JSON text anyway
        return repr(value)


texts = st.one_of(
    messages.map(as_text),
    st.text(max_size=200),  # random text: almost always invalid JSON
    st.builds(lambda pad, t: '{"type":"ping","pad":"' + "x" * pad + '"}' + t,
              st.integers(MAX_BYTES - 40, MAX_BYTES + 200), st.text(max_size=5)),  # around the size limit
    st.builds(lambda s: s[: len(s) // 2], messages.map(as_text)),  # truncated JSON
)


# ----------------------------------------------------------------------------- properties


def padded(size: int) -> str:
    """A valid ping of exactly `size` bytes."""
    return '{"type":"ping","pad":"' + "x" * (size - 24) + '"}'


def exchange(hub: Hub, batch: list[str]) -> None:
    ws = RawWS(hub.port)
    try:
        for text in batch:
            ws.send(frame(0x1, text.encode()))
            got = ws.answer()
            check_answer(text, got)
            if got[0] == "close":
                break
    finally:
        ws.close()


@FUZZ
@given(batch=st.lists(protocol_messages.map(as_text), min_size=1, max_size=6))
def test_protocol_shaped_messages_get_their_documented_answer(hub, batch):
    exchange(hub, batch)


@FUZZ
@given(batch=st.lists(texts, min_size=1, max_size=6))
@example(batch=[padded(MAX_BYTES - 1), padded(MAX_BYTES), padded(MAX_BYTES + 1)])
@example(batch=["[" * 2000 + "]" * 2000, '{"type":"ping","id":' + "[" * 1500 + "]" * 1500 + "}"])  # deep nesting
@example(batch=['{"type":"subscribe","topics":["system","system","alerts"]}', '{"type":"ping","id":true}',
                '{"type":"ping","id":{"a":1}}', "null", '{"type":1}', "\ufeff{}", '{"type":"ping"} x'])
def test_text_messages_get_their_documented_answer(hub, batch):
    exchange(hub, batch)


@FUZZ
@given(payload=st.binary(max_size=300))
def test_binary_frames_close_1003(hub, payload):
    ws = RawWS(hub.port)
    try:
        ws.send(frame(0x2, payload))
        assert ws.answer() == ("close", 1003)
    finally:
        ws.close()


@FUZZ
@given(payload=st.binary(min_size=1, max_size=64).filter(lambda b: not _is_utf8(b)))
def test_invalid_utf8_text_closes_1007(hub, payload):
    ws = RawWS(hub.port)
    try:
        ws.send(frame(0x1, payload))
        assert ws.answer() == ("close", 1007)
    finally:
        ws.close()


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode()
    except UnicodeDecodeError:
        return False
    return True


@settings(FUZZ, max_examples=15)
@given(n=st.one_of(st.integers(1, BURST - 10), st.integers(BURST + 20, 3 * BURST)))
def test_message_bursts_within_limit_answered_beyond_closed_1008(hub, n):
    ws = RawWS(hub.port)
    try:
        ws.send(b"".join(frame(0x1, b'{"type":"ping","id":%d}' % i) for i in range(n)))
        if n <= BURST:
            for i in range(n):
                kind, msg = ws.answer()
                assert kind == "text" and msg == {**msg, "type": "pong", "id": i}
        else:
            answers = [ws.answer() for _ in range(BURST + 1)]
            while answers[-1][0] == "text":
                answers.append(ws.answer())
            assert answers[-1] == ("close", 1008)
            assert BURST <= len(answers) - 1 <= n
    finally:
        ws.close()


@FUZZ
@given(opcode=st.integers(0, 15), fin=st.booleans(), rsv=st.integers(0, 7), masked=st.booleans(),
       payload=st.binary(max_size=200))
def test_arbitrary_frames_never_hurt_the_hub(hub, opcode, fin, rsv, masked, payload):
    ws = RawWS(hub.port)
    try:
        ws.send(frame(opcode, payload, fin=fin, rsv=rsv, masked=masked))
        ws.sock.shutdown(socket.SHUT_WR)  # EOF after the frame: the hub must finish and close
        codes = ws.drain_to_eof()
        assert set(codes) <= BAD_INPUT_CODES | {1000}, codes
        if rsv or opcode in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15):
            assert codes == [1002], (opcode, rsv, codes)
        elif opcode == 0x2 and fin:
            assert codes == [1003]
    finally:
        ws.close()


@FUZZ
@given(junk=st.binary(min_size=1, max_size=600))
def test_random_bytes_after_handshake_never_hurt_the_hub(hub, junk):
    ws = RawWS(hub.port)
    try:
        ws.send(junk)
        ws.sock.shutdown(socket.SHUT_WR)
        codes = ws.drain_to_eof()
        assert set(codes) <= BAD_INPUT_CODES | {1000}, codes
    finally:
        ws.close()


@settings(FUZZ, max_examples=30)
@given(request=st.binary(max_size=400))
def test_random_bytes_instead_of_a_request_never_hurt_the_hub(hub, request):
    answer = b""
    with socket.create_connection(("127.0.0.1", hub.port), timeout=5) as s:
        try:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
            while chunk := s.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass  # the hub may close before reading everything: an answer, not a failure
    # Nothing, or an HTTP answer (aiohttp's 400 for a malformed request); never a hang or a crash.
    assert answer == b"" or answer.startswith(b"HTTP/1."), answer[:80]
    hub.check_alive()  # also checked after every test, by the autouse fixture
