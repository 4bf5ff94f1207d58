"""Readable reasons for HTTP transport failures, shared by the sources that speak HTTP."""

from __future__ import annotations

import socket
import ssl

import httpx


def transport_reason(exc: httpx.HTTPError) -> str:
    """A short human reason for a transport failure (walks the cause chain: httpx wraps OS and TLS errors)."""
    if isinstance(exc, httpx.TimeoutException):
        kind = {httpx.ConnectTimeout: "connect", httpx.ReadTimeout: "read",
                httpx.WriteTimeout: "write", httpx.PoolTimeout: "pool"}.get(type(exc), "")
        return f"{kind} timeout".strip()
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, socket.gaierror):
            return f"DNS lookup failed ({e.strerror or e})"
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed ({e.verify_message or e.reason or e})"
        if isinstance(e, ssl.SSLError):
            return f"TLS error ({e.reason or e})"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"connection closed by the server ({exc})"
    if isinstance(exc, httpx.ConnectError) and "refused" in str(exc).lower():
        return "connection refused"
    return f"{type(exc).__name__}: {exc or 'no details'}"
