"""`hub serve`: bind the listening socket (with errors that name the key), quiet aiohttp's
malformed-request tracebacks, and run the app until SIGTERM/SIGINT; SIGHUP reopens the audit file."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from hub.config import Config
from hub.context import HUB
from hub.vocab import safe_text

log = logging.getLogger("hub")

#: aiohttp's default of 128 resets connections during a reconnect storm of wall screens
BACKLOG = 2048
#: signals that stop the hub: clients closed with 1001, then cleanup, exit 0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: every signal `hub serve` handles itself (SIGHUP: reopen the audit file, keep serving)
HANDLED = (*STOP_SIGNALS, signal.SIGHUP)
#: how long handlers may run after the clients were closed (aiohttp's shutdown_timeout)
SHUTDOWN_TIMEOUT = 3.0
#: how long a start-up that a stop signal interrupted may take to unwind before the hub exits anyway
START_UNWIND = 10.0


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


def run(app: web.Application, cfg: Config, sock: socket.socket, *, role: str,
        early: list[int] | None = None) -> None:
    """Serve `app` on `sock` until SIGTERM or SIGINT, then close clients with 1001 and clean up.

    `early` holds the signals that arrived before the event loop took them over (the command line
    remembers them from its first line on); a stop signal among them ends start-up at once. SIGHUP
    reopens the audit file. The loop's own handlers are installed before anything slow starts.
    """
    install_bad_request_log()
    previous = {sig: signal.getsignal(sig) for sig in HANDLED}
    loop = asyncio.new_event_loop()  # uvloop's when its policy is installed
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(_serve(app, cfg, sock, role=role, early=early if early is not None else []))
    finally:
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            # Like aiohttp's run_app, threads still running are not waited for (asyncio.run would).
            loop.close()
            asyncio.set_event_loop(None)
            # Closing the loop reset its signals to the default (fatal) action: until the process
            # is gone they go back to what they were (`hub serve`: remembered, harmless).
            for sig, handler in previous.items():
                if handler is not None:
                    signal.signal(sig, handler)


async def _serve(app: web.Application, cfg: Config, sock: socket.socket, *, role: str, early: list[int]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def stopping(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.info("%s: closing clients with 1001 and stopping", sig.name)
            stop.set()

    def reopen_audit() -> None:
        log.info("SIGHUP: reopening the audit log")
        app[HUB].audit.reopen()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stopping, sig)
    loop.add_signal_handler(signal.SIGHUP, reopen_audit)
    for signum in early:  # read after the loop took over, so none falls between the two
        if signum in STOP_SIGNALS:
            stopping(signal.Signals(signum))
    # keepalive_timeout also bounds a connection that has not sent a whole request yet (aiohttp arms
    # it at connect), so handshake_timeout closes slowloris sockets and idle keep-alives alike.
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT,
                           keepalive_timeout=cfg.server.handshake_timeout,
                           access_log=logging.getLogger("aiohttp.access"))
    try:
        if stop.is_set() or not await _start(runner, stop):
            log.info("stopped during start-up, before serving")
            return
        await web.SockSite(runner, sock, backlog=BACKLOG).start()
        host, port = sock.getsockname()[:2]
        log.info("hub serving on http://%s:%s (role %s)", f"[{host}]" if ":" in host else host, port, role)
        await stop.wait()
    finally:
        try:
            # aiohttp's order: stop listening, on_shutdown (every client closed with 1001), wait for
            # handlers up to SHUTDOWN_TIMEOUT, then cleanup (sources, notifier, store, audit).
            await runner.cleanup()
        finally:
            app[HUB].audit.close()  # closed by the cleanup already, unless start-up never ran
            sock.close()


async def _start(runner: web.AppRunner, stop: asyncio.Event) -> bool:
    """Run the app's start-up unless a stop signal comes first: True when it finished.

    A failed start-up raises as before. An interrupted one is cancelled (the app's start-up closes
    what it had started) and given START_UNWIND seconds.
    """
    setup = asyncio.ensure_future(runner.setup())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({setup, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if setup.done():
        setup.result()
        return True
    setup.cancel()
    done, _ = await asyncio.wait({setup}, timeout=START_UNWIND)
    if not done:
        log.warning("start-up did not end within %.0f s of the stop signal; exiting anyway", START_UNWIND)
    elif not setup.cancelled() and setup.exception() is not None:
        log.info("start-up ended by the stop signal: %s", safe_text(str(setup.exception())))
    return False
