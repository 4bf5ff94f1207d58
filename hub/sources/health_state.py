"""The health checks' states, kept in a `hub.state` store, and their transitions announced once.

Each collection reads the stored states (another collector's, or this one's before a restart),
applies its outcomes, writes the states that changed, and only then claims each new transition in
the store's ledger; a message is queued only for a claim this collector won. So a transition is
announced once, cluster-wide and across restarts, whichever collector sees it, and a collector
that crashes at any point leaves it either pending (claimed by the next one) or claimed.

An outage is named by the time of its first failure (`outage`): the down message claims
`health:<check>:down:<outage>`, the n-th reminder `health:<check>:remind:<outage>:<n>` and the
recovery `health:<check>:up:<outage>`, keys every collector computes alike from the stored state.
A degraded spell (a check that answers, but slowly or with a certificate near expiry) is named the
same way by its first degraded answer: `health:<check>:degraded:<spell>` and
`health:<check>:restored:<spell>`.
The reminders' count and the time of the last one are stored too, so a collector taking over sends
the next reminder when it is due from the last one recorded: none skipped, none repeated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hub.notify import Notification
from hub.notify.message import duration
from hub.state import Store, StoreUnavailable
from hub.vocab import utc_iso

if TYPE_CHECKING:
    from hub.notify import Notifier

logger = logging.getLogger("hub.sources.health")

#: the store scope of the checks' states
SCOPE = "health"
#: the kinds of transition a state may hold pending
KINDS = ("down", "reminder", "recovered", "degraded", "restored")
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
    #: consecutive successes while down (`successes_before_up` of them declare it up)
    successes: int = 0
    #: the reason of the latest failure while down (a reminder repeats it)
    reason: str = ""
    #: reminders pended in the current outage, and when the last message of it (down or reminder) was
    reminders: int = 0
    reminded_at: float = 0.0
    #: transitions whose message is not claimed yet: {"kind", "outage", "ts", "reason" | "down_for", "n"}
    pending: list[dict[str, Any]] = field(default_factory=list)
    #: up but degraded (slow, or a certificate near expiry); never while down
    degraded: bool = False
    #: the current or last degraded spell's name (utc_iso of its first degraded answer) and start
    spell: str = ""
    degraded_ts: float = 0.0
    #: degraded answers in a row, and good answers in a row while degraded
    slow: int = 0
    fast: int = 0
    #: when the current run of degraded answers began (it names the spell it becomes)
    slow_since: float = 0.0
    #: why it is degraded (the latest degraded answer's reason)
    degraded_reason: str = ""
    last: Any = None

    @property
    def state(self) -> str:
        """"down", "degraded" or "up"."""
        return "down" if not self.up else "degraded" if self.degraded else "up"

    def grade(self, name: str, degraded: str | None, now: float, *, after: int, back_after: int) -> None:
        """Count an answer that was ok (`degraded`: None) or degraded (its reason): `after` degraded ones in a
        row make an up check degraded, `back_after` good ones in a row make it up again; each change pends
        one message. A failure resets both counts (`fail`)."""
        if degraded is not None:
            if self.slow == 0:
                self.slow_since = now
            self.slow, self.fast = self.slow + 1, 0
            self.degraded_reason = degraded
        else:
            self.slow = 0
            self.fast = self.fast + 1 if self.degraded else 0
        if not self.up:
            return
        if not self.degraded and self.slow >= after:
            self.degraded, self.spell, self.degraded_ts, self.fast = True, utc_iso(self.slow_since or now), now, 0
            logger.warning("health check %s is degraded: %s", name, degraded)
            self.pend(name, {"kind": "degraded", "outage": self.spell, "ts": now, "reason": degraded})
        elif self.degraded and self.fast >= back_after:
            degraded_for = now - self.degraded_ts
            self.degraded, self.fast = False, 0
            logger.warning("health check %s is no longer degraded after %.0f s", name, degraded_for)
            self.pend(name, {"kind": "restored", "outage": self.spell, "ts": now, "down_for": degraded_for})

    def fail(self) -> None:
        """A failed answer: degraded and good runs start again; a check gone down is no longer degraded
        (its down message says more, its recovery message ends it)."""
        self.slow = self.fast = 0
        if not self.up:
            self.degraded = False

    def to_dict(self) -> dict[str, Any]:
        return {"up": self.up, "since": self.since, "since_ts": self.since_ts, "failures": self.failures,
                "failing_since": self.failing_since, "outage": self.outage, "successes": self.successes,
                "reason": self.reason, "reminders": self.reminders, "reminded_at": self.reminded_at,
                "pending": [dict(p) for p in self.pending], "degraded": self.degraded, "spell": self.spell,
                "degraded_ts": self.degraded_ts, "slow": self.slow, "fast": self.fast,
                "slow_since": self.slow_since, "degraded_reason": self.degraded_reason}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckState:
        """The state stored as `d`; ValueError when it is not one (damaged, or written by something else)."""
        try:
            pending = [dict(p) for p in d.get("pending") or []]
            if not all(p.get("kind") in KINDS and "outage" in p for p in pending):
                raise ValueError("a pending transition without kind or outage")
            since = d.get("since")
            return cls(up=bool(d["up"]), since=None if since is None else str(since),
                       since_ts=float(d["since_ts"]), failures=max(0, int(d["failures"])),
                       failing_since=float(d.get("failing_since") or 0.0), outage=str(d.get("outage") or ""),
                       successes=max(0, int(d.get("successes") or 0)), reason=str(d.get("reason") or ""),
                       reminders=max(0, int(d.get("reminders") or 0)),
                       # a state stored before reminders existed: the next one is due from the down message
                       reminded_at=float(d.get("reminded_at") or d["since_ts"]), pending=pending,
                       # states stored before the degraded state existed: not degraded
                       degraded=bool(d.get("degraded")), spell=str(d.get("spell") or ""),
                       degraded_ts=float(d.get("degraded_ts") or 0.0), slow=max(0, int(d.get("slow") or 0)),
                       fast=max(0, int(d.get("fast") or 0)),
                       slow_since=float(d.get("slow_since") or 0.0),
                       degraded_reason=str(d.get("degraded_reason") or ""))
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

    def remind(self, name: str, now: float) -> None:
        """Pend the next reminder of `name` if it is down and the notifier's `repeat_interval` has passed
        since its last message; not while a message is still unclaimed (it would crowd out the down one)."""
        every = self.notifier.repeat_interval if self.notifier is not None else 0.0
        st = self.states[name]
        if not every or st.up or st.pending or now - st.reminded_at < every:
            return
        st.reminders += 1
        st.reminded_at = now
        st.pend(name, {"kind": "reminder", "outage": st.outage, "ts": now, "n": st.reminders,
                       "reason": st.reason or "failed", "down_for": now - st.since_ts})

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
                        won = await self.store.claim(_ledger_key(name, p))
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


def _ledger_key(name: str, p: dict[str, Any]) -> str:
    if p["kind"] in ("degraded", "restored"):
        return f"{SCOPE}:{name}:{p['kind']}:{p['outage']}"
    if p["kind"] == "reminder":
        return f"{SCOPE}:{name}:remind:{p['outage']}:{p.get('n', 0)}"
    return f"{SCOPE}:{name}:{'down' if p['kind'] == 'down' else 'up'}:{p['outage']}"


def _message(name: str, p: dict[str, Any]) -> Notification:
    ts = float(p.get("ts") or time.time())
    if p["kind"] == "down":
        return Notification.down(name, str(p.get("reason") or "failed"), ts=ts)
    if p["kind"] == "reminder":
        return Notification.still_down(name, str(p.get("reason") or "failed"),
                                       down_for=float(p.get("down_for") or 0.0), reminder=int(p.get("n") or 0),
                                       ts=ts)
    if p["kind"] == "degraded":
        return Notification("degraded", name, "warning", f"Health check degraded: {name}: {p.get('reason')}", ts)
    if p["kind"] == "restored":
        # kind "recovered": every channel ends what the degraded message began (PagerDuty resolves it)
        return Notification("recovered", name, "info", f"Health check no longer degraded: {name} "
                            f"(degraded for {duration(float(p.get('down_for') or 0.0))})", ts)
    return Notification.recovered(name, down_for=float(p.get("down_for") or 0.0), ts=ts)
