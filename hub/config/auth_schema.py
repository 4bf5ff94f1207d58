"""The `[auth]` tables of the config: tokens, and people signing in through the identity provider."""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass

from hub.config.spec import key, section
from hub.vocab import ACTIONS, TOPICS

DAY = 86400.0


@dataclass(frozen=True, kw_only=True)
class TokenConfig:
    name: str = key(nonempty=True, doc="token name, shown in the audit log")
    hash: str = key(check="token_hash", secret="value", doc='"sha256:<64 hex>" (from `hub token new`)')
    topics: tuple[str, ...] = key((), choices=TOPICS, doc="topics this token may read; empty = all")
    actions: tuple[str, ...] = key((), choices=ACTIONS,
                                   doc='what this token may do: "silence" (silence alerts, mute checks); '
                                       'empty = read only')


@dataclass(frozen=True, kw_only=True)
class OidcRoleConfig:
    """What the members of one identity-provider group may see and do (`[auth.oidc.roles.<group>]`)."""

    topics: tuple[str, ...] = key((), choices=TOPICS, doc="topics this group may read; empty = all")
    actions: tuple[str, ...] = key((), choices=ACTIONS,
                                   doc='what this group may do: "silence" (silence alerts, mute checks); '
                                       'empty = read only')


DEFAULT_OIDC_SCOPES: tuple[str, ...] = ("openid", "profile", "email")


@dataclass(frozen=True, kw_only=True)
class OidcConfig:
    issuer: str = key("", check="http_url_or_empty",
                      doc="OpenID Connect issuer URL (discovery at issuer + /.well-known/openid-configuration); "
                          "empty = no sign-in")
    client_id: str = key("", doc="the hub's client id at the identity provider")
    client_secret: str = key("", secret="value", doc="the hub's client secret (never logged); empty = a public "
                                                     "client (PKCE only)")
    scopes: tuple[str, ...] = key(DEFAULT_OIDC_SCOPES, min_items=1, doc='scopes asked for; must include "openid"')
    roles_claim: str = key("groups", nonempty=True, doc="ID token / userinfo claim listing the person's groups")
    redirect_url: str = key("", check="http_url_or_empty",
                            doc="the callback URL registered at the provider; empty = the request's origin + "
                                "/auth/callback")
    session_ttl: float = key(28800.0, gt=0, hi=30 * DAY, unit="seconds",
                             doc="longest a sign-in lasts, in seconds (never longer than the ID token allows)")
    roles: Mapping[str, OidcRoleConfig] = key(factory=lambda: types.MappingProxyType({}),
                                              doc="group -> {topics, actions}; a person in several mapped groups "
                                                  "gets the union; a person in none is refused")


@dataclass(frozen=True, kw_only=True)
class AuthConfig:
    tokens: tuple[TokenConfig, ...] = key((), doc="named tokens; when any is set, /ws and /api/* need one")
    protect_metrics: bool = key(False, doc="also require a credential on /metrics")
    oidc: OidcConfig = section(OidcConfig, "sign-in through an OpenID Connect identity provider; when set, "
                                           "/ws and /api/* need a credential")
