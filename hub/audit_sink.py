"""The audit log's file: opened, written, reopened after rotation and closed in one place."""

from __future__ import annotations

import errno
import os
import sys

from hub.config import ConfigError


class WriteError(Exception):
    """A write failed (`cause`) after `written` of its lines had been written whole."""

    def __init__(self, cause: OSError, written: int) -> None:
        super().__init__(cause.strerror or str(cause))
        self.cause, self.written = cause, written


class Sink:
    """The one place the audit file is opened, written, reopened and closed (`path` "": stderr).

    Written with `os.write` on an O_APPEND descriptor: a failed write leaves nothing in a buffer to
    grow or to fail again, and after a `copytruncate` the next line goes to the new end, not past a
    hole. Of a write cut short (a full disk) the whole lines stay and the partial one is cut off
    again, so every line in the file stays one JSON object and every lost record can be counted.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.where = path or "stderr"
        #: set by `Audit.reopen` (SIGHUP); the writer reopens before its next write
        self.reopen_requested = False
        self._fd = -1
        self._end = 0  # the file's size after the last write: a smaller one means it was truncated
        self._torn = False  # a cut-short write could not be undone: start the next one on a new line
        self._stderr = sys.stderr  # the one of this moment (tests swap it; the hub never does)
        if path:
            try:
                self._fd = self._open()
            except OSError as exc:  # a config problem: report it like one, not as a traceback
                raise ConfigError(f"audit.path: cannot open {path!r} for appending: {exc.strerror}") from None

    def _open(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        self._end = os.fstat(fd).st_size
        return fd

    def rotated(self) -> str | None:
        """Why the file must be reopened before the next write (SIGHUP, rotated, truncated), or None."""
        if not self.path:
            self.reopen_requested = False
            return None
        if self.reopen_requested:
            return "SIGHUP"
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            # Renamed away and not created again yet: keep appending to the renamed file until a new
            # one appears or SIGHUP comes (creating it here would race logrotate's `create`).
            return None
        mine = os.fstat(self._fd)
        if (at_path.st_dev, at_path.st_ino) != (mine.st_dev, mine.st_ino):
            return "a new file at its path (rotated)"
        if mine.st_size < self._end:
            return "the file shrank (copytruncate)"
        return None

    def reopen(self) -> None:
        """Open the path again (creating it) and close the old file; on OSError keep the old one."""
        self.reopen_requested = False
        fd = self._open()
        old, self._fd = self._fd, fd
        self._torn = False
        os.close(old)

    def write(self, lines: list[bytes]) -> None:
        """Write `lines` (each ending in a newline) in one go, or raise WriteError saying how many
        of them were written whole; a line cut short is removed again where that is possible."""
        fd = self._fd if self.path else self._stderr_fd()
        if fd is None:  # stderr without a descriptor: only in tests that capture it
            self._stderr.write(b"".join(lines).decode())
            self._stderr.flush()
            return
        lead = b"\n" if self._torn else b""
        data = lead + b"".join(lines)
        start = os.fstat(fd).st_size if self.path else -1
        view, written = memoryview(data), 0
        try:
            while written < len(data):
                n = os.write(fd, view[written:])
                if n <= 0:
                    raise OSError(errno.EIO, "short write")
                written += n
        except OSError as exc:
            kept = self._keep_whole_lines(fd, start, data, written) if written else 0
            raise WriteError(exc, data[len(lead):kept].count(b"\n") if kept > len(lead) else 0) from None
        self._torn = False
        if self.path:
            self._end = start + written

    def _stderr_fd(self) -> int | None:
        try:
            return self._stderr.fileno()
        except (AttributeError, OSError, ValueError):
            return None

    def _keep_whole_lines(self, fd: int, start: int, data: bytes, written: int) -> int:
        """After a write cut short at `written`: the bytes of `data` that stay, ending at a line end.

        The partial line is cut off the file, unless it is stderr or someone else appended meanwhile;
        then it stays and the next write begins with a newline, so the lines after it are whole.
        """
        whole = data.rfind(b"\n", 0, written) + 1
        if whole == written:
            self._torn = False
            return whole
        try:
            if self.path and os.fstat(fd).st_size == start + written:
                os.ftruncate(fd, start + whole)  # frees space, so it works on a full disk too
                self._torn = False
                self._end = start + whole
                return whole
        except OSError:
            pass
        self._torn = True
        return whole

    def close(self) -> None:
        """Close the file (never stderr)."""
        if self.path and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
