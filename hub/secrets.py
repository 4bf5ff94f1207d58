"""The one secrets module: the registry of a hub's secret strings (`Secrets`), the forms a secret may be
echoed in, URL redaction, and scrubbing.

It sits below everything and takes plain values: `hub.config.secrets_of` walks a config through its
schema (every key declared secret there) and builds the one `Secrets` that every component gets.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable, Iterator
from urllib.parse import quote, quote_plus, unquote

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
        out.append(last)
    # The URL whole; its path and token segment only when long enough to be a secret: short pieces
    # ("/x", "services") are not, and would shred every message they occur in.
    return [s for s in dict.fromkeys(out) if s and (s == url or len(s) >= 8)]


class Secrets:
    """Every secret string a hub knows, in every form a dependency may echo it in (as written, URL-encoded,
    and for URLs with user info the password's forms and the Basic-auth base64 of `user:password`).

    Built once from the config (`hub.config.secrets_of`) and handed to every component; none builds
    its own list. Iterating yields the forms, longest first.
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for value in values:
            if not value:
                continue
            forms.update((value, quote(value, safe=""), quote_plus(value)))
            forms.update(url_secrets(value))
        # Longest first, so a secret that contains another is replaced whole.
        self.forms: tuple[str, ...] = tuple(sorted((f for f in forms if f), key=lambda f: (-len(f), f)))

    def __iter__(self) -> Iterator[str]:
        return iter(self.forms)

    def __len__(self) -> int:
        return len(self.forms)

    def __contains__(self, text: object) -> bool:
        return text in self.forms

    def with_values(self, values: Iterable[str]) -> Secrets:
        """A registry that also knows `values` (tests, and text a component learns at run time)."""
        return Secrets([*self.forms, *values])

    def scrub(self, text: str) -> str:
        """`text` with every secret form replaced by '***'."""
        for form in self.forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return text

    def clean(self, text: str, *, limit: int | None = None) -> str:
        """A dependency's text as it may be logged or sent: secrets scrubbed, then one capped line."""
        from hub.vocab import MAX_REASON_CHARS, safe_text

        return safe_text(self.scrub(text), limit=MAX_REASON_CHARS if limit is None else limit)

    @staticmethod
    def redact_url(url: str) -> str:
        """`url` with any password replaced by '***' (user names are kept; they help debugging)."""
        return redact_url(url)

    def log_filter(self) -> RedactFilter:
        """A logging filter that scrubs these secrets from records (libraries that log URLs)."""
        return RedactFilter(self.forms)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by '***', also in its URL-encoded and (for URLs) Basic-auth forms."""
    return (secrets if isinstance(secrets, Secrets) else Secrets(secrets)).scrub(text)


def clean(text: str, secrets: Iterable[str]) -> str:
    """A dependency's text as it may be logged or sent: secrets scrubbed, then one capped line."""
    return (secrets if isinstance(secrets, Secrets) else Secrets(secrets)).clean(text)


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
