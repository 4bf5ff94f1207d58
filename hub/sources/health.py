"""Health source: the guide's `checkApplicationHealth`, every tick, concurrently, within the budget.

Each check GETs a URL (healthy on a 2xx within the timeout); an optional `database` check awaits a
ping callable. A check counts as down only after `failures_before_down` failures in a row and is up
again after `successes_before_up` successes in a row (1: at its first); each of those two transitions,
and each reminder while it stays down (`notify.repeat_interval`), calls the notifier exactly once,
cluster-wide and across restarts: the states and counts live in a `hub.state` store (`health_state`).

A check that answers 2xx but slower than its `slow_after`, or over TLS with a certificate expiring
within `cert_warn_days` (`health_tls`), is *degraded*: still up, counted with the same thresholds and
announced once per change ("degraded", and "no longer degraded"). Every collection also feeds the
uptime and p95 record (`health_history`) shown per check over 24 h, 7 d and 30 d, unless Prometheus
scrapes the hub (`health_prom`): then its figures are shown where it has them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from hub.config import HealthSourceConfig
from hub.config.schema import HealthCheckConfig
from hub.secrets import Secrets
from hub.sources.base import Source, SourceResult
from hub.sources.health_history import HealthHistory
from hub.sources.health_mutes import MuteBook, MuteGate
from hub.sources.health_prom import PromUptime
from hub.sources.health_silences import AlertSilences
from hub.sources.health_state import CheckStates
from hub.sources.health_tls import cert_days, expiry_reason, peer_not_after
from hub.sources.http_errors import transport_reason
from hub.state import MemoryStore, Store
from hub.vocab import utc_iso

if TYPE_CHECKING:
    from hub.metrics import HubMetrics
    from hub.notify import Notifier

logger = logging.getLogger(__name__)

DATABASE = "database"
#: A health endpoint answers with a few bytes; reading stops here so a huge body costs nothing.
MAX_BODY = 64 * 1024
#: Longer than the default tick (10 s): each tick reuses the previous tick's connections.
KEEPALIVE_EXPIRY = 30.0


@dataclass(slots=True)
class _Outcome:
    """One attempt: ok, the HTTP status (None without a response), seconds taken, readable error (for an ok
    attempt: why it is degraded, or None), and the served certificate's notAfter (https)."""

    ok: bool
    status: int | None
    elapsed: float
    error: str | None
    not_after: float | None = None
    #: the handshake failed certificate verification: the certificate last read is not the one served
    cert_failed: bool = False


