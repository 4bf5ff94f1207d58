"""The anomaly's state, kept in the `hub.state` store, and its episodes announced once, cluster-wide.

An episode runs from leaving ok (to low or silent) until ok again; it is named by the time it began.
Its start claims `business:anomaly:start:<episode>` in the store's ledger and its end
`business:anomaly:end:<episode>`; a message goes out only for a claim this collector won. A change
between low and silent within an episode updates the state (and the metrics) without a message.
The state is stored before a claim, so a collector taking over continues the same episode (same
name, same keys): one message per transition whichever replica collects, and across restarts.
Messages carry the hour, counts and minutes only, never a field of a booking.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hub.notify import Notification
from hub.notify.message import duration
from hub.sources.business.anomaly import STATES, Schedule, Verdict
from hub.sources.business.expected import Expected
from hub.state import Store, StoreUnavailable
from hub.vocab import iso_of

if TYPE_CHECKING:
    from hub.notify import Notifier

log = logging.getLogger(__name__)

SCOPE = "business"
NAME = "anomaly"
#: transitions kept while their claims fail (the store unreachable); beyond, the oldest are dropped
MAX_PENDING = 4


@dataclass(slots=True)
class AnomalyState:
    """The current state, since when, the episode it belongs to, and transitions not yet claimed."""

    state: str = "ok"
    since: str | None = None
    episode: str = ""
    #: {"kind": "start" | "end", "episode", "ts", "text", "state"}
    pending: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "since": self.since, "episode": self.episode,
                "pending": [dict(p) for p in self.pending]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnomalyState:
        """The state stored as `d`; ValueError when it is not one."""
        try:
            state = str(d["state"])
            pending = [dict(p) for p in d.get("pending") or []]
            if state not in STATES or not all(p.get("kind") in ("start", "end") for p in pending):
                raise ValueError("unknown state or transition")
            since = d.get("since")
            return cls(state=state, since=None if since is None else str(since), episode=str(d.get("episode") or ""),
                       pending=pending)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not an anomaly state: {exc}") from None


class AnomalyWatch:
    """Applies each verdict to the stored state and announces episode starts and ends; see the module."""

    def __init__(self, schedule: Schedule, *, store: Store, notifier: Notifier | None) -> None:
        self.schedule = schedule
        self.store = store
        self.notifier = notifier
        self.current = AnomalyState()
        self._stored: dict[str, Any] | None = None
        self._error: str | None = None

    async def update(self, verdict: Verdict, expected: Expected, now: dt.datetime) -> dict[str, Any]:
        """Apply `verdict` at `now`; store, claim and announce a transition; `data.business.anomaly`."""
        ok = await self._load()
        st = self.current
        stamp = iso_of(now)
        if st.since is None:
            st.since = stamp
        if verdict.state != st.state:
            if st.state == "ok":
                st.episode = stamp
                self._pend({"kind": "start", "episode": st.episode, "ts": now.timestamp(), "state": verdict.state,
                            "text": start_text(verdict, expected, self.schedule, now)})
            elif verdict.state == "ok":
                began = dt.datetime.fromisoformat(st.episode) if st.episode else now
                self._pend({"kind": "end", "episode": st.episode, "ts": now.timestamp(), "state": "ok",
                            "text": end_text(verdict, expected, self.schedule, now, now - began)})
            log.warning("business: bookings %s -> %s: %s", st.state, verdict.state, verdict.reason)
            st.state, st.since = verdict.state, stamp
        if ok and await self._save():
            await self._announce()
        return verdict.to_dict(st.since)

    def _pend(self, transition: dict[str, Any]) -> None:
        self.current.pending.append(transition)
        if len(self.current.pending) > MAX_PENDING:
            dropped = self.current.pending.pop(0)
            log.warning("business: dropped the unannounced %s of anomaly %s", dropped["kind"], dropped["episode"])

    async def _load(self) -> bool:
        try:
            stored = (await self.store.load(SCOPE)).get(NAME)
        except StoreUnavailable as exc:
            self._failed(exc)
            return False
        if stored is not None and stored != self._stored:
            try:
                self.current = AnomalyState.from_dict(stored)
                self._stored = stored
            except ValueError as exc:
                log.warning("business: ignoring the stored anomaly state (%s)", exc)
        if self._error is not None:
            log.info("business: state store reachable again")
            self._error = None
        return True

    async def _save(self) -> bool:
        d = self.current.to_dict()
        if d == self._stored:
            return True
        try:
            await self.store.save(SCOPE, {NAME: d})
        except StoreUnavailable as exc:
            self._failed(exc)
            return False
        self._stored = d
        return True

    async def _announce(self) -> None:
        """Claim each pending transition in order; queue a message for each claim won."""
        st = self.current
        while st.pending:
            p = st.pending[0]
            if self.notifier is not None:
                try:
                    won = await self.store.claim(f"{SCOPE}:{NAME}:{p['kind']}:{p['episode']}")
                except StoreUnavailable as exc:
                    self._failed(exc)
                    break
                if won:
                    text, ts = str(p.get("text") or ""), float(p.get("ts") or 0.0)
                    self.notifier.notify(Notification.anomaly(str(p.get("state")), text, ts=ts)
                                         if p["kind"] == "start" else Notification.anomaly_recovered(text, ts=ts))
            st.pending.pop(0)
        await self._save()

    def _failed(self, exc: StoreUnavailable) -> None:
        if self._error is None:
            log.warning("business: state store unavailable (%s); anomaly messages wait until it is back", exc)
        self._error = str(exc)


def _counts(expected: Expected, schedule: Schedule, now: dt.datetime) -> str:
    hour = "?" if expected.hour is None else f"{expected.hour:g}"
    return f"hour {schedule.hour_label(now)}: about {hour} bookings expected, {expected.observed} so far"


def start_text(v: Verdict, expected: Expected, schedule: Schedule, now: dt.datetime) -> str:
    """The message of an episode's start: the hour, expected and observed counts, minutes of silence."""
    silence = "none on record" if v.minutes_since_last_booking is None else f"{v.minutes_since_last_booking:.0f} min"
    mu = "?" if v.expected is None else f"{v.expected:.3g}"
    head = ("Bookings silent: no booking for " + silence + ", improbable at this hour" if v.state == "silent"
            else f"Bookings low: {v.observed} in the last 60 min where about {mu} were expected")
    return f"{head} ({_counts(expected, schedule, now)}; {v.observed} in the last 60 min; " \
           f"last booking: {silence}{' ago' if v.minutes_since_last_booking is not None else ''})"


def end_text(v: Verdict, expected: Expected, schedule: Schedule, now: dt.datetime, lasted: dt.timedelta) -> str:
    """The message of an episode's end."""
    silence = "none on record" if v.minutes_since_last_booking is None else \
        f"{v.minutes_since_last_booking:.0f} min ago"
    return (f"Bookings back to normal after {duration(lasted.total_seconds())} "
            f"({_counts(expected, schedule, now)}; {v.observed} in the last 60 min; last booking: {silence})")
