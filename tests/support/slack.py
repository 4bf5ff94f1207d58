"""A stand-in for Slack's incoming webhook: records what the hub posts, answers from a script."""

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

TOKEN = "T0HUBTEST/B0HUBTEST/xoxb-not-a-real-token-9f8e7d"
WEBHOOK_PATH = f"/services/{TOKEN}"


@dataclass
class Receiver:
    """Slack's webhook: answers from `script` (status, headers, body) first, then 200 "ok"."""

    script: list[tuple[int, dict[str, str], str]] = field(default_factory=list)
    hang: bool = False
    attempts: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)  # (monotonic, status, json)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.hang:
            await self.release.wait()
        status, headers, text = self.script.pop(0) if self.script else (200, {}, "ok")
        self.attempts.append((time.monotonic(), status, body))
        return web.Response(status=status, headers=headers, text=text)

    @property
    def delivered(self) -> list[dict[str, Any]]:
        return [b for _t, s, b in self.attempts if 200 <= s < 300]

    def texts(self) -> list[str]:
        """The text of each delivered message, in arrival order."""
        return [b["attachments"][0]["text"] for b in self.delivered]


@asynccontextmanager
async def slack_receiver(*, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Receiver]:
    """A Receiver served on a free port (https with `ssl_context`); its `url` is the webhook URL."""
    r = Receiver()
    app = web.Application()
    app.router.add_post(WEBHOOK_PATH, r.handle)
    try:
        async with serve(app, ssl_context=ssl_context) as base:
            r.url = base + WEBHOOK_PATH
            yield r
    finally:
        r.release.set()
