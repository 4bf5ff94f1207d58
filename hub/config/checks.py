"""Named value checks a key declares with `check=`: each returns why the value is wrong, or None."""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$)({_LABEL})(\.{_LABEL})*\.?$")
_PEM_MAX_BYTES = 16 << 20  # a CA bundle is kilobytes; a bigger file is a mistake, not a bundle
_PEM_MARK = b"-----BEGIN CERTIFICATE-----"


def host(value: str) -> str | None:
    """An IP address or a DNS host name (no scheme, port or brackets)."""
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    if _HOSTNAME.match(value):
        return None
    return "must be an IP address or a host name, such as 127.0.0.1, 0.0.0.0 or ::"


def _url(value: str, schemes: tuple[str, ...], what: str) -> str | None:
    """Parse `value` fully (host and port included), as the client library will at run time."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0-65535
        hostname = parts.hostname
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme.lower() not in schemes or not hostname:
        return f"must be {what}"
    return None


def http_url(value: str) -> str | None:
    """An http:// or https:// URL with a host."""
    return _url(value, ("http", "https"), "an http(s) URL such as http://prometheus:9090")


def https_url(value: str) -> str | None:
    """Empty (off) or an https:// URL with a host."""
    return None if not value else _url(value, ("https",), "an https:// URL (or empty)")


def http_url_or_empty(value: str) -> str | None:
    """Empty (off) or an http:// or https:// URL with a host."""
    return None if not value else http_url(value)


def origin(value: str) -> str | None:
    """A browser Origin: http(s)://host[:port], nothing else."""
    reason = _url(value, ("http", "https"), "an origin like https://ops.example.com")
    if reason:
        return reason
    parts = urlsplit(value)
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        return "must be an origin like https://ops.example.com (scheme, host and port only)"
    return None


def redis_url(value: str) -> str | None:
    """Empty (single process) or a redis://, rediss:// or unix:// URL."""
    if not value:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018
        hostname = parts.hostname
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme == "unix":
        return None if parts.path else "must name a socket path: unix:///run/redis.sock"
    if parts.scheme not in ("redis", "rediss") or not hostname:
        return "must be a redis://, rediss:// or unix:// URL"
    return None


def mongodb_uri(value: str) -> str | None:
    """A mongodb:// (one or more host[:port]) or mongodb+srv:// (one host, no port) URI."""
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in ("mongodb", "mongodb+srv"):
        return "must be a mongodb:// or mongodb+srv:// URI"
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0].rpartition("@")[2]
    hosts = netloc.split(",")
    if scheme == "mongodb+srv" and len(hosts) != 1:
        return "mongodb+srv:// takes exactly one host name"
    for h in hosts:
        try:  # urlsplit validates one host[:port], IPv6 brackets included
            parts = urlsplit(f"//{h}")
            port = parts.port
            if not parts.hostname:
                return "must name a host in every host[:port] of the URI"
        except ValueError as exc:
            return f"has an invalid host {h!r} ({exc})"
        if scheme == "mongodb+srv" and port is not None:
            return "mongodb+srv:// takes a host name without a port"
    return None


def cidr(value: str) -> str | None:
    """An IPv4 or IPv6 network (a bare address means a single host)."""
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return "must be an IP network such as 10.0.0.0/8 or fd00::/8"
    return None


def pem_file(value: str) -> str | None:
    """Empty, or a readable file of PEM certificates that OpenSSL accepts."""
    if not value:
        return None
    p = Path(value)
    try:
        if not p.is_file():
            return "file does not exist"
        if p.stat().st_size > _PEM_MAX_BYTES:
            return "is too large to be a PEM certificate bundle"
        data = p.read_bytes()
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if _PEM_MARK not in data:
        return "is not a PEM certificate bundle (no BEGIN CERTIFICATE block)"
    try:
        ssl.create_default_context().load_verify_locations(cadata=data.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        return f"is not a valid PEM certificate bundle ({type(exc).__name__})"
    return None


def token_hash(value: str) -> str | None:
    """A "sha256:<64 hex>" hash, or (warned about by check-config) a plaintext token."""
    if not value:
        return "must not be empty"
    if value.startswith("sha256:"):
        hexpart = value[7:]
        if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart.lower()):
            return "'sha256:' must be followed by 64 hex digits"
    return None


_HHMM = re.compile(r"^([01][0-9]|2[0-4]):([0-5][0-9])$")


def parse_hours(value: str) -> tuple[int, int]:
    """ "HH:MM-HH:MM" as (start, end) minutes of the day; ValueError saying why when it is not one."""
    parts = value.split("-")
    if len(parts) != 2:
        raise ValueError('must be "HH:MM-HH:MM", such as "07:00-19:00"')
    out = []
    for part in parts:
        m = _HHMM.match(part.strip())
        if not m or (m.group(1) == "24" and m.group(2) != "00"):
            raise ValueError(f'must be "HH:MM-HH:MM" with times from 00:00 to 24:00, such as "07:00-19:00" '
                             f"({part.strip()[:16]!r} is not a time)")
        out.append(int(m.group(1)) * 60 + int(m.group(2)))
    if out[0] == out[1]:
        raise ValueError('must not start and end at the same time (all day is "00:00-24:00")')
    return out[0], out[1]


def hours_range(value: str) -> str | None:
    """Daily hours "HH:MM-HH:MM" (24:00 allowed as an end; a start after the end wraps midnight)."""
    try:
        parse_hours(value)
    except ValueError as exc:
        return str(exc)
    return None


def iana_timezone(value: str) -> str | None:
    """An IANA time zone name the system's zone database knows, such as UTC or Europe/Paris."""
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "must be an IANA time zone name such as UTC or Europe/Paris"
    return None


CHECKS: dict[str, Callable[[str], str | None]] = {
    "host": host, "http_url": http_url, "http_url_or_empty": http_url_or_empty, "https_url": https_url,
    "origin": origin, "redis_url": redis_url,
    "mongodb_uri": mongodb_uri, "cidr": cidr, "pem_file": pem_file, "token_hash": token_hash,
    "hours_range": hours_range, "iana_timezone": iana_timezone,
}
