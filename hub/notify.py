"""Slack notifications for health-check transitions: the guide's `sendSlackAlert`, delivered reliably.

`Notifier.notify` only enqueues, so a tick never waits for Slack. One background task sends the
queue in order, retrying 429/5xx/transport failures with exponential backoff (honouring
Retry-After) until `give_up_after` seconds have passed since the first attempt.

`hub_notifications_total{channel="slack", result}` counts:
  sent     a message Slack accepted (2xx)
  retried  a failed attempt that will be tried again (429, 5xx, timeout, connection error)
  failed   a message given up on: a non-retryable answer (e.g. 403, 404) or `give_up_after` elapsed
  dropped  a message never attempted: the queue was full, or the hub shut down first
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from hub.secrets import RedactFilter, clean

if TYPE_CHECKING:
    from hub.metrics import HubMetrics

logger = logging.getLogger(__name__)

CHANNEL = "slack"
RESULTS = ("sent", "retried", "failed", "dropped")
#: the guide's `sendSlackAlert` colours
COLORS = {"critical": "#FF0000", "warning": "#FFA500", "info": "#0000FF"}
USERNAME = "Healthcare Monitoring"
ICON_EMOJI = ":hospital:"
FOOTER = "Healthcare DevOps Pipeline"
#: Transitions are rare (one per check going down or up); a full queue means Slack has been
#: unreachable for a long time, and newer messages are dropped (counted) rather than using memory.
MAX_QUEUE = 256
#: Longest error text kept in audit lines and logs.
#: Slack acknowledges within a second or two; a slow answer is retried like a 5xx.
REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to post: `text` is already free of secrets; `ts` is when the transition happened."""

    kind: str  # "down" | "recovered"
    check: str
    severity: str  # critical | warning | info
    text: str
    ts: float

    @classmethod
    def down(cls, check: str, reason: str, *, ts: float | None = None) -> Notification:
        """A check went down: severity critical, text `Health check failed: <name>: <reason>`."""
        return cls("down", check, "critical", f"Health check failed: {check}: {reason}",
                   time.time() if ts is None else ts)

    @classmethod
    def recovered(cls, check: str, *, down_for: float, ts: float | None = None) -> Notification:
        """A check is up again after `down_for` seconds: one info message."""
        return cls("recovered", check, "info",
                   f"Health check recovered: {check} (down for {_duration(down_for)})",
                   time.time() if ts is None else ts)


def slack_payload(n: Notification) -> dict[str, Any]:
    """The guide's `sendSlackAlert` payload for `n`."""
    return {
        "username": USERNAME,
        "icon_emoji": ICON_EMOJI,
        "attachments": [{
            "color": COLORS.get(n.severity, COLORS["warning"]),
            "title": f"{n.severity.upper()} Alert",
            "text": _slack_escape(n.text),
            "footer": FOOTER,
            "ts": int(n.ts),
        }],
    }


class _Retry(Exception):
    def __init__(self, reason: str, delay: float | None) -> None:
        super().__init__(reason)
        self.reason, self.delay = reason, delay


class _Fail(Exception):
    pass


