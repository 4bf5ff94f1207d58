"""`hub doctor`'s sign-in checks: discovery, the JWKS and the redirect URL of [auth.oidc]."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from urllib.parse import urlsplit

from hub.config.auth_schema import OidcConfig
from hub.oidc.client import IdpUnavailable, OidcClient
from hub.secrets import Secrets


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def check(cfg: OidcConfig, *, secrets: Secrets, say: Callable[[str], None]) -> int:
    """Print what discovery, the JWKS and the redirect URL look like; 0 when sign-in can work, else 1."""
    say(f"sign-in (auth.oidc): issuer {cfg.issuer}, client {cfg.client_id}")
    status = 0
    if urlsplit(cfg.issuer).scheme != "https" and not _loopback(cfg.issuer):
        say("  warning: the issuer is not https: ID tokens and the client secret would cross the network in clear")
    client = OidcClient(cfg, secrets=secrets)
    try:
        disc = await client.discovery()
        say(f"  discovery: ok (authorization {disc.authorization_endpoint}, token {disc.token_endpoint})")
        say(f"  logout at the provider: {disc.end_session_endpoint or 'not offered (only the hub session ends)'}")
        keys = await client.refresh_keys()
        if keys:
            say(f"  JWKS: {keys} signing key(s) at {disc.jwks_uri}; ID token algorithms {', '.join(disc.algorithms)}")
        else:
            say(f"  JWKS: NO usable signing key at {disc.jwks_uri}: no ID token can be verified")
            status = 1
    except IdpUnavailable as exc:
        say(f"  discovery: NO - {exc}")
        status = 1
    finally:
        await client.close()
    if cfg.redirect_url:
        say(f"  redirect URL: {cfg.redirect_url} (register exactly this at the provider)")
        if urlsplit(cfg.redirect_url).scheme != "https" and not _loopback(cfg.redirect_url):
            say("  warning: the redirect URL is not https: the session cookie gets no Secure flag there")
        if not urlsplit(cfg.redirect_url).path.endswith("/auth/callback"):
            say("  warning: the redirect URL does not end in /auth/callback, where the hub receives the answer")
            status = 1
    else:
        say("  redirect URL: each request's origin + /auth/callback (set auth.oidc.redirect_url behind a proxy "
            "that changes the host; register the URL at the provider)")
    say(f"  groups from claim {cfg.roles_claim!r}; mapped: {', '.join(sorted(cfg.roles))}")
    return status
