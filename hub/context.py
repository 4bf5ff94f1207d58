"""The typed application keys, and the `Hub`: every component one app owns, each with one owner."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from hub.admission import Admission, Network, client_address
from hub.audit import Audit
from hub.auth import Authenticator, AuthFailures
from hub.broadcast import Broadcaster
from hub.config import Config
from hub.feed import Feed
from hub.metrics import HubMetrics
from hub.peers import Peers
from hub.publish import Publisher
from hub.secrets import Secrets
from hub.sources.alertmanager import AlertmanagerAPI
from hub.sources.base import WindowedMetrics


@dataclass(eq=False, slots=True)
class Hub:
    """What the handlers reach through `request.app[HUB]`; built once by `create_app`."""

    config: Config
    role: str
    metrics: HubMetrics
    feed: Feed
    broadcaster: Broadcaster
    publisher: Publisher
    auth: Authenticator
    auth_failures: AuthFailures
    audit: Audit
    admission: Admission
    trusted_proxies: tuple[Network, ...]
    secrets: Secrets
    #: the business source, for /api/metrics/business (every role, edge replicas included)
    business: WindowedMetrics | None
    #: every WebSocket connection after its handshake (heartbeat sweep, closes)
    peers: Peers
    #: Alertmanager's API, for POST/DELETE /api/silences; None when [sources.alertmanager] is disabled
    alertmanager: AlertmanagerAPI | None = None

    def client_address(self, request: web.BaseRequest) -> str:
        """The client's address, through `server.trusted_proxies`."""
        return client_address(request, self.trusted_proxies)


CONFIG_KEY = web.AppKey("config", Config)
METRICS_KEY = web.AppKey("metrics", HubMetrics)
HUB = web.AppKey("hub", Hub)
