"""Audit log: connects, disconnects, auth failures and policy violations as JSON lines.

Records are serialised on the event loop into a bounded queue; one writer thread, started with the
app and joined on cleanup, writes them, so a slow disk never stalls the loop. What cannot be
written (queue full, write error, after close) is counted in `hub_audit_dropped_total`, never
raised into a handler and never printed per record. Every field a client can influence is cut
and escaped (`field`), so one request costs at most a few hundred bytes of audit. The file is
reopened after a rotation (`hub.audit_sink`).
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from hub.audit_sink import Sink, WriteError
from hub.vocab import safe_text, utc_iso

log = logging.getLogger(__name__)

#: records waiting for the writer; beyond it they are dropped and counted (queue_full)
MAX_QUEUE = 4096
#: a failing file is reported at most this often (seconds), whatever the number of records lost
ERROR_LOG_EVERY = 60.0
#: how long close() waits for the writer to finish what is queued (a stuck disk must not hang shutdown)
JOIN_TIMEOUT = 5.0
#: `rejected` is written once per (address, reason) and window; repeats are summed when it ends
WINDOW = 60.0
#: (address, reason) windows tracked at once; a new key beyond it is dropped (limiter_full)
MAX_TRACKED = 10_000
#: longest text field (Origin, User-Agent, path, token name, reason...); longer ones end with "…"
MAX_FIELD_CHARS = 256
#: most items of a list field that are kept
MAX_FIELD_ITEMS = 16

_STOP = object()
_REOPEN = object()


def field(value: Any) -> Any:
    """`value` as the audit writes it: numbers, booleans and None as they are; text (anything else
    as its `str`) cut at MAX_FIELD_CHARS and escaped to one printable line; lists cut likewise."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [field(v) for v in value[:MAX_FIELD_ITEMS]] + (["…"] if len(value) > MAX_FIELD_ITEMS else [])
    head = str(value)[: MAX_FIELD_CHARS + 1]  # only these can survive: a 8 KB header costs no more
    if not head.isascii():
        try:  # header bytes that are not UTF-8 (aiohttp keeps them as surrogates) shown as \xff
            head = head.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            pass  # other lone surrogates: safe_text escapes them
    return safe_text(head, limit=MAX_FIELD_CHARS)


