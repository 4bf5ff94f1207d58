"""The relying party's half of OpenID Connect: discovery, JWKS, the code exchange and ID token checks.

Protocol pieces come from Authlib (PKCE challenge, random values) and joserfc (JWK sets, JWS/JWT
decoding, claim rules); HTTP to the identity provider goes through aiohttp. Nothing here parses or
verifies a JWT by hand.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]
from joserfc import errors as jose_errors
from joserfc import jws, jwt
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from hub.config.auth_schema import OidcConfig
from hub.secrets import Secrets

log = logging.getLogger(__name__)

#: discovery is asked again after this many seconds (keys rotate through jwks_uri, not through it)
DISCOVERY_TTL = 300.0
#: an unknown `kid` refreshes the JWKS at most this often, so forged kids cannot make the hub hammer the IdP
JWKS_MIN_REFRESH = 10.0
#: signature algorithms an ID token may use: asymmetric only ("none" and HMAC never)
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
MAX_BODY = 1 << 20
TIMEOUT = 5.0
#: seconds of clock skew tolerated on exp/iat
LEEWAY = 30


class IdpUnavailable(Exception):
    """The identity provider could not be reached or answered nonsense; the message is safe to show."""


class TokenRefused(Exception):
    """A sign-in that must be refused (401): a wrong state, a code or an ID token that does not verify."""


@dataclass(frozen=True, slots=True)
class Discovery:
    """The endpoints of the provider's discovery document that the hub uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None
    algorithms: tuple[str, ...]


