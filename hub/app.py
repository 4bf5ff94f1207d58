"""The app factory: `create_app(config)` wires config, sources, scheduler, feed, metrics and routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiohttp import web

from hub import views
from hub.audit import Audit
from hub.auth import Authenticator
from hub.broadcast import Feed
from hub.config import Config, secrets_of
from hub.metrics import HubMetrics
from hub.scheduler import Scheduler
from hub.sources.base import Source
from hub.state import CONFIG_KEY, METRICS_KEY, STATE_KEY, HubState

log = logging.getLogger(__name__)

ROLES = ("all", "edge")


def build_sources(st: HubState) -> tuple[list[Source], list[tuple[str, tuple[str, ...]]]]:
    """The enabled sources for `st.config`, and (name, sections) of the disabled ones."""
    cfg = st.config
    enabled: list[Source] = []
    disabled: list[tuple[str, tuple[str, ...]]] = []
    if cfg.sources.process.enabled:
        from hub.sources.process import ProcessSource

        enabled.append(ProcessSource(active_connections=lambda: len(st.feed.clients)))
    else:
        disabled.append(("process", ("application",)))
    if cfg.sources.prometheus.enabled:
        from hub.sources.prometheus import PrometheusSource

        enabled.append(PrometheusSource(cfg.sources.prometheus, secrets=st.secrets))
    else:
        disabled.append(("prometheus", ("system", "alerts")))
    if cfg.sources.business.enabled:
        from hub.sources.business import BusinessSource

        st.business = BusinessSource(cfg.sources.business, secrets=st.secrets, metrics=st.metrics,
                                     reconcile_interval=getattr(cfg.sources.business, "reconcile_interval", 300.0))
        enabled.append(st.business)
    else:
        disabled.append(("business", ("business",)))
    return enabled, disabled


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Start sources and the tick loop; on cleanup stop the loop, then close sources."""
    st = app[STATE_KEY]
    st.metrics.set_info()
    for source in st.sources:
        await source.start()
    tasks: list[asyncio.Task[Any]] = []
    if st.cluster is not None:
        tasks.append(asyncio.create_task(st.cluster.run(), name="hub-cluster"))
    elif st.scheduler is not None:
        tasks.append(asyncio.create_task(st.scheduler.run(ready=lambda: _mark_ready(st)), name="hub-ticks"))
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for source in st.sources:
        try:
            await source.close()
        except Exception:
            log.exception("closing source %s failed", source.name)
    st.audit.close()


def _mark_ready(st: HubState) -> None:
    st.ready = True


async def _on_shutdown(app: web.Application) -> None:
    # Close every client with 1001 (going away) before aiohttp waits for handlers to end.
    await app[STATE_KEY].feed.close_all(code=1001, message=b"server shutdown")


def _add_page_routes(app: web.Application) -> None:
    # The page's own files by name (no directory listing, no traversal), vendored files under /vendor.
    if not views.WEB_DIR.is_dir():
        return
    for path in sorted(views.WEB_DIR.iterdir()):
        if path.is_file() and path.name != "index.html" and not path.name.startswith("."):
            app.router.add_get(f"/{path.name}", views.static_file(path))
    if (views.WEB_DIR / "vendor").is_dir():
        app.router.add_static("/vendor/", views.WEB_DIR / "vendor", show_index=False, follow_symlinks=False)


def create_app(config: Config, *, role: str = "all", extra_sources: Sequence[Source] = ()) -> web.Application:
    """Build the hub application for `config`; `role` "edge" never collects (cluster mode).

    `extra_sources` are collected beside the configured ones (embedding, tests).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    metrics = HubMetrics()
    metrics.max_connections.set(config.server.max_connections)
    feed = Feed(history_size=config.broadcast.history_size,
                max_client_buffer_bytes=config.broadcast.max_client_buffer_bytes, metrics=metrics)
    st = HubState(config=config, metrics=metrics, feed=feed, auth=Authenticator(config.auth.tokens),
                  audit=Audit(path=config.audit.path), role=role, secrets=secrets_of(config))
    sources, disabled = build_sources(st)
    sources += list(extra_sources)
    feed.source_sections = {s.name: s.sections for s in sources} | dict(disabled)
    if role == "edge":
        sources = []
    st.sources = sources
    st.scheduler = Scheduler(sources=sources, disabled=disabled, interval=config.broadcast.interval,
                             metrics=metrics, sink=feed.deliver, secrets=st.secrets)
    if config.cluster.redis_url:
        from hub.cluster import Cluster

        st.cluster = Cluster(st)
    elif role == "edge":
        raise ValueError("role 'edge' needs [cluster] redis_url: an edge replica never collects")

    app = web.Application(client_max_size=config.server.max_message_bytes)
    app.on_response_prepare.append(views.security_headers)
    app[CONFIG_KEY] = config
    app[STATE_KEY] = st
    app[METRICS_KEY] = metrics
    app.router.add_get("/", views.index)
    app.router.add_get("/ws", views.ws_handler)
    app.router.add_get("/health", views.health)
    app.router.add_get("/ready", views.ready)
    app.router.add_get("/metrics", views.metrics)
    app.router.add_get("/api/metrics/snapshot", views.snapshot)
    app.router.add_get("/api/metrics/history", views.history)
    app.router.add_get("/api/metrics/business", views.business)
    _add_page_routes(app)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_on_shutdown)
    return app
