"""The health checks' states, kept in a `hub.state` store, and their transitions announced once.

Each collection reads the stored states (another collector's, or this one's before a restart),
applies its outcomes, writes the states that changed, and only then claims each new transition in
the store's ledger; a message is queued only for a claim this collector won. So a transition is
announced once, cluster-wide and across restarts, whichever collector sees it, and a collector
that crashes at any point leaves it either pending (claimed by the next one) or claimed.

An outage is named by the time of its first failure (`outage`): the down message claims
`health:<check>:down:<outage>` and the recovery `health:<check>:up:<outage>`, keys every collector
computes alike from the stored state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hub.notify import Notification
from hub.state import Store, StoreUnavailable

if TYPE_CHECKING:
    from hub.notify import Notifier

logger = logging.getLogger("hub.sources.health")

#: the store scope of the checks' states
SCOPE = "health"
#: Transitions kept while their claims fail (the store unreachable); beyond, the oldest are dropped.
MAX_PENDING = 4


@dataclass(slots=True)
class CheckState:
    """One check's state; all but `last` (the latest attempt) is stored, so another collector continues it."""

    up: bool = True
    since: str | None = None
    since_ts: float = 0.0
    failures: int = 0
    #: when the current run of failures began (0: none); it names the outage that run becomes
    failing_since: float = 0.0
    #: the current or last outage's name: utc_iso(its first failure)
    outage: str = ""
    #: transitions whose message is not claimed yet: {"kind", "outage", "ts", "reason" | "down_for"}
    pending: list[dict[str, Any]] = field(default_factory=list)
    last: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"up": self.up, "since": self.since, "since_ts": self.since_ts, "failures": self.failures,
                "failing_since": self.failing_since, "outage": self.outage,
                "pending": [dict(p) for p in self.pending]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckState:
        """The state stored as `d`; ValueError when it is not one (damaged, or written by something else)."""
        try:
            pending = [dict(p) for p in d.get("pending") or []]
            if not all(p.get("kind") in ("down", "recovered") and "outage" in p for p in pending):
                raise ValueError("a pending transition without kind or outage")
            since = d.get("since")
            return cls(up=bool(d["up"]), since=None if since is None else str(since),
                       since_ts=float(d["since_ts"]), failures=max(0, int(d["failures"])),
                       failing_since=float(d.get("failing_since") or 0.0), outage=str(d.get("outage") or ""),
                       pending=pending)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a health state: {exc}") from None

    def pend(self, name: str, transition: dict[str, Any]) -> None:
        """Add a transition to announce (bounded: the store may be unreachable through several)."""
        self.pending.append(transition)
        if len(self.pending) > MAX_PENDING:
            dropped = self.pending.pop(0)
            logger.warning("health check %s: dropped the unannounced %s transition of %s", name,
                           dropped["kind"], dropped["outage"])


class CheckStates:
    """The states of the named checks, continued from and written to `store`; see the module docstring."""

    def __init__(self, names: Iterable[str], *, store: Store, notifier: Notifier | None) -> None:
        self.states = {n: CheckState() for n in names}
        self.store = store
        self.notifier = notifier
        #: what the store holds, as far as this process knows: a state is written when it differs
        self._stored: dict[str, dict[str, Any]] = {}
        self._error: str | None = None
        self._failed_now = False

    async def load(self) -> dict[str, dict[str, Any]] | None:
        """Begin a collection: the stored states, or None (logged once) when the store is unreachable."""
        self._failed_now = False
        try:
            return await self.store.load(SCOPE)
        except StoreUnavailable as exc:
            self._failed(exc)
            return None

    def adopt(self, stored: dict[str, dict[str, Any]]) -> None:
        """Continue from `stored`; a check it lacks (new, or an emptied Redis) keeps its state, written back."""
        for name, st in self.states.items():
            raw = stored.get(name)
            if raw is None:
                self._stored.pop(name, None)
                continue
            try:
                loaded = CheckState.from_dict(raw)
            except ValueError as exc:
                logger.warning("health check %s: ignoring its stored state (%s)", name, exc)
                continue
            loaded.last = st.last
            self.states[name] = loaded
            self._stored[name] = raw

    async def save(self) -> bool:
        """Write the states that changed; False (logged once) when the store could not take them."""
        changed = {n: d for n, st in self.states.items() if (d := st.to_dict()) != self._stored.get(n)}
        if not changed:
            return True
        try:
            await self.store.save(SCOPE, changed)
        except StoreUnavailable as exc:
            self._failed(exc)
            return False
        self._stored.update(changed)
        return True

    async def announce(self) -> None:
        """Claim each pending transition in order and queue a message for each claim won.

        Call only after `save` stored the transitions. A claim that fails stays pending and is tried
        again at the next collection; without a notifier, transitions are just dropped.
        """
        for name, st in self.states.items():
            while st.pending:
                p = st.pending[0]
                if self.notifier is not None:
                    try:
                        won = await self.store.claim(f"{SCOPE}:{name}:{'down' if p['kind'] == 'down' else 'up'}:"
                                                     f"{p['outage']}")
                    except StoreUnavailable as exc:
                        self._failed(exc)
                        await self.save()
                        return
                    if won:
                        self.notifier.notify(_message(name, p))
                st.pending.pop(0)
        await self.save()  # a failure here only means a claim is tried again (and lost) later

    def settle(self) -> None:
        """End a collection: report the store reachable again if nothing failed in this one."""
        if not self._failed_now and self._error is not None:
            logger.info("health: state store reachable again")
            self._error = None

    def _failed(self, exc: StoreUnavailable) -> None:
        self._failed_now = True
        if self._error is None:  # once per outage, not once per collection
            logger.warning("health: state store unavailable (%s); transitions stay pending until it is back", exc)
        self._error = str(exc)


def _message(name: str, p: dict[str, Any]) -> Notification:
    ts = float(p.get("ts") or time.time())
    if p["kind"] == "down":
        return Notification.down(name, str(p.get("reason") or "failed"), ts=ts)
    return Notification.recovered(name, down_for=float(p.get("down_for") or 0.0), ts=ts)
