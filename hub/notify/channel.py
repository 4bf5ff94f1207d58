"""One notification channel: its own queue, sender task, HTTP client and retry policy.

A channel is a receiver's URL plus the payload it expects; everything else is here, once: the
queue that `notify` only appends to, the sender task that posts in order, the bounds of every
attempt (`hub.notify.http.post_json`), retrying 429/5xx/transport failures with exponential
backoff (never sooner than Retry-After asks) until `give_up_after` seconds have passed since the
first attempt, that bound held during an attempt too, and counting every outcome.

`hub_notifications_total{channel, result}` counts:
  sent     a message the receiver accepted (2xx)
  retried  a failed attempt that will be tried again (429, 5xx, timeout, connection error)
  failed   a message given up on: a non-retryable answer (e.g. 403, 404), `give_up_after` elapsed,
           or an internal error
  dropped  a message never attempted: the queue was full, or the hub shut down first
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from hub.notify.http import QUOTE, post_json
from hub.notify.message import Notification
from hub.secrets import Secrets
from hub.tasks import spawn
from hub.vocab import MAX_REASON_CHARS

if TYPE_CHECKING:
    from hub.metrics import HubMetrics

logger = logging.getLogger("hub.notify")

RESULTS = ("sent", "retried", "failed", "dropped")
#: Transitions are rare (one per check going down or up); a full queue means the receiver has been
#: unreachable for a long time, and newer messages are dropped (counted) rather than using memory.
MAX_QUEUE = 256
#: Seconds per attempt, connect to last byte: receivers acknowledge within a second or two, and a
#: slow answer is retried like a 5xx.
REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class _Outcome:
    result: str  # "sent" | "retry" | "fail"
    reason: str = ""
    retry_after: float | None = None


class Channel:
    """Delivers `Notification`s to one receiver from a background task; `notify` never blocks.

    A subclass names the channel (`name`, the metric's and audit's `channel`) and builds the
    payload (`payload`); it may override `judge` for a receiver with other status conventions.
    `url` and `secrets` never appear in audit lines, logs or metrics.
    """

    name: ClassVar[str] = ""

    def __init__(self, *, url: str, secrets: Secrets,
                 audit: Callable[..., None] | None = None, metrics: HubMetrics | None = None,
                 client: httpx.AsyncClient | None = None, retry_initial: float = 1.0,
                 retry_max: float = 60.0, give_up_after: float = 600.0,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        # `url` was validated by hub/config, and `secrets` (the registry) knows it in every form.
        self.url = url
        if not self.name:
            raise TypeError(f"{type(self).__name__} must name its channel")
        self._secrets = secrets
        self._audit_cb = audit
        self._metrics = metrics
        self._own_client = client is None
        self._client = client
        self.retry_initial, self.retry_max, self.give_up_after = retry_initial, retry_max, give_up_after
        self.request_timeout = request_timeout
        self._queue: asyncio.Queue[Notification] = asyncio.Queue(MAX_QUEUE)
        self._task: asyncio.Task[None] | None = None
        self._current: Notification | None = None
        self._filter = secrets.log_filter()
        if metrics is not None:
            for result in RESULTS:
                metrics.notifications.labels(self.name, result)  # zeros, so rate() works from the start

    # ------------------------------------------------------------------ what a channel defines

    def payload(self, n: Notification) -> Any:
        """The JSON body posted for `n`."""
        raise NotImplementedError

    def judge(self, status: int) -> str:
        """"sent" for 2xx, "retry" for 429 and 5xx, else "fail" (a revoked or wrong URL: retrying cannot help)."""
        if 200 <= status < 300:
            return "sent"
        return "retry" if status == 429 or status >= 500 else "fail"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the sender task (and the client, unless one was given)."""
        if self._client is None:
            # trust_env stays on: receivers are outside the cluster and egress often needs HTTPS_PROXY.
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.request_timeout), follow_redirects=False)
        logging.getLogger("httpx").addFilter(self._filter)
        if self._task is None:
            self._task = spawn(self._run(), name=f"hub-notify-{self.name}")

    async def close(self, *, drain: float = 3.0) -> None:
        """Give queued messages up to `drain` seconds, then stop; what is left is counted as dropped."""
        inflight = None
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain)
            inflight = self._current  # read before cancelling: the task's `finally` clears it
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        left = [inflight] if inflight is not None else []
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
        for n in left:
            self._drop(n, "hub shutting down")
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None
        logging.getLogger("httpx").removeFilter(self._filter)

    def notify(self, n: Notification) -> None:
        """Queue `n`; returns at once (a full queue drops it, counted and audited)."""
        try:
            self._queue.put_nowait(n)
        except asyncio.QueueFull:
            self._drop(n, f"queue full ({MAX_QUEUE} undelivered messages)")

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
            except Exception as exc:  # a bug here must not stop later messages, nor go uncounted
                logger.exception("notifier: unexpected error delivering a %s message to %s", n.kind, self.name)
                self._failed(n, f"internal error: {type(exc).__name__}", 0)
            finally:
                self._current = None
                self._queue.task_done()

    async def _deliver(self, n: Notification) -> None:
        """Post `n` until accepted, a non-retryable answer comes, or `give_up_after` elapses."""
        payload = self.payload(n)
        start = time.monotonic()
        delay = self.retry_initial
        attempt = 0
        while True:
            attempt += 1
            # The give-up bound holds inside an attempt too: a hanging receiver cannot hold the
            # queue past it.
            left = self.give_up_after - (time.monotonic() - start)
            out = await self._attempt(payload, max(0.0, min(self.request_timeout, left)))
            if out.result == "sent":
                self._count("sent")
                self._audit("notification_sent", n, attempts=attempt)
                logger.info("notifier: sent %s message for %s to %s", n.kind, n.check, self.name)
                return
            if out.result == "fail":
                self._failed(n, out.reason, attempt)
                return
            # Never sooner than the receiver asks, nor sooner than the backoff: a "Retry-After: 0"
            # answered forever must not turn into a busy loop.
            wait = max(out.retry_after, delay) if out.retry_after is not None else delay
            delay = min(delay * 2, self.retry_max)
            elapsed = time.monotonic() - start
            if wait >= self.give_up_after - elapsed:
                self._failed(n, f"{out.reason}; gave up after {attempt} attempts in {elapsed:.1f} s", attempt)
                return
            self._count("retried")
            self._audit("notification_retry", n, reason=out.reason, attempt=attempt, retry_in=round(wait, 3))
            logger.warning("notifier: %s delivery of %s/%s failed (%s); retry %d in %.1f s",
                           self.name, n.check, n.kind, out.reason, attempt, wait)
            await asyncio.sleep(wait)

    async def _attempt(self, payload: Any, limit: float) -> _Outcome:
        """One bounded POST, judged."""
        assert self._client is not None
        try:
            answer = await post_json(self._client, self.url, payload, timeout=limit)
        except (TimeoutError, httpx.TimeoutException):
            return _Outcome("retry", f"no answer within {limit:.3g} s")
        except httpx.HTTPError as exc:
            return _Outcome("retry", self._quote(f"{type(exc).__name__}: {exc or 'no details'}"))
        result = self.judge(answer.status)
        if result == "sent":
            return _Outcome("sent")
        reason = f"HTTP {answer.status}"
        if answer.body:
            reason += ": " + self._quote(answer.body, QUOTE)
        if answer.cut:
            reason += f" ({answer.cut})"
        return _Outcome(result, reason, answer.retry_after)

    # ------------------------------------------------------------------ bookkeeping

    def _failed(self, n: Notification, reason: str, attempts: int) -> None:
        self._count("failed")
        self._audit("notification_failed", n, reason=reason, attempts=attempts)
        logger.error("notifier: gave up on %s message for %s to %s: %s", n.kind, n.check, self.name, reason)

    def _drop(self, n: Notification, reason: str) -> None:
        self._count("dropped")
        self._audit("notification_dropped", n, reason=reason)
        logger.error("notifier: dropped %s message for %s to %s: %s", n.kind, n.check, self.name, reason)

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.notifications.labels(self.name, result).inc()

    def _audit(self, event: str, n: Notification, **fields: Any) -> None:
        if self._audit_cb is None:
            return
        try:
            self._audit_cb(event, channel=self.name, check=n.check, kind=n.kind, severity=n.severity,
                           text=n.text, **fields)
        except Exception:  # the audit log failing must not stop delivery
            logger.exception("notifier: audit callback failed")

    def _quote(self, text: str, limit: int = MAX_REASON_CHARS) -> str:
        """A receiver's or transport's text as one short printable line, secrets removed before cutting."""
        return self._secrets.clean(text, limit=limit)