class Notifier:
    """Posts `Notification`s to a Slack incoming webhook from a background task; never blocks the caller.

    `audit(event, **fields)` receives notification_sent, notification_retry (each failed attempt),
    notification_failed and notification_dropped. The webhook URL is a secret: it appears in none
    of them, nor in logs or metrics.
    """

    def __init__(self, *, slack_webhook_url: str, audit: Callable[..., None] | None = None,
                 metrics: HubMetrics | None = None, client: httpx.AsyncClient | None = None,
                 retry_initial: float = 1.0, retry_max: float = 60.0, give_up_after: float = 600.0) -> None:
        try:
            parts = urlsplit(slack_webhook_url)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            # Never echo the value: it is the secret.
            raise ValueError("notify.slack_webhook_url: must be an http(s) URL (value not shown: it is a secret)")
        self._url = slack_webhook_url
        # The URL's path is the token; scrub both, longest first, wherever text might echo them.
        self._secrets = [slack_webhook_url, *([parts.path] if len(parts.path) > 8 else [])]
        if parts.password:
            self._secrets.append(parts.password)
        self._audit_cb = audit
        self._metrics = metrics
        self._own_client = client is None
        self._client = client
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._give_up_after = give_up_after
        self._queue: asyncio.Queue[Notification] = asyncio.Queue(MAX_QUEUE)
        self._task: asyncio.Task[None] | None = None
        self._current: Notification | None = None
        self._filter = RedactFilter(self._secrets)
        if metrics is not None:
            for result in RESULTS:
                metrics.notifications.labels(CHANNEL, result)  # zeros, so rate() works from the start

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the sender task (and the client, unless one was given)."""
        if self._client is None:
            # trust_env stays on: Slack is outside the cluster and egress often needs HTTPS_PROXY.
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(REQUEST_TIMEOUT), follow_redirects=False)
        logging.getLogger("httpx").addFilter(self._filter)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="hub-notifier")

    async def close(self, *, drain: float = 3.0) -> None:
        """Give queued messages up to `drain` seconds, then stop; what is left is counted as dropped."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain)
            inflight = self._current  # read before cancelling: the task's `finally` clears it
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        else:
            inflight = None
        left = [inflight] if inflight is not None else []
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
        for n in left:
            self._drop(n, "hub shutting down")
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None
        logging.getLogger("httpx").removeFilter(self._filter)

    # ------------------------------------------------------------------ API

    def notify(self, event: Notification) -> None:
        """Queue `event` for delivery; returns at once (a full queue drops it, counted and audited)."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._drop(event, f"queue full ({MAX_QUEUE} undelivered messages)")

    @property
    def pending(self) -> int:
        """Messages queued or being delivered."""
        return self._queue.qsize() + (self._current is not None)

    # ------------------------------------------------------------------ sender

    async def _run(self) -> None:
        while True:
            n = await self._queue.get()
            self._current = n
            try:
                await self._deliver(n)
            except Exception:  # a bug here must not stop later notifications
                logger.exception("notifier: unexpected error delivering a %s message", n.kind)
            finally:
                self._current = None
                self._queue.task_done()

    async def _deliver(self, n: Notification) -> None:
        """Post `n` until Slack accepts it, a non-retryable answer comes, or `give_up_after` elapses."""
        payload = slack_payload(n)
        start = time.monotonic()
        delay = self._retry_initial
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._post(payload)
            except _Fail as exc:
                self._failed(n, str(exc), attempt)
                return
            except _Retry as exc:
                # Never sooner than Slack asks, nor sooner than the backoff: a "Retry-After: 0"
                # answered forever must not turn into a busy loop.
                wait = max(exc.delay, delay) if exc.delay is not None else delay
                delay = min(delay * 2, self._retry_max)
                left = self._give_up_after - (time.monotonic() - start)
                if wait > left:
                    self._failed(n, f"{exc.reason}; gave up after {attempt} attempts in "
                                    f"{time.monotonic() - start:.0f} s", attempt)
                    return
                self._count("retried")
                self._audit("notification_retry", n, reason=exc.reason, attempt=attempt, retry_in=round(wait, 3))
                logger.warning("notifier: Slack delivery of %s/%s failed (%s); retry %d in %.1f s",
                               n.check, n.kind, exc.reason, attempt, wait)
                await asyncio.sleep(wait)
                continue
            self._count("sent")
            self._audit("notification_sent", n, attempts=attempt)
            logger.info("notifier: sent %s message for %s", n.kind, n.check)
            return

    async def _post(self, payload: dict[str, Any]) -> None:
        assert self._client is not None
        try:
            resp = await self._client.post(self._url, json=payload)
        except httpx.TimeoutException:
            raise _Retry(f"no answer within {REQUEST_TIMEOUT:g} s", None) from None
        except httpx.HTTPError as exc:
            raise _Retry(self._clean(f"{type(exc).__name__}: {exc or 'no details'}"), None) from None
        if resp.is_success:
            return
        body = " ".join(resp.text[:100].split())
        reason = self._clean(f"HTTP {resp.status_code}" + (f": {body}" if body else ""))
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Retry(reason, _retry_after(resp.headers.get("Retry-After")))
        raise _Fail(reason)  # 4xx: a revoked or wrong webhook; retrying cannot help

    # ------------------------------------------------------------------ bookkeeping

    def _failed(self, n: Notification, reason: str, attempts: int) -> None:
        self._count("failed")
        self._audit("notification_failed", n, reason=reason, attempts=attempts)
        logger.error("notifier: gave up on %s message for %s: %s", n.kind, n.check, reason)

    def _drop(self, n: Notification, reason: str) -> None:
        self._count("dropped")
        self._audit("notification_dropped", n, reason=reason)
        logger.error("notifier: dropped %s message for %s: %s", n.kind, n.check, reason)

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.notifications.labels(CHANNEL, result).inc()

    def _audit(self, event: str, n: Notification, **fields: Any) -> None:
        if self._audit_cb is None:
            return
        try:
            self._audit_cb(event, channel=CHANNEL, check=n.check, kind=n.kind, severity=n.severity,
                           text=n.text, **fields)
        except Exception:  # the audit log failing must not stop delivery
            logger.exception("notifier: audit callback failed")

    def _clean(self, text: str) -> str:
        return clean(text, self._secrets)


def _slack_escape(text: str) -> str:
    """Slack reads <...> as links and mentions; a reason quoting one must show as typed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None


def _duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s} s" if s else f"{m} min"
    h, m = divmod(m, 60)
    return f"{h} h {m} min" if m else f"{h} h"
