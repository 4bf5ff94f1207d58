"""Typed application keys and the per-app state object they point to."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hub.audit import Audit
from hub.auth import Authenticator
from hub.broadcast import Feed
from hub.config import Config
from hub.metrics import HubMetrics

if TYPE_CHECKING:
    from hub.scheduler import Scheduler
    from hub.sources.base import Source


@dataclass(eq=False)
class HubState:
    """Everything one hub app owns; created by `create_app`, reached through STATE_KEY."""

    config: Config
    metrics: HubMetrics
    feed: Feed
    auth: Authenticator
    audit: Audit
    role: str = "all"
    secrets: list[str] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    scheduler: Scheduler | None = None
    business: Any = None  # BusinessSource when enabled (for /api/metrics/business)
    cluster: Any = None  # hub.cluster.Cluster when [cluster] redis_url is set
    ready: bool = False
    #: connections counted from before the upgrade, so max_connections holds during handshakes
    pending: int = 0
    per_ip: collections.Counter[str] = field(default_factory=collections.Counter)


CONFIG_KEY = web.AppKey("config", Config)
STATE_KEY = web.AppKey("state", HubState)
METRICS_KEY = web.AppKey("metrics", HubMetrics)
