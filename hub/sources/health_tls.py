"""Certificate expiry of https checks, read from the very connection the check's request used.

The health client verifies every https check (system store or `sources.health.ca_file`), so the
certificate of a connection that answered is one the hub trusts; its expiry is read from the TLS
object of the response's network stream (httpcore's `network_stream` extension, `ssl_object`): no
second handshake, the same verification and timeout as the check. A pooled connection reused by a
later tick is the same certificate, and a server that rotates its certificate is seen at the next
new connection. A handshake that fails verification (expired, untrusted, wrong host) is no answer:
the check fails with the reason, and the certificate it was shown is not one the hub read.
"""

from __future__ import annotations

import ssl
from typing import Any

DAY = 86400.0


def peer_not_after(extensions: dict[str, Any]) -> float | None:
    """The served certificate's notAfter (epoch seconds) from a response's extensions; None for http."""
    stream = extensions.get("network_stream")
    get = getattr(stream, "get_extra_info", None)
    if get is None:
        return None
    ssl_object = get("ssl_object")
    if not isinstance(ssl_object, (ssl.SSLObject, ssl.SSLSocket)):
        return None
    cert = ssl_object.getpeercert()  # a dict only for a verified peer: always here
    not_after = cert.get("notAfter") if cert else None
    if not isinstance(not_after, str):
        return None
    try:
        return float(ssl.cert_time_to_seconds(not_after))
    except ValueError:
        return None


def cert_days(not_after: float | None, now: float) -> float | None:
    """Days left until `not_after` (negative once past), to the hundredth; None without a certificate."""
    return None if not_after is None else round((not_after - now) / DAY, 2)


def expiry_reason(days: float, warn_days: float) -> str | None:
    """Why a certificate with `days` left degrades its check, or None when it is not due yet."""
    if warn_days <= 0 or days > warn_days:
        return None
    return f"TLS certificate expires in {days:.1f} days (warning at {warn_days:g})"
