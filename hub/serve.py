"""`hub serve`: bind the listening socket (with errors that name the key), quiet aiohttp's
malformed-request tracebacks, and run the app until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import socket
import time

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from hub.config import Config
from hub.vocab import safe_text

log = logging.getLogger("hub")

#: aiohttp's default of 128 resets connections during a reconnect storm of wall screens
BACKLOG = 2048


class BindError(Exception):
    """The configured address cannot be listened on; the message names the key."""


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket bound to `host`:`port` (port 0: an ephemeral port)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise BindError(f"server.host: cannot resolve {host!r}: {getattr(exc, 'strerror', None) or exc}") from None
    family, kind, proto, _name, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        if exc.errno == 98:  # EADDRINUSE
            raise BindError(f"server.port: {port} is already in use on {host}") from None
        if exc.errno == 99:  # EADDRNOTAVAIL
            raise BindError(f"server.host: {host!r} is not an address of this machine") from None
        raise BindError(f"server.host/server.port: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


class BadRequestLog(logging.Filter):
    """aiohttp logs every malformed request with a traceback at ERROR; anyone could flood the log.

    This makes it one WARNING line without the traceback, at most once per remote per minute.
    """

    WINDOW = 60.0
    MAX_TRACKED = 10_000

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or not str(record.msg).startswith("Error handling request"):
            return True
        remote = str(record.args[0]) if isinstance(record.args, tuple) and record.args else "?"
        now = time.monotonic()
        if now - self._seen.get(remote, -self.WINDOW) < self.WINDOW:
            return False
        if len(self._seen) >= self.MAX_TRACKED:
            self._seen = {k: v for k, v in self._seen.items() if now - v < self.WINDOW}
        self._seen[remote] = now
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg = "malformed HTTP request from %s answered %s: %s (further ones from it muted for a minute)"
        record.args = (remote, exc.code, safe_text(str(exc.message)))
        record.exc_info = record.exc_text = None
        return True


def install_bad_request_log() -> None:
    """Attach the filter to aiohttp's server logger once."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, BadRequestLog) for f in logger.filters):
        logger.addFilter(BadRequestLog())


def run(app: web.Application, cfg: Config, sock: socket.socket, *, role: str) -> None:
    """Serve `app` on `sock` until a signal; logs the real address (an ephemeral port included)."""
    host, port = sock.getsockname()[:2]
    install_bad_request_log()

    def serving(_banner: str) -> None:
        # run_app calls this once the socket listens: a client that reads the line can connect.
        log.info("hub serving on http://%s:%s (role %s)", f"[{host}]" if ":" in host else host, port, role)

    # keepalive_timeout also bounds a connection that has not sent a whole request yet (aiohttp arms
    # it at connect), so handshake_timeout closes slowloris sockets and idle keep-alives alike.
    web.run_app(app, sock=sock, shutdown_timeout=3.0, print=serving, backlog=BACKLOG,
                keepalive_timeout=cfg.server.handshake_timeout, access_log=logging.getLogger("aiohttp.access"))
