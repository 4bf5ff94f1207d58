"""The one secrets module: find the secret strings of a config, redact URLs, scrub text of every secret form."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus, unquote

if TYPE_CHECKING:  # hub.config imports this module; only the type is needed here
    from hub.config import Config

# scheme://netloc rest — split by hand because urlsplit raises on inputs such as "http://[::1",
# and rejects the multi-host netlocs of MongoDB URIs; redaction must work on anything.
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<netloc>[^/?#]*)(?P<rest>.*)$", re.DOTALL)
REDACTED = "***"


def _userinfo(url: str) -> tuple[str, str | None] | None:
    """(user, password-or-None) as written in `url`, or None when it carries no user info."""
    m = _URL.match(url)
    if not m or "@" not in m["netloc"]:
        return None
    userinfo = m["netloc"].rpartition("@")[0]
    user, colon, password = userinfo.partition(":")
    return user, (password if colon else None)


def redact_url(url: str) -> str:
    """`url` with any password replaced by '***' (user names are kept; they help debugging)."""
    m = _URL.match(url)
    info = _userinfo(url)
    if m is None or info is None or info[1] is None:
        return url
    host = m["netloc"].rpartition("@")[2]
    return f"{m['scheme']}{info[0]}:{REDACTED}@{host}{m['rest']}"


def redact_webhook(url: str) -> str:
    """A webhook URL with its path (the secret part) and query hidden: scheme and host only."""
    m = _URL.match(url)
    if m is None:
        return "<redacted>" if url else ""
    host = m["netloc"].rpartition("@")[2]
    return f"{m['scheme']}{host}/<redacted>"


def passwords_of(uri: str) -> list[str]:
    """The password in a URI as written and percent-decoded (both must be scrubbed)."""
    info = _userinfo(uri)
    if info is None or not info[1]:
        return []
    raw = info[1]
    return [p for p in dict.fromkeys((raw, unquote(raw))) if p]


def credential_forms(user: str, password: str) -> list[str]:
    """Every form a user/password pair is echoed in: raw, percent-encoded and as an HTTP Basic credential."""
    if not password:
        return []
    forms = [password, quote(password, safe=""), quote_plus(password)]
    for u, p in {(user, password), (unquote(user), unquote(password))}:
        forms.append(base64.b64encode(f"{u}:{p}".encode()).decode("ascii"))
    return [f for f in dict.fromkeys(forms) if f]


def url_secrets(url: str) -> list[str]:
    """The secret strings a URL's user info yields: password (raw, decoded, encoded) and base64 `user:pw`."""
    info = _userinfo(url)
    if info is None or not info[1]:
        return []
    out = list(passwords_of(url))
    out += credential_forms(info[0], info[1])
    out += credential_forms(unquote(info[0]), unquote(info[1]))
    return [s for s in dict.fromkeys(out) if s]


def webhook_secrets(url: str) -> list[str]:
    """A webhook URL, its path and its last path segment (the token part): each is secret alone."""
    if not url:
        return []
    out = [url]
    m = _URL.match(url)
    if m and m["rest"].strip("/"):
        path = m["rest"].split("?", 1)[0].split("#", 1)[0]
        out += [path, path.strip("/")]
        last = path.rstrip("/").rpartition("/")[2]
        if len(last) >= 8:  # short segments ("services") are not secret and would shred messages
            out.append(last)
    return [s for s in dict.fromkeys(out) if s]


def secrets_of(cfg: Config) -> list[str]:
    """Every secret string in `cfg`, in every form it may be echoed in, for scrubbing error messages."""
    out: list[str] = []
    p = cfg.sources.prometheus
    out += [p.bearer_token, quote(p.bearer_token, safe="")]
    out += credential_forms(p.basic_auth_user, p.basic_auth_password)
    urls = [p.url, cfg.sources.business.mongodb_uri, cfg.cluster.redis_url, *cfg.sources.health.checks.values()]
    for url in urls:
        out += url_secrets(url)
    out += webhook_secrets(cfg.notify.slack_webhook_url)
    out += [t.hash for t in cfg.auth.tokens if not t.hash.startswith("sha256:")]
    # Longest first, so a secret that contains another is replaced whole.
    return sorted({s for s in out if s}, key=lambda s: (-len(s), s))


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with every secret replaced by '***', also in its URL-encoded and (for URLs) Basic-auth forms."""
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        forms.update((secret, quote(secret, safe=""), quote_plus(secret)))
        forms.update(url_secrets(secret))
    for form in sorted((f for f in forms if f), key=lambda s: (-len(s), s)):
        if form in text:
            text = text.replace(form, REDACTED)
    return text


def clean(text: str, secrets: list[str]) -> str:
    """A dependency's text as it may be logged or sent: secrets scrubbed, then one capped line."""
    from hub.vocab import safe_text

    return safe_text(scrub(text, secrets))


class RedactFilter(logging.Filter):
    """Rewrites log records that contain any of `secrets` (httpx logs full request URLs at INFO)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if any(s in msg for s in self.secrets):
            record.msg, record.args = scrub(msg, self.secrets), ()
        return True
