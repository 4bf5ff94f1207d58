"""Sign-in through an OpenID Connect identity provider (`[auth.oidc]`, docs/security.md).

- `client`: discovery, JWKS keyed by (issuer, kid), the code exchange and ID token checks (Authlib, joserfc);
- `sessions`: server-side sessions and pending logins, in memory or in Redis (cluster mode);
- `gate`: the session cookie as a credential, rights from groups, closing sockets of ended sessions;
- `views`: /auth/login, /auth/callback, /auth/logout.
"""

from __future__ import annotations

from hub.admission import Network
from hub.config import Config
from hub.oidc.client import OidcClient
from hub.oidc.gate import Oidc
from hub.oidc.sessions import RedisSessionStore, SessionStore
from hub.secrets import Secrets


def build(config: Config, *, secrets: Secrets, trusted_proxies: tuple[Network, ...]) -> Oidc | None:
    """The `Oidc` of `config` (the session store in Redis in cluster mode), or None when [auth.oidc] has no issuer."""
    cfg = config.auth.oidc
    if not cfg.issuer:
        return None
    store = (RedisSessionStore(config.cluster.redis_url, key_prefix=config.cluster.key_prefix, secrets=secrets)
             if config.cluster.redis_url else SessionStore())
    return Oidc(cfg, client=OidcClient(cfg, secrets=secrets), store=store, trusted_proxies=trusted_proxies)