class OidcClient:
    """One identity provider (`[auth.oidc]`): cached discovery, JWKS keyed by (issuer, kid), code flow."""

    def __init__(self, cfg: OidcConfig, *, secrets: Secrets, timeout: float = TIMEOUT,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self._secrets = secrets
        self._timeout = timeout
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._discovery: tuple[float, Discovery] | None = None
        self._keys: dict[tuple[str, str], Any] = {}  # (issuer, kid) -> joserfc key
        self._jwks_at = -JWKS_MIN_REFRESH
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        return self._session

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with self._http().get(url, headers={"Accept": "application/json"}) as resp:
                body = await resp.content.read(MAX_BODY + 1)
                if resp.status != 200:
                    raise IdpUnavailable(f"{what}: HTTP {resp.status} from the identity provider")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise IdpUnavailable(f"{what}: the identity provider is unreachable "
                                 f"({self._secrets.scrub(type(exc).__name__ + ': ' + str(exc))[:200]})") from None
        return _object(body, what)

    async def discovery(self, *, max_age: float = DISCOVERY_TTL) -> Discovery:
        """The provider's metadata from issuer + /.well-known/openid-configuration, at most `max_age` s old
        (a login asks afresh: a provider that went down is said so before the browser is sent there)."""
        now = time.monotonic()
        if self._discovery is not None and now - self._discovery[0] < max_age:
            return self._discovery[1]
        url = self.cfg.issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = await self._get_json(url, "discovery")
        if doc.get("issuer") != self.cfg.issuer:  # OpenID Connect Discovery 1.0, 4.3
            raise IdpUnavailable(f"discovery: the document names issuer {str(doc.get('issuer'))[:200]!r}, "
                                 f"not auth.oidc.issuer {self.cfg.issuer!r}")
        missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri")
                   if not isinstance(doc.get(k), str) or not doc[k]]
        if missing:
            raise IdpUnavailable(f"discovery: the document lacks {', '.join(missing)}")
        offered = doc.get("id_token_signing_alg_values_supported")
        algs = tuple(a for a in offered if a in ALGORITHMS) if isinstance(offered, list) else ("RS256",)
        end = doc.get("end_session_endpoint")
        disc = Discovery(issuer=doc["issuer"], authorization_endpoint=doc["authorization_endpoint"],
                         token_endpoint=doc["token_endpoint"], jwks_uri=doc["jwks_uri"],
                         end_session_endpoint=end if isinstance(end, str) and end else None,
                         algorithms=algs or ("RS256",))
        self._discovery = (now, disc)
        return disc

    async def refresh_keys(self) -> int:
        """Fetch the JWKS again; return how many signing keys it holds."""
        disc = await self.discovery()
        doc = await self._get_json(disc.jwks_uri, "JWKS")
        try:
            keyset = KeySet.import_key_set(doc)  # type: ignore[arg-type]
        except (jose_errors.JoseError, ValueError, TypeError, KeyError) as exc:
            raise IdpUnavailable(f"JWKS: not a usable key set ({type(exc).__name__})") from None
        self._keys = {(disc.issuer, k.kid): k for k in keyset.keys if k.kid and k.key_type != "oct"}
        self._jwks_at = time.monotonic()
        return len(self._keys)

    async def _key(self, issuer: str, kid: str) -> Any:
        """The signing key `kid` of `issuer`, refreshing the JWKS once when it is unknown."""
        found = self._keys.get((issuer, kid))
        if found is not None:
            return found
        async with self._lock:
            if (issuer, kid) not in self._keys and time.monotonic() - self._jwks_at >= JWKS_MIN_REFRESH:
                await self.refresh_keys()
        found = self._keys.get((issuer, kid))
        if found is None:
            raise TokenRefused(f"ID token signed with unknown key kid={kid[:64]!r}")
        return found

    def authorize_url(self, disc: Discovery, *, redirect_uri: str, state: str, nonce: str, verifier: str) -> str:
        """Where to send the browser: the authorization endpoint with code + PKCE (S256), state and nonce."""
        query = urlencode({"response_type": "code", "client_id": self.cfg.client_id, "redirect_uri": redirect_uri,
                           "scope": " ".join(self.cfg.scopes), "state": state, "nonce": nonce,
                           "code_challenge": create_s256_code_challenge(verifier),
                           "code_challenge_method": "S256"})
        sep = "&" if "?" in disc.authorization_endpoint else "?"
        return disc.authorization_endpoint + sep + query

    async def exchange(self, code: str, *, redirect_uri: str, verifier: str) -> dict[str, Any]:
        """The token endpoint's answer for `code`; TokenRefused when it refuses the code."""
        disc = await self.discovery()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": verifier, "client_id": self.cfg.client_id}
        auth = aiohttp.BasicAuth(self.cfg.client_id, self.cfg.client_secret) if self.cfg.client_secret else None
        try:
            async with self._http().post(disc.token_endpoint, data=form, auth=auth,
                                         headers={"Accept": "application/json"}) as resp:
                body = await resp.content.read(MAX_BODY + 1)
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise IdpUnavailable(f"token endpoint: the identity provider is unreachable ({type(exc).__name__})") \
                from None
        doc = _object(body, "token endpoint")
        if status in (400, 401):  # RFC 6749 5.2: invalid_grant for a used, expired or foreign code
            raise TokenRefused(f"the identity provider refused the code: {str(doc.get('error'))[:80]}")
        if status != 200:
            raise IdpUnavailable(f"token endpoint: HTTP {status} from the identity provider")
        if not isinstance(doc.get("id_token"), str):
            raise TokenRefused("the token endpoint's answer holds no id_token")
        return doc

    async def verify(self, id_token: str, *, nonce: str) -> dict[str, Any]:
        """The claims of `id_token` once its signature (JWKS), alg, iss, aud, azp, exp, iat and nonce hold."""
        disc = await self.discovery()
        try:
            header = jws.extract_compact(id_token.encode()).headers()
        except (jose_errors.JoseError, ValueError) as exc:
            raise TokenRefused(f"ID token is not a signed JWT ({type(exc).__name__})") from None
        alg = str(header.get("alg", ""))
        if alg not in disc.algorithms:
            raise TokenRefused(f"ID token algorithm {alg[:20]!r} is not allowed "
                               f"(allowed: {', '.join(disc.algorithms)})")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRefused("ID token header has no kid")
        key = await self._key(disc.issuer, kid)
        try:
            token = jwt.decode(id_token, key, algorithms=[alg])
        except jose_errors.BadSignatureError:
            raise TokenRefused("ID token signature does not verify") from None
        except (jose_errors.JoseError, ValueError) as exc:
            raise TokenRefused(f"ID token cannot be decoded ({type(exc).__name__})") from None
        rules = JWTClaimsRegistry(
            now=lambda: int(self._clock()), leeway=LEEWAY,
            iss={"essential": True, "value": disc.issuer}, aud={"essential": True, "value": self.cfg.client_id},
            sub={"essential": True}, exp={"essential": True}, iat={"essential": True},
            nonce={"essential": True, "value": nonce})
        claims = token.claims
        try:
            rules.validate(claims)
        except jose_errors.ExpiredTokenError:
            raise TokenRefused("ID token has expired") from None
        except jose_errors.MissingClaimError as exc:
            raise TokenRefused(f"ID token lacks claim(s): {exc.description}") from None
        except jose_errors.InvalidClaimError as exc:
            raise TokenRefused(f"ID token claim {exc.claim!r} is wrong (audience, issuer or nonce)") from None
        except jose_errors.JoseError as exc:
            raise TokenRefused(f"ID token refused: {exc.description or type(exc).__name__}") from None
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.cfg.client_id:
            raise TokenRefused("ID token has several audiences and azp is not this client")  # OIDC Core 3.1.3.7
        return claims

    def end_session_url(self, disc: Discovery, *, id_token_hint: str, post_logout: str) -> str | None:
        """The provider's logout URL for this session, when it offers end_session_endpoint."""
        if disc.end_session_endpoint is None:
            return None
        query = {"client_id": self.cfg.client_id, "post_logout_redirect_uri": post_logout}
        if id_token_hint:
            query["id_token_hint"] = id_token_hint
        sep = "&" if "?" in disc.end_session_endpoint else "?"
        return disc.end_session_endpoint + sep + urlencode(query)


def _object(body: bytes, what: str) -> dict[str, Any]:
    if len(body) > MAX_BODY:
        raise IdpUnavailable(f"{what}: answer larger than {MAX_BODY} bytes")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise IdpUnavailable(f"{what}: the answer is not JSON") from None
    if not isinstance(doc, dict):
        raise IdpUnavailable(f"{what}: the answer is not a JSON object")
    return doc
