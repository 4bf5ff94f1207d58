"""Sign-in through an OpenID Connect identity provider (`[auth.oidc]`, docs/security.md).

- `client`: discovery, JWKS keyed by (issuer, kid), the code exchange and ID token checks (Authlib, joserfc);
- `sessions`: server-side sessions and pending logins, in memory or in Redis (cluster mode);
- `gate`: the session cookie as a credential, rights from groups, closing sockets of ended sessions;
- `views`: /auth/login, /auth/callback, /auth/logout.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hub.admission import Network
from hub.config import Config
from hub.secrets import Secrets


def build(config: Config, *, secrets: Secrets, trusted_proxies: tuple[Network, ...]) -> Any:
    """The `Oidc` of `config`, or None when [auth.oidc] has no issuer (imports Authlib only when used)."""
    cfg = config.auth.oidc
    if not cfg.issuer:
        return None
    from hub.oidc.client import OidcClient
    from hub.oidc.gate import Oidc
    from hub.oidc.sessions import RedisSessionStore, SessionStore

    store = (RedisSessionStore(config.cluster.redis_url, key_prefix=config.cluster.key_prefix, secrets=secrets)
             if config.cluster.redis_url else SessionStore())
    return Oidc(cfg, client=OidcClient(cfg, secrets=secrets), store=store, trusted_proxies=trusted_proxies)


def install(app: web.Application, oidc: Any, *, interval: float, evict: Any) -> None:
    """Route /auth/*, keep `oidc` under its AppKey, sweep ended sessions' sockets every `interval` s."""
    from hub.oidc.views import OIDC, add_routes
    from hub.tasks import cancel_and_wait, spawn

    app[OIDC] = oidc
    add_routes(app)

    async def lifecycle(app: web.Application) -> Any:
        task = spawn(oidc.run_sweeps(interval, evict), name="hub-oidc-sweep")
        yield
        await cancel_and_wait([task])
        await oidc.client.close()
        await oidc.store.close()

    app.cleanup_ctx.append(lifecycle)
