"""The state store of a single hub process: one JSON file in `[state] dir`, replaced atomically.

Each change writes the whole file (it is small: one state per health check and a bounded ledger) to a
temp file in the same directory, fsyncs it and renames it over the old one, so a crash or SIGKILL at
any moment leaves either the old or the new file, never a torn one. The directory is locked
(`flock`) while the hub runs: two processes sharing one directory would lose each other's claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from hub.state.base import Ledger, Store, StoreUnavailable

log = logging.getLogger(__name__)

FILE = "hub-state.json"
LOCK = "hub-state.lock"
VERSION = 1


class FileStore(Store):
    """States and ledger in `<dir>/hub-state.json`; opening checks the directory (ValueError naming `state.dir`)."""

    kind = "file"

    def __init__(self, directory: str) -> None:
        self.dir = Path(directory)
        self.path = self.dir / FILE
        self._lock_fd: int | None = None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ValueError(f"state.dir: cannot use {directory!r}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise ValueError(f"state.dir: {directory!r} is in use by another hub process") from None
        self._lock = asyncio.Lock()
        try:
            self._scopes, self._ledger = self._read()
            self._write(self._encode(self._scopes, self._ledger))  # fails now, not at the first outage
        except OSError as exc:
            self._unlock()
            raise ValueError(f"state.dir: cannot write in {directory!r}: {exc.strerror or exc}") from None
        except ValueError:
            self._unlock()
            raise

    def _read(self) -> tuple[dict[str, dict[str, dict[str, Any]]], Ledger]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}, Ledger()
        except OSError as exc:
            raise ValueError(f"state.dir: cannot read {str(self.path)!r}: {exc.strerror or exc}") from None
        try:
            doc = orjson.loads(raw)
            scopes = {str(s): {str(n): dict(v) for n, v in states.items()} for s, states in doc["scopes"].items()}
            ledger = Ledger([(str(k), float(t)) for k, t in doc["ledger"]])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            # Written atomically, so this is damage from outside; keep it for a look and start afresh.
            aside = self.path.with_suffix(".json.unreadable")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            log.error("state: %s was unreadable (moved to %s); starting without kept state", self.path, aside.name)
            return {}, Ledger()
        return scopes, ledger

    @staticmethod
    def _encode(scopes: Mapping[str, Any], ledger: Ledger) -> bytes:
        return orjson.dumps({"version": VERSION, "scopes": scopes, "ledger": list(ledger.items.items())})

    def _write(self, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".hub-state-", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        # The rename itself must reach the disk before a claim counts as recorded.
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    async def _commit(self, scopes: dict[str, dict[str, dict[str, Any]]], ledger: Ledger) -> None:
        """Write the new contents; only once they are on disk do they become this store's contents."""
        try:
            await asyncio.to_thread(self._write, self._encode(scopes, ledger))
        except OSError as exc:
            raise StoreUnavailable(f"cannot write {self.path.name}: {exc.strerror or exc}") from None
        self._scopes, self._ledger = scopes, ledger

    async def load(self, scope: str) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self._scopes.get(scope, {}))

    async def save(self, scope: str, states: Mapping[str, Mapping[str, Any]]) -> None:
        async with self._lock:
            scopes = dict(self._scopes)
            scopes[scope] = {**scopes.get(scope, {}), **copy.deepcopy({k: dict(v) for k, v in states.items()})}
            await self._commit(scopes, self._ledger)

    async def claim(self, key: str) -> bool:
        async with self._lock:
            now = time.time()
            if self._ledger.has(key, now):
                return False
            ledger = Ledger(list(self._ledger.items.items()))
            ledger.add(key, now)
            await self._commit(self._scopes, ledger)
            return True

    async def delete(self, scope: str, names: Sequence[str]) -> int:
        async with self._lock:
            current = self._scopes.get(scope, {})
            gone = {n for n in names if n in current}
            if gone:
                scopes = dict(self._scopes)
                scopes[scope] = {n: v for n, v in current.items() if n not in gone}
                await self._commit(scopes, self._ledger)
            return len(gone)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    async def close(self) -> None:
        self._unlock()

    def __del__(self) -> None:
        self._unlock()
