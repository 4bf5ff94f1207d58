"""The store's interface, its ledger, and the memory store (the default); see hub/state/__init__.py."""

from __future__ import annotations

import abc
import collections
import copy
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

#: How long a ledger entry is kept: far longer than any collector's absence, so a transition whose
#: announcement was recorded is never announced again, and yet the ledger does not grow forever.
LEDGER_TTL = 30 * 86400
#: Ledger entries a file or memory store keeps at most (the oldest go first).
MAX_LEDGER = 4096


class StoreUnavailable(Exception):
    """The store could not be read or written; the message is readable and free of secrets."""


class Store(abc.ABC):
    """Per-scope states and an idempotent ledger; see the module docstring."""

    kind: str = ""

    @abc.abstractmethod
    async def load(self, scope: str) -> dict[str, dict[str, Any]]:
        """Every state of `scope`, name -> state (a copy: changing it changes nothing stored)."""

    @abc.abstractmethod
    async def save(self, scope: str, states: Mapping[str, Mapping[str, Any]]) -> None:
        """Write the given states of `scope` (others are kept)."""

    @abc.abstractmethod
    async def claim(self, key: str) -> bool:
        """Record `key` in the ledger: True if this call recorded it, False if it was already there."""

    @abc.abstractmethod
    async def delete(self, scope: str, names: Sequence[str]) -> int:
        """Remove the named states of `scope`; how many of them were there (so one caller of many sees each)."""

    async def close(self) -> None:
        """Release connections and files; called once at shutdown."""


class Ledger:
    """A bounded in-memory ledger: key -> time claimed, oldest first, entries older than LEDGER_TTL dropped."""

    def __init__(self, items: Sequence[tuple[str, float]] = ()) -> None:
        self.items: collections.OrderedDict[str, float] = collections.OrderedDict(items)

    def has(self, key: str, now: float) -> bool:
        at = self.items.get(key)
        return at is not None and now - at < LEDGER_TTL

    def add(self, key: str, now: float) -> None:
        self.items[key] = now
        self.items.move_to_end(key)
        while self.items and (len(self.items) > MAX_LEDGER or now - next(iter(self.items.values())) >= LEDGER_TTL):
            self.items.popitem(last=False)


class MemoryStore(Store):
    """Keeps everything in this process: a restart forgets (the behaviour without `[state] dir`)."""

    kind = "memory"

    def __init__(self) -> None:
        self._scopes: dict[str, dict[str, dict[str, Any]]] = {}
        self._ledger = Ledger()

    async def load(self, scope: str) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self._scopes.get(scope, {}))

    async def save(self, scope: str, states: Mapping[str, Mapping[str, Any]]) -> None:
        self._scopes.setdefault(scope, {}).update(copy.deepcopy({k: dict(v) for k, v in states.items()}))

    async def claim(self, key: str) -> bool:
        now = time.time()
        if self._ledger.has(key, now):
            return False
        self._ledger.add(key, now)
        return True

    async def delete(self, scope: str, names: Sequence[str]) -> int:
        states = self._scopes.get(scope, {})
        return sum(states.pop(n, None) is not None for n in set(names))
