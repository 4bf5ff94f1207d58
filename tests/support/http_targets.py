"""Local HTTP services for tests: a runner on a free port, and a target with healthy and failing paths."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiohttp import web


@asynccontextmanager
async def serve(app: web.Application, *, ssl_context: ssl.SSLContext | None = None,
                host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Run `app` on a free port; yield its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"{'https' if ssl_context else 'http'}://{host}:{port}"
    finally:
        await runner.cleanup()


class Target:
    """A service with /ok, /fail (503), /slow (answers only at teardown), /moved (302), /toggle."""

    def __init__(self) -> None:
        self.toggle_status = 200
        self.release = asyncio.Event()
        self.hits: dict[str, int] = {}
        app = web.Application()
        app.router.add_get("/{name}", self.handle)
        self.app = app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] = self.hits.get(name, 0) + 1
        if name == "ok":
            return web.json_response({"status": "ok"})
        if name == "fail":
            return web.json_response({"status": "down"}, status=503)
        if name == "slow":
            await self.release.wait()  # past any timeout: released when the test ends
            return web.json_response({"status": "late"})
        if name == "moved":
            raise web.HTTPFound("/login")
        if name == "toggle":
            return web.json_response({}, status=self.toggle_status)
        raise web.HTTPNotFound()


class ThreadedService:
    """A service's /health in threads of its own (for sync tests, and slow answers that block no loop):
    every GET answers `status` (mutable) after `delay` seconds, with a small JSON body."""

    def __init__(self, status: int = 200, *, delay: float = 0.0) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                time.sleep(delay)   # the service's own slowness, in its own thread
                body = b'{"status":"ok"}' if owner.status < 300 else b'{"status":"down"}'
                try:
                    self.send_response(owner.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass   # the hub gave up on this answer (its deadline): its side, not ours

            def log_message(self, *args: Any) -> None:
                pass

        self.status = status
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/health"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()