class Repeats:
    """Per key, the first event of each `window` passes; later ones are counted and reported once."""

    def __init__(self, *, window: float = WINDOW, max_tracked: int = MAX_TRACKED,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window, self.max_tracked, self.clock = window, max_tracked, clock
        # key -> [window start, repeats]; ordered oldest window first
        self._windows: collections.OrderedDict[tuple[str, str], list[float]] = collections.OrderedDict()

    def hit(self, key: tuple[str, str]) -> tuple[str, int]:
        """("first" | "repeat" | "full", repeats of this key's ended window still to report)."""
        now = self.clock()
        w = self._windows.get(key)
        ended = 0
        if w is not None:
            if now - w[0] < self.window:
                w[1] += 1
                return "repeat", 0
            ended = int(w[1])  # ended but not swept yet: its summary goes out before the new first
            del self._windows[key]
        elif len(self._windows) >= self.max_tracked:
            return "full", 0
        self._windows[key] = [now, 0]
        return "first", ended

    def sweep(self, *, everything: bool = False) -> list[tuple[tuple[str, str], int]]:
        """Forget ended windows (all of them with `everything`); (key, repeats) of those with repeats."""
        now = self.clock()
        out: list[tuple[tuple[str, str], int]] = []
        while self._windows:
            key, w = next(iter(self._windows.items()))
            if not everything and now - w[0] < self.window:
                break
            del self._windows[key]
            if w[1]:
                out.append((key, int(w[1])))
        return out


class Audit:
    """Writes one JSON object per line to stderr or `path`; never token values or message bodies.

    Until `start()` records wait in the queue (at most `max_queue`); `close()` writes what is
    queued, joins the writer and closes the file. No thread exists before `start()`.
    """

    def __init__(self, *, path: str = "", metrics: Any = None, max_queue: int = MAX_QUEUE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sink = Sink(path)
        self._dropped = metrics.audit_dropped if metrics is not None else None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._last_warning = -ERROR_LOG_EVERY
        self._errors_since_log = 0
        self._failing_reported = False  # a write failure was logged: say so when writing works again
        self.rejected = Repeats(clock=clock)

    def start(self) -> None:
        """Start the writer thread (once; the app's startup calls it)."""
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name="hub-audit-writer", daemon=True)
            self._thread.start()

    def event(self, event: str, request: web.BaseRequest | None = None, *, remote: str | None = None,
              **fields: Any) -> None:
        """Record `event` with the client address (`remote`, else the peer), origin and user agent.

        `rejected` is rate-limited per (address, reason): see `Repeats` and `sweep()`.
        """
        if self._closed:
            self._drop("closed")
            return
        rec: dict[str, Any] = {"time": utc_iso(), "event": event}
        if request is not None:
            rec["remote"] = field(remote or request.remote)
            rec["origin"] = field(request.headers.get("Origin"))
            rec["user_agent"] = field(request.headers.get("User-Agent"))
        elif remote is not None:
            rec["remote"] = field(remote)
        rec.update((k, field(v)) for k, v in fields.items())
        if event == "rejected":
            key = (str(rec.get("remote")), str(fields.get("reason")))
            verdict, ended = self.rejected.hit(key)
            if ended:
                self._repeated(key, ended)
            if verdict == "repeat":
                return
            if verdict == "full":
                self._drop("limiter_full")
                return
        self._put(rec)

    def sweep(self, *, everything: bool = False) -> None:
        """Write one `rejected_repeated` line per (address, reason) whose window ended with repeats."""
        for key, repeats in self.rejected.sweep(everything=everything):
            self._repeated(key, repeats)

    def reopen(self) -> None:
        """Reopen the file before the next write (SIGHUP after a rotation); stderr has nothing to reopen."""
        if not self._sink.path:
            log.info("audit log goes to stderr: nothing to reopen")
            return
        self._sink.reopen_requested = True
        if self._thread is not None:
            try:  # wake the writer: the renamed file is released now, not at the next record
                self._queue.put_nowait(_REOPEN)
            except queue.Full:
                pass  # the writer is busy and reopens before its next write anyway

    def close(self) -> None:
        """Summarise open windows, write what is queued, join the writer, close the file."""
        if self._closed:
            return
        self.sweep(everything=True)
        self._closed = True
        thread = self._thread
        if thread is None:  # never started: write the queue here
            self._write([item for item in self._take_all() if isinstance(item, bytes)])
        else:
            try:
                self._queue.put(_STOP, timeout=JOIN_TIMEOUT)
            except queue.Full:
                pass
            thread.join(JOIN_TIMEOUT)
            if thread.is_alive():
                log.warning("audit log %s: the writer did not finish within %.0f s; unwritten records are lost",
                            self._sink.where, JOIN_TIMEOUT)
                return  # the daemon thread still owns the file
        self._sink.close()

    # ------------------------------------------------------------------ internals

    def _repeated(self, key: tuple[str, str], repeats: int) -> None:
        self._put({"time": utc_iso(), "event": "rejected_repeated", "remote": key[0], "reason": key[1],
                   "repeats": repeats, "window_seconds": int(self.rejected.window)})

    def _put(self, rec: dict[str, Any]) -> None:
        try:
            line = orjson.dumps(rec, default=str)
        except TypeError:  # an integer beyond 64 bits (text is made encodable by `field` already)
            text = json.dumps(rec, default=str, ensure_ascii=False, separators=(",", ":"))
            line = text.encode("utf-8", "replace")
        try:
            self._queue.put_nowait(line + b"\n")
        except queue.Full:
            self._drop("queue_full")

    def _drop(self, reason: str, n: int = 1) -> None:
        if self._dropped is not None:
            self._dropped.labels(reason).inc(n)

    def _take_all(self) -> list[Any]:
        out: list[Any] = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            batch += self._take_all()  # one write and one syscall per burst
            self._write([item for item in batch if isinstance(item, bytes)])
            if _STOP in batch:
                return

    def _warning_due(self) -> bool:
        """True at most once per ERROR_LOG_EVERY: a failing disk is reported, never per record."""
        now = time.monotonic()
        if now - self._last_warning < ERROR_LOG_EVERY:
            return False
        self._last_warning = now
        return True

    def _write(self, lines: list[bytes]) -> None:
        """Reopen the file if it was rotated (or SIGHUP asked), then write `lines` in one go."""
        try:
            why = self._sink.rotated()
            if why:
                self._sink.reopen()
                log.info("audit log %s reopened: %s", self._sink.where, why)
        except OSError as exc:
            if self._warning_due():
                log.warning("audit log %s: cannot reopen (%s); still writing to the file opened before",
                            self._sink.where, exc.strerror or exc)
        if not lines:
            return
        try:
            self._sink.write(lines)
        except (WriteError, OSError, ValueError) as exc:
            lost = len(lines) - exc.written if isinstance(exc, WriteError) else len(lines)
            self._drop("write_error", lost)
            self._errors_since_log += lost
            if self._warning_due():
                log.warning("audit log %s: cannot write (%s); %d record(s) lost so far, counted in "
                            "hub_audit_dropped_total{reason=\"write_error\"}; next report in a minute at most",
                            self._sink.where, getattr(exc, "strerror", None) or exc, self._errors_since_log)
                self._errors_since_log = 0
                self._failing_reported = True
            return
        if self._failing_reported:
            log.info("audit log %s: writing again; %d more record(s) were lost since the last report",
                     self._sink.where, self._errors_since_log)
            self._failing_reported = False
            self._errors_since_log = 0
