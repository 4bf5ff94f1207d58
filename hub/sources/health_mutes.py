"""Mutes of health checks: kept in the `hub.state` store, shown in `data.health.mutes`, and holding a
muted check's messages back until the mute ends.

A mute names a check and an end time. `MuteBook` creates and ends them (the HTTP API, on any
replica: they go straight to the store) and reads the active ones. `MuteGate` is the collector's
side, once per collection: it reads the mutes, forgets the expired ones, and

- `hold`: takes a muted check's pending transitions out of the announcement queue; a "down" is
  remembered as held (in the store, before it leaves the queue), a "recovered" clears it;
- `release`: for a held check no longer muted, still down, claims the outage's ordinary down key
  (`health:<check>:down:<outage>`, the one `health_state` claims) and sends one down message.

Claiming the very key a down message claims makes "one message per outage" hold whatever happens:
an outage announced before the mute is not announced again when it ends, and a collector that takes
over (after a crash anywhere in between) finds the held record and loses the claim if it was won.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hub.notify import Notification
from hub.state import Store, StoreUnavailable
from hub.vocab import utc_iso

if TYPE_CHECKING:
    from hub.sources.health_state import CheckStates

logger = logging.getLogger("hub.sources.health")

#: the store scope: "mute:<id>" -> a mute, "held:<check>" -> the down message a mute holds back
SCOPE = "mutes"
MUTE, HELD = "mute:", "held:"
#: active mutes at most: each is shown in every snapshot, so their number is bounded
MAX_MUTES = 100
#: longest comment, in characters
MAX_COMMENT = 1000


class TooManyMutes(Exception):
    """MAX_MUTES mutes are active already."""


@dataclass(frozen=True, slots=True)
class Mute:
    """One mute: `check` stays quiet until `until` (epoch seconds); `created_by` is a token name."""

    id: str
    check: str
    until: float
    created_by: str
    comment: str
    created: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "check": self.check, "until": self.until, "createdBy": self.created_by,
                "comment": self.comment, "created": self.created}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Mute:
        """The mute stored as `d`; ValueError when it is not one."""
        try:
            return cls(id=str(d["id"]), check=str(d["check"]), until=float(d["until"]),
                       created_by=str(d["createdBy"]), comment=str(d["comment"]), created=float(d["created"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a mute: {exc}") from None

    def shown(self) -> dict[str, Any]:
        """As `data.health.mutes` lists it."""
        return {"id": self.id, "check": self.check, "until": utc_iso(self.until), "createdBy": self.created_by,
                "comment": self.comment}


def _split(stored: dict[str, dict[str, Any]]) -> tuple[list[Mute], dict[str, dict[str, Any]]]:
    """The stored mutes and held records (unreadable mutes are skipped, logged)."""
    mutes: list[Mute] = []
    held: dict[str, dict[str, Any]] = {}
    for name, value in stored.items():
        if name.startswith(MUTE):
            try:
                mutes.append(Mute.from_dict(value))
            except ValueError as exc:
                logger.warning("health: ignoring a stored mute (%s)", exc)
        elif name.startswith(HELD):
            held[name.removeprefix(HELD)] = value
    return mutes, held


class MuteBook:
    """The mutes of one hub's checks (`checks`: the names that may be muted), in `store`."""

    def __init__(self, *, store: Store, checks: Collection[str], max_mute_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.checks = frozenset(checks)
        self.max_mute_s = max_mute_s
        self.clock = clock

    async def active(self) -> list[Mute]:
        """The mutes not yet ended, soonest end first; StoreUnavailable when the store cannot be read."""
        mutes, _held = _split(await self.store.load(SCOPE))
        now = self.clock()
        return sorted((m for m in mutes if m.until > now), key=lambda m: (m.until, m.check, m.id))

    async def create(self, check: str, until: float, *, created_by: str, comment: str) -> Mute:
        """Store a new mute (arguments already checked by the caller); TooManyMutes, StoreUnavailable."""
        if len(await self.active()) >= MAX_MUTES:
            raise TooManyMutes(f"{MAX_MUTES} mutes are active already; end one first")
        mute = Mute(id=str(uuid.uuid4()), check=check, until=until, created_by=created_by, comment=comment,
                    created=self.clock())
        await self.store.save(SCOPE, {MUTE + mute.id: mute.to_dict()})
        return mute

    async def end(self, mute_id: str) -> Mute | None:
        """End the active mute `mute_id`: the mute it was, or None when no such mute is active (or another
        caller ended it first)."""
        found = next((m for m in await self.active() if m.id == mute_id), None)
        if found is None or not await self.store.delete(SCOPE, [MUTE + mute_id]):
            return None
        return found


class MuteGate:
    """The collector's side of the mutes, called by the health source at each collection."""

    def __init__(self, book: MuteBook, *, silenced: Callable[[Collection[str]], frozenset[str]] | None = None) -> None:
        self.book = book
        #: which of the checks are silenced in Alertmanager (held like muted ones), when that is known
        self._silenced = silenced
        self.muted: frozenset[str] = frozenset()
        self._shown: list[dict[str, Any]] = []
        self._held: dict[str, dict[str, Any]] = {}
        self._error: str | None = None
        self._mute_checks: frozenset[str] = frozenset()

    async def load(self) -> bool:
        """Read the mutes and held messages, deleting the expired mutes; False when the store is unreachable
        (then nothing may be announced: a muted check's message could go out)."""
        try:
            mutes, self._held = _split(await self.book.store.load(SCOPE))
            now = self.book.clock()
            expired = [m for m in mutes if m.until <= now]
            if expired:
                await self.book.store.delete(SCOPE, [MUTE + m.id for m in expired])
                for m in expired:
                    logger.info("health check %s: mute %s ended at %s", m.check, m.id, utc_iso(m.until))
        except StoreUnavailable as exc:
            if self._error is None:
                logger.warning("health: cannot read the mutes (%s); transitions stay pending", exc)
            self._error = str(exc)
            return False
        self._error = None
        active = sorted((m for m in mutes if m.until > now), key=lambda m: (m.until, m.check, m.id))
        self.muted = self._mute_checks = frozenset(m.check for m in active)
        if self._silenced is not None:
            self.muted |= self._silenced(self.book.checks)
        self._shown = [m.shown() for m in active]
        return True

    def shown(self) -> list[dict[str, Any]]:
        """`data.health.mutes`: the active mutes as of the last `load` (the last known ones if it failed)."""
        return list(self._shown)

    async def hold(self, states: CheckStates) -> bool:
        """Take muted checks' pending transitions out of `states`, recording the down ones as held first;
        False (nothing taken) when the store could not record them."""
        changed: dict[str, dict[str, Any] | None] = {}
        for name in self.muted & states.states.keys():
            st = states.states[name]
            if not st.pending:
                continue
            held: dict[str, Any] | None = self._held.get(name)
            for p in st.pending:
                # A down seen while muted is held; a recovery while muted ends the outage: nothing to say.
                # A reminder while muted is dropped and changes nothing: the held down (if any) still
                # goes out when the mute ends.
                if p["kind"] == "down":
                    held = {"outage": p["outage"], "reason": str(p.get("reason") or "failed")}
                elif p["kind"] == "recovered":
                    held = None
            changed[name] = held
        if not changed:
            return True
        try:
            keep = {HELD + n: h for n, h in changed.items() if h is not None}
            if keep:
                await self.book.store.save(SCOPE, keep)
            drop = [HELD + n for n, h in changed.items() if h is None and n in self._held]
            if drop:
                await self.book.store.delete(SCOPE, drop)
        except StoreUnavailable as exc:
            logger.warning("health: cannot record a muted check's transition (%s); it stays pending", exc)
            return False
        for name, held in changed.items():
            for p in states.states[name].pending:
                logger.info("health check %s: %s transition not announced: the check is muted%s", name, p["kind"],
                            "" if name in self._mute_checks else " (its alert is silenced in Alertmanager)")
            states.states[name].pending.clear()
            if held is None:
                self._held.pop(name, None)
            else:
                self._held[name] = held
        return True

    async def release(self, states: CheckStates) -> None:
        """For each held check no longer muted: one down message if it is still down (claimed cluster-wide
        with its outage's down key), nothing if it recovered; then forget it. Retried at the next
        collection when the store fails."""
        for name in sorted(self._held.keys() - self.muted):
            st = states.states.get(name)
            try:
                # the very key health_state claims for a down message: one message per outage
                if (st is not None and not st.up and states.notifier is not None
                        and await self.book.store.claim(f"health:{name}:down:{st.outage}")):
                    reason = getattr(st.last, "error", None) or self._held[name].get("reason") or "failed"
                    logger.warning("health check %s: mute ended while down; announcing it", name)
                    states.notifier.notify(Notification.down(name, str(reason)))
                    # The down message says it all: reminders count again from it (stored next save).
                    st.pending[:] = [p for p in st.pending if p["kind"] != "reminder"]
                    st.reminded_at = time.time()
                await self.book.store.delete(SCOPE, [HELD + name])
            except StoreUnavailable as exc:
                logger.warning("health: cannot release check %s's held message yet (%s)", name, exc)
                return
            self._held.pop(name, None)
