"""A stand-in for Slack's incoming webhook: records what the hub posts, answers from a script.

Besides plain answers, the script can hold hostile ones (`EndlessBody`, `DripBody`, `DripHead`),
each recording when the hub hung up on it: no real Slack can be made to misbehave on cue.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.http_targets import serve
from tests.support.tls import trusted_server_context

TOKEN = "T0HUBTEST/B0HUBTEST/xoxb-not-a-real-token-9f8e7d"
WEBHOOK_PATH = f"/services/{TOKEN}"


@dataclass
class Hostile:
    """An answer that misbehaves once the request is read; `ended` is when the hub hung up (monotonic)."""

    status: int = 500
    started: float | None = None
    ended: float | None = None
    sent: int = 0  # body (or head) bytes written before the hub hung up

    @property
    def shown(self) -> int:
        """The status the hub gets to see (0: none)."""
        return self.status

    async def respond(self, request: web.Request) -> web.StreamResponse:
        self.started = time.monotonic()
        try:
            return await self._respond(request)
        finally:
            self.ended = time.monotonic()

    async def _respond(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError


@dataclass
class EndlessBody(Hostile):
    """`status` and a body that never ends: 64 KiB chunks as fast as the hub reads them.

    `limit` is a safety stop for a hub without a bound (the test watching its RSS fails long before).
    """

    limit: int = 1 << 30

    async def _respond(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        assert transport is not None
        resp = web.StreamResponse(status=self.status, headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        chunk = b"x" * 65536
        try:
            while self.sent < self.limit and not transport.is_closing():
                await resp.write(chunk)
                self.sent += len(chunk)
                # A write to a connection the peer reset can vanish without an error and without
                # yielding; yielding lets asyncio notice the reset, so `sent` is what the hub had a chance to read.
                await asyncio.sleep(0)
        except ConnectionError:
            pass  # the hub hung up: what a bounded reader does
        return resp


@dataclass
class DripBody(Hostile):
    """`status` and headers at once, then a body of one byte every `every` seconds, never ending."""

    every: float = 0.1
    headers: dict[str, str] = field(default_factory=dict)

    async def _respond(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=self.status, headers=self.headers)
        await resp.prepare(request)
        try:
            while True:
                await resp.write(b"x")
                self.sent += 1
                await asyncio.sleep(self.every)
        except ConnectionError:
            pass
        return resp


@dataclass
class DripHead(Hostile):
    """The status line and headers of `status`, one byte every `every` seconds: never a whole head."""

    every: float = 0.1

    @property
    def shown(self) -> int:
        return 0  # the head never ends: the hub never sees a status

    async def _respond(self, request: web.Request) -> web.StreamResponse:
        head = f"HTTP/1.1 {self.status} Whatever\r\n".encode() + b"X-Drip: " + b"y" * 100_000
        transport = request.transport
        assert transport is not None
        for i in range(len(head)):
            if transport.is_closing():
                break  # the hub hung up
            transport.write(head[i:i + 1])
            self.sent += 1
            await asyncio.sleep(self.every)
        # The transport is closed by now: aiohttp's attempt to send this fails quietly.
        return web.Response()


Answer = tuple[int, dict[str, str], str] | Hostile


@dataclass
class Receiver:
    """Slack's webhook: answers from `script` (status, headers, body, or a `Hostile`) first, then 200 "ok"."""

    script: list[Answer] = field(default_factory=list)
    hang: bool = False
    #: (monotonic, status, json) per request; status 0 when the hub never saw one
    attempts: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if self.hang:
            await self.release.wait()
        answer = self.script.pop(0) if self.script else (200, {}, "ok")
        if isinstance(answer, Hostile):
            self.attempts.append((time.monotonic(), answer.shown, body))
            return await answer.respond(request)
        status, headers, text = answer
        self.attempts.append((time.monotonic(), status, body))
        return web.Response(status=status, headers=headers, text=text)

    @property
    def delivered(self) -> list[dict[str, Any]]:
        return [b for _t, s, b in self.attempts if 200 <= s < 300]

    def texts(self) -> list[str]:
        """The text of each delivered message, in arrival order."""
        return [b["attachments"][0]["text"] for b in self.delivered]


@asynccontextmanager
async def slack_receiver(*, ssl_context: ssl.SSLContext | None = None,
                         path: str = WEBHOOK_PATH) -> AsyncIterator[Receiver]:
    """A Receiver served over https on a free port; its `url` is the webhook URL.

    https, as `notify.slack_webhook_url` requires: with no `ssl_context`, a certificate from the test
    process's private CA, which SSL_CERT_FILE trusts while the receiver runs (the notifier's client
    reads it when it is made, as a hub's does at start).
    """
    r = Receiver()
    app = web.Application()
    app.router.add_post(path, r.handle)
    try:
        with trusted_server_context(ssl_context) as ctx:
            async with serve(app, ssl_context=ctx) as base:
                r.url = base + path
                yield r
    finally:
        r.release.set()
