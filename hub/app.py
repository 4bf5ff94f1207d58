"""The app factory: `create_app(config)` builds every component once and wires the routes.

Reading order for a new maintainer: sources (hub.sources) -> Scheduler (hub.scheduler: budgets,
isolation, encoding) -> Publisher (hub.publish / hub.cluster: seq and epoch) -> Broadcaster
(hub.broadcast: feed, frames, fan-out) -> clients (hub.ws: the protocol; hub.views: HTTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from hub import mute_views, silences, views, ws
from hub import oidc as hub_oidc
from hub.admission import Admission, parse_networks
from hub.audit import Audit
from hub.auth import Authenticator, AuthFailures
from hub.backfill import Backfill
from hub.bodies import BODY_SLOTS, BodySlots
from hub.broadcast import Broadcaster
from hub.config import Config, secrets_of
from hub.context import CONFIG_KEY, HUB, METRICS_KEY, Hub
from hub.feed import Feed
from hub.metrics import HubMetrics
from hub.notify import Notifier, notifier_of
from hub.oidc.gate import OIDC, evictor
from hub.page import Page, check_page
from hub.peers import Peers
from hub.publish import LocalPublisher, Publisher
from hub.scheduler import Scheduler
from hub.secrets import Secrets
from hub.sources.alertmanager import AlertmanagerSource
from hub.sources.base import Source, WindowedMetrics
from hub.sources.health_silences import AlertSilences
from hub.state import Store, open_store
from hub.tasks import cancel_and_wait, spawn

if TYPE_CHECKING:
    from hub.cluster_backfill import ClusterBackfill

log = logging.getLogger(__name__)

ROLES = ("all", "edge")
#: how often ended auth-failure windows are summarised into the audit log
AUDIT_SWEEP = 15.0


def build_sources(config: Config, *, secrets: Secrets, metrics: HubMetrics, broadcaster: Broadcaster,
                  notifier: Notifier | None = None, store: Store | None = None,
                  extra: Sequence[Source] = ()) -> tuple[list[Source], list[tuple[str, tuple[str, ...]]]]:
    """The sources to collect and (name, sections) of the disabled ones.

    An `extra` source (embedding, tests, the demo) replaces a configured or disabled one of the
    same name; otherwise it is collected beside them.
    """
    src = config.sources
    enabled: list[Source] = []
    disabled: list[tuple[str, tuple[str, ...]]] = []
    if src.process.enabled:
        from hub.sources.process import ProcessSource

        enabled.append(ProcessSource(active_connections=lambda: len(broadcaster.clients)))
    else:
        disabled.append(("process", ("application",)))
    # With Alertmanager, data.alerts is its (with silenced/inhibited state); Prometheus's is not read.
    am = src.alertmanager.enabled
    if src.prometheus.enabled:
        from hub.sources.prometheus import PrometheusSource

        prom = dataclasses.replace(src.prometheus, alerts=False) if am else src.prometheus
        enabled.append(PrometheusSource(prom, secrets=secrets))
    else:
        disabled.append(("prometheus", ("system",) if am else ("system", "alerts")))
    # A health check whose alert Alertmanager silences keeps the direct channels quiet too.
    silenced = AlertSilences() if am and src.health.enabled else None
    if am:  # when off, neither data.silences nor sources.alertmanager appear: snapshots stay as before
        enabled.append(AlertmanagerSource(src.alertmanager, secrets=secrets, health_silences=silenced))
    if src.business.enabled:
        from hub.sources.business import BusinessSource

        business = BusinessSource(src.business, secrets=secrets, metrics=metrics, notifier=notifier, store=store)
        enabled.append(business)
    else:
        business = None
        disabled.append(("business", ("business",)))
    if src.health.enabled:
        from hub.sources.health import HealthSource
        from hub.sources.health_prom import PromUptime

        # Where Prometheus scrapes the hub, the uptime figures come from it (the hub's record otherwise).
        prom_uptime = PromUptime(src.prometheus, secrets=secrets) \
            if src.prometheus.enabled and src.prometheus.self_job else None
        enabled.append(HealthSource(src.health, secrets=secrets, database_ping=business.ping if business else None,
                                    metrics=metrics, notifier=notifier, store=store, alert_silences=silenced,
                                    prom_uptime=prom_uptime))
    else:
        disabled.append(("health", ("health",)))
    replaced = {s.name for s in extra}
    enabled = [s for s in enabled if s.name not in replaced] + list(extra)
    disabled = [(n, secs) for n, secs in disabled if n not in replaced]
    return enabled, disabled


async def _start_sources(sources: Sequence[Source]) -> None:
    """Start every source; if one fails, close the ones already started and re-raise."""
    started: list[Source] = []
    try:
        for source in sources:
            await source.start()
            started.append(source)
    except BaseException:
        await _close_sources(started)
        raise


async def _close_sources(sources: Sequence[Source]) -> None:
    for source in reversed(sources):
        try:
            await source.close()
        except Exception:
            log.exception("closing source %s failed", source.name)


async def _sweep_auth_failures(hub: Hub) -> None:
    while True:
        await asyncio.sleep(AUDIT_SWEEP)
        for ip, failures, refused in hub.auth_failures.sweep():
            hub.audit.event("auth_failure_repeated", remote=ip, failures=failures, refused=refused,
                            window_seconds=60)
        hub.audit.sweep()  # rejected_repeated lines of ended windows


def _backfill(config: Config, role: str, broadcaster: Broadcaster, secrets: Secrets,
              publisher: Publisher, business: object = None) -> Backfill | ClusterBackfill | None:
    """The start-up backfill from Prometheus, or None (disabled). In cluster mode every replica serves
    the backfill the collector of a fresh stream shares through Redis (hub.cluster_backfill)."""
    prom = config.sources.prometheus
    if not prom.enabled or not prom.backfill:
        return None
    if config.cluster.redis_url:
        from hub.cluster_backfill import ClusterBackfill

        return ClusterBackfill(config, publisher=publisher, broadcaster=broadcaster, secrets=secrets,
                               collects=role == "all", business=business)
    b = config.broadcast
    return Backfill(prom, interval=b.interval, history_size=b.history_size, broadcaster=broadcaster,
                    secrets=secrets, business=business)


def _business_source(config: Config, sources: Sequence[Source]) -> object:
    """The configured BusinessSource (its hour buckets feed the backfill's bookings series), or None."""
    if not config.sources.business.enabled:
        return None
    from hub.sources.business import BusinessSource

    return next((s for s in sources if isinstance(s, BusinessSource)), None)


def _lifecycle(sources: Sequence[Source], notifier: Notifier | None, store: Store,  # type: ignore[no-untyped-def]
               backfill: Backfill | ClusterBackfill | None = None):
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        """Start the audit writer, notifier, sources and the publisher; on cleanup stop them in reverse."""
        hub = app[HUB]
        hub.metrics.set_info()
        hub.audit.start()  # its thread exists only while the app runs: a failed start leaves none
        try:
            if notifier is not None:
                await notifier.start()
            await _start_sources(sources)
        except BaseException:
            if notifier is not None:
                await notifier.close()  # safe on a notifier whose start failed
            await store.close()
            hub.audit.close()
            raise
        tasks = [asyncio.create_task(hub.publisher.run(), name="hub-publisher"),
                 asyncio.create_task(_sweep_auth_failures(hub), name="hub-auth-sweep")]
        # After the publisher: the first tick is never behind the backfill, which runs beside it.
        filling = [spawn(backfill.run(), name="hub-backfill")] if backfill is not None else []
        yield
        await cancel_and_wait(filling)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await _close_sources(sources)
        if notifier is not None:
            await notifier.close()  # delivers what is queued, briefly
        await store.close()
        hub.audit.close()

    return lifecycle


async def _on_shutdown(app: web.Application) -> None:
    # Close every client with 1001 (going away) before aiohttp waits for handlers to end; then the
    # closes the peers started themselves, and abort what is left (aiohttp no longer owns them).
    await app[HUB].broadcaster.close_all(code=1001, message=b"server shutdown")
    await app[HUB].peers.close()


def _index(page: Page):  # type: ignore[no-untyped-def]
    async def index(request: web.Request) -> web.StreamResponse:
        """`/`: a WebSocket upgrade is served exactly like `/ws` (the seed's server took any path);
        anything else gets the dashboard page, or, when sign-in is the only credential and the
        browser has no live session, a redirect to /auth/login."""
        if ws.is_upgrade(request):
            return await ws.ws_handler(request)
        oidc = request.app.get(OIDC)
        if oidc is not None and not request.app[HUB].auth.enabled and not await oidc.signed_in(request):
            return web.Response(status=302, headers={"Location": "auth/login", "Cache-Control": "no-store"})
        return await page.index(request)

    return index


def create_app(config: Config, *, role: str = "all", extra_sources: Sequence[Source] = ()) -> web.Application:
    """Build the hub application for `config`; `role` "edge" never collects (cluster mode)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if role == "edge" and not config.cluster.redis_url:
        raise ValueError("role 'edge' needs [cluster] redis_url: an edge replica never collects")
    b = config.broadcast
    secrets = secrets_of(config)
    # Health states and the notification ledger: Redis when clustered, else [state] dir, else memory.
    store = open_store(config, secrets=secrets)
    metrics = HubMetrics()
    metrics.max_connections.set(config.server.max_connections)
    # Sources first (they declare their sections), then the feed that filters by them.
    feed = Feed(history_size=b.history_size, history_max_bytes=b.history_max_bytes,
                source_sections={})
    broadcaster = Broadcaster(feed=feed, max_client_buffer_bytes=b.max_client_buffer_bytes, metrics=metrics)
    audit = Audit(path=config.audit.path, metrics=metrics)
    # Only a collecting replica's health source sees transitions, so only it notifies.
    notifier = notifier_of(config, secrets=secrets, audit=audit.event, metrics=metrics)
    sources, disabled = build_sources(config, secrets=secrets, metrics=metrics, broadcaster=broadcaster,
                                      notifier=notifier, store=store, extra=extra_sources)
    feed.source_sections = {s.name: s.sections for s in sources} | dict(disabled)
    business = next((s for s in sources if s.name == "business" and isinstance(s, WindowedMetrics)), None)
    alertmanager = next((s.api for s in sources if isinstance(s, AlertmanagerSource)), None)
    collected = list(sources) if role == "all" else []
    scheduler = Scheduler(sources=collected, disabled=disabled, interval=b.interval, metrics=metrics,
                          secrets=secrets) if role == "all" else None
    publisher: Publisher
    if config.cluster.redis_url:
        from hub.cluster import RedisPublisher

        publisher = RedisPublisher(cfg=config.cluster, interval=b.interval, history_size=b.history_size,
                                   role=role, scheduler=scheduler, broadcaster=broadcaster, metrics=metrics,
                                   secrets=secrets)
    else:
        assert scheduler is not None
        publisher = LocalPublisher(scheduler=scheduler, broadcaster=broadcaster, metrics=metrics,
                                   interval=b.interval)
    s = config.server
    hub = Hub(config=config, role=role, metrics=metrics, feed=feed, broadcaster=broadcaster, publisher=publisher,
              auth=Authenticator(config.auth.tokens),
              auth_failures=AuthFailures(s.auth_failures_per_minute),
              audit=audit,
              admission=Admission(max_connections=s.max_connections, max_per_ip=s.max_connections_per_ip),
              trusted_proxies=parse_networks(s.trusted_proxies), secrets=secrets,
              business=business, peers=Peers(heartbeat=b.heartbeat), alertmanager=alertmanager)

    app = web.Application(client_max_size=s.max_message_bytes)
    app.on_response_prepare.append(views.security_headers)
    app.on_response_prepare.append(views.retry_after)
    app[CONFIG_KEY] = config
    app[METRICS_KEY] = metrics
    app[HUB] = hub
    app[BODY_SLOTS] = BodySlots()
    page = Page.locate()
    check_page(page)
    app.router.add_get("/", _index(page))
    app.router.add_get("/ws", ws.ws_handler)
    app.router.add_get("/health", views.health)
    app.router.add_get("/ready", views.ready)
    app.router.add_get("/metrics", views.metrics)
    app.router.add_get("/api/metrics/snapshot", views.snapshot)
    app.router.add_get("/api/metrics/history", views.history)
    app.router.add_get("/api/metrics/business", views.business)
    app.router.add_get("/api/me", views.me)
    app.router.add_post("/api/silences", silences.create)
    app.router.add_delete("/api/silences/{id}", silences.expire)
    from hub.sources.health import HealthSource

    health = next((s for s in sources if isinstance(s, HealthSource)), None)
    if health is not None:  # every role: a mute made on any replica goes to the shared store
        app[mute_views.MUTES] = health.mutes
    app.router.add_post("/api/mutes", mute_views.create)
    app.router.add_delete("/api/mutes/{id}", mute_views.end)
    page.add_routes(app)
    oidc = hub_oidc.build(config, secrets=secrets, trusted_proxies=hub.trusted_proxies)
    if oidc is not None:
        from hub.oidc.views import install

        install(app, oidc, interval=b.interval, evict=evictor(broadcaster))
    app[ws.RECEIVER] = ws.Receiver(hub, oidc)
    app.cleanup_ctx.append(hub.peers.heartbeat_ctx)
    # Edge replicas start every source too (the business one serves /api/metrics/business) but
    # never collect; only the scheduler of a collecting replica ticks them.
    app.cleanup_ctx.append(_lifecycle(sources, notifier, store,
                                          _backfill(config, role, broadcaster, secrets, publisher,
                                                    _business_source(config, sources))))
    app.on_shutdown.append(_on_shutdown)
    return app