class HealthSource(Source):
    """Fills `data.health` = {"healthy", "details", "checks"} from HTTP checks and an optional database ping.

    Before its first result a check counts as up: "down" must mean N failures were seen, so a hub
    that just started never reports (or notifies) an outage it has not observed. `since` is the
    time of the last up/down change, or of the first result while there was none. With a persistent
    `store`, "just started" means the first collection this store ever saw: a restarted collector
    continues the stored states (an outage is not announced again; a recovery while nothing ran is
    announced once the good checks `successes_before_up` asks for were seen).
    """

    name = "health"
    sections = ("health",)

    def __init__(self, cfg: HealthSourceConfig, *, secrets: Secrets,
                 database_ping: Callable[[], Awaitable[None]] | None = None,
                 metrics: HubMetrics | None = None, notifier: Notifier | None = None,
                 store: Store | None = None, alert_silences: AlertSilences | None = None,
                 prom_uptime: PromUptime | None = None) -> None:
        # `cfg` was validated by hub/config, the one place that does; it is used as given.
        self.timeout = cfg.timeout
        self._checks = {n: c.url if isinstance(c, HealthCheckConfig) else c for n, c in cfg.checks.items()}
        self._slow_after = {n: c.slow_after if isinstance(c, HealthCheckConfig) and c.slow_after is not None
                            else cfg.slow_after for n, c in cfg.checks.items()}
        self._cert_warn_days = cfg.cert_warn_days
        #: notAfter of each https check's certificate, as last read from its connection
        self._not_after: dict[str, float] = {}
        self._failures_before_down = cfg.failures_before_down
        self._successes_before_up = cfg.successes_before_up
        self._ca_file = cfg.ca_file
        self._ping = database_ping
        self._metrics = metrics
        self._notifier = notifier
        self._secrets = secrets
        names = [*self._checks, *([DATABASE] if database_ping is not None else [])]
        self._states = CheckStates(names, store=store if store is not None else MemoryStore(), notifier=notifier)
        self.history = HealthHistory(names, store=self._states.store)
        #: with sources.prometheus.self_job: the uptime figures Prometheus computes, shown where it has them
        self._prom_uptime = prom_uptime
        #: mutes of the configured checks (the HTTP API's side), and what each collection does with them
        self.mutes = MuteBook(store=self._states.store, checks=self._checks, max_mute_s=cfg.max_mute_s)
        # A check whose alert Alertmanager silences is held like a muted one (hub.sources.health_silences).
        self._mute_gate = MuteGate(self.mutes, silenced=alert_silences.silenced if alert_silences else None)
        self._client: httpx.AsyncClient | None = None
        self._filter = secrets.log_filter()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Create the one pooled client (TLS verified, optional CA file, no redirects, no proxies)."""
        if self._client is not None:
            return
        verify: ssl.SSLContext | bool = True
        if self._ca_file:
            try:
                verify = ssl.create_default_context(cafile=self._ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"sources.health.ca_file: cannot load {self._ca_file!r}: {exc}") from None
        n = max(1, len(self._checks))
        self._client = httpx.AsyncClient(
            verify=verify,
            headers={"User-Agent": "hub-health-check"},
            timeout=httpx.Timeout(self.timeout),  # per phase; collect() bounds each whole check
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n, keepalive_expiry=KEEPALIVE_EXPIRY),
            follow_redirects=False,  # a redirect usually means a login page: report it, do not follow
            trust_env=False,  # HTTP(S)_PROXY from the environment would probe the proxy, not the service
        )
        if len(self._secrets):
            logging.getLogger("httpx").addFilter(self._filter)  # httpx logs URLs, passwords included

    async def close(self) -> None:
        await self.history.flush(time.time(), force=True)  # nothing when nothing was recorded
        if self._prom_uptime is not None:
            await self._prom_uptime.close()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
            logging.getLogger("httpx").removeFilter(self._filter)

    # ------------------------------------------------------------------ collect

    async def collect(self, budget: float) -> SourceResult:
        """Run every check concurrently, each bounded by min(timeout, budget), while the stored states
        are read; update the states, store the changed ones, then claim and announce transitions."""
        if self._client is None:
            await self.start()
        if self._prom_uptime is not None:
            self._prom_uptime.poke(time.time())  # in the background: a tick shows the figures read last
        limit = max(0.001, min(self.timeout, budget))
        names = list(self._states.states)
        stored, mutes_read, _, *outcomes = await asyncio.gather(
            self._states.load(), self._mute_gate.load(), self.history.resume(time.time()),
            *(self._run(n, limit) for n in names))
        if stored is not None:
            self._states.adopt(stored)
        now = time.time()
        for name, outcome in zip(names, outcomes, strict=True):
            self._update(name, self._grade(name, outcome, now), now)
            st = self._states.states[name]
            self.history.record(name, st.up, outcome.elapsed if _answered(outcome) else None, now)
        # Claims only once the states naming the transitions are stored: a collector taking over
        # after a crash at any point finds each transition pending, or claimed.
        # A muted check's transitions are taken out (held) before the others are announced.
        if await self._states.save() and mutes_read and await self._mute_gate.hold(self._states):
            await self._mute_gate.release(self._states)  # a mute's end first: its down before any reminder
            await self._states.announce()
        self._states.settle()
        await self.history.flush(now)
        return SourceResult(data={"health": self._snapshot(now)})

    async def _run(self, name: str, limit: float) -> _Outcome:
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(limit):
                if name == DATABASE and self._ping is not None:
                    await self._ping()
                    return _Outcome(True, None, time.monotonic() - t0, None)
                return await self._get(self._checks[name], t0)
        except (TimeoutError, httpx.TimeoutException):  # ours, or httpx's per-phase one: same story
            return _Outcome(False, None, time.monotonic() - t0, f"timed out after {limit:g} s")
        except httpx.HTTPError as exc:
            return _Outcome(False, None, time.monotonic() - t0, self._clean(transport_reason(exc)),
                            cert_failed=_cert_failed(exc))
        except Exception as exc:  # the database ping's driver errors, or a bug: say which, keep ticking
            what = "database ping failed" if name == DATABASE else "check failed"
            return _Outcome(False, None, time.monotonic() - t0,
                            self._clean(f"{what}: {type(exc).__name__}: {exc or 'no details'}"))

    async def _get(self, url: str, t0: float) -> _Outcome:
        assert self._client is not None
        async with self._client.stream("GET", url) as resp:
            read = 0
            async for chunk in resp.aiter_raw():  # drained so the connection returns to the pool
                read += len(chunk)
                if read > MAX_BODY:
                    break
        elapsed = time.monotonic() - t0
        not_after = peer_not_after(resp.extensions)
        if resp.is_success:
            return _Outcome(True, resp.status_code, elapsed, None, not_after)
        reason = f"HTTP {resp.status_code}"
        if resp.is_redirect:
            reason += " (redirect not followed)"
        return _Outcome(False, resp.status_code, elapsed, reason, not_after)

    def _grade(self, name: str, o: _Outcome, now: float) -> _Outcome:
        """Note the certificate read, and give an ok attempt that is slow or whose certificate expires soon
        its reason (it is then degraded)."""
        if o.not_after is not None:
            self._not_after[name] = o.not_after
        elif o.cert_failed:
            self._not_after.pop(name, None)
        if not o.ok:
            return o
        reasons = []
        slow_after = self._slow_after.get(name, 0.0)
        if slow_after and o.elapsed > slow_after:
            reasons.append(f"slow: answered in {o.elapsed:.2f} s (slow_after {slow_after:g} s)")
        days = cert_days(self._not_after.get(name), now)
        if days is not None and (why := expiry_reason(days, self._cert_warn_days)):
            reasons.append(why)
        if reasons:
            o.error = "; ".join(reasons)
        return o

    def _update(self, name: str, o: _Outcome, now: float) -> None:
        st = self._states.states[name]
        st.last = o
        if st.since is None:
            st.since, st.since_ts = utc_iso(now), now
        if o.ok:
            st.failures, st.failing_since = 0, 0.0
            st.grade(name, o.error, now, after=self._failures_before_down, back_after=self._successes_before_up)
            if not st.up:
                st.successes += 1
            if not st.up and st.successes >= self._successes_before_up:
                down_for = now - st.since_ts
                st.up, st.since, st.since_ts, st.successes = True, utc_iso(now), now, 0
                logger.warning("health check %s recovered after %.0f s", name, down_for)
                st.pend(name, {"kind": "recovered", "outage": st.outage, "ts": now, "down_for": down_for})
        else:
            st.successes = 0
            if st.failures == 0:
                st.failing_since = now
            st.failures += 1
            if st.up and st.failures >= self._failures_before_down:
                st.up, st.since, st.since_ts = False, utc_iso(now), now
                st.outage = utc_iso(st.failing_since or now)
                st.reminders, st.reminded_at = 0, now
                logger.warning("health check %s is down: %s", name, o.error)
                st.pend(name, {"kind": "down", "outage": st.outage, "ts": now, "reason": o.error or "failed"})
            if not st.up:
                st.reason = o.error or "failed"
            st.fail()
        self._states.remind(name, now)
        if self._metrics is not None:
            self._metrics.health_check_latency.labels(name).set(o.elapsed)

    def _snapshot(self, now: float) -> dict[str, Any]:
        checks: dict[str, Any] = {}
        for name, st in self._states.states.items():
            o = st.last
            checks[name] = {
                "up": st.up,
                "state": st.state,
                "status": o.status if o else None,
                # only a received response has a latency; a timeout or refusal is not one
                "latency_ms": round(o.elapsed * 1000, 1) if o and _answered(o) else None,
                # the degraded reason stays shown until the check is up again
                "error": (o.error if o else None) or (st.degraded_reason if st.degraded else None),
                "since": st.since,
                "failures": st.failures,
                "cert_days": cert_days(self._not_after.get(name), now),
                **((self._prom_uptime and self._prom_uptime.shown(name)) or self.history.shown(name, now)),
            }
        details = {name: c["up"] for name, c in checks.items()}
        return {"healthy": all(details.values()), "details": details, "checks": checks,
                "mutes": self._mute_gate.shown()}

    def _clean(self, text: str) -> str:
        return self._secrets.clean(text)


def _answered(o: _Outcome) -> bool:
    return o.status is not None or o.ok


def _cert_failed(exc: BaseException) -> bool:
    """Whether a transport error is a failed certificate verification (httpx wraps the ssl error)."""
    cur: BaseException | None = exc
    for _ in range(10):
        if cur is None:
            return False
        if isinstance(cur, ssl.SSLCertVerificationError):
            return True
        cur = cur.__cause__ or cur.__context__
    return False
