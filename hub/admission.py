"""Admission: who the client is (behind trusted proxies) and whether one more socket fits."""

from __future__ import annotations

import collections
import ipaddress
from collections.abc import Iterable

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """`server.trusted_proxies` as networks (validated by the config loader already)."""
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def client_address(request: web.BaseRequest, trusted: tuple[Network, ...]) -> str:
    """The client's address: the direct peer, or, when that peer is a trusted proxy, the
    right-most address in X-Forwarded-For that is not itself a trusted proxy.

    Right-most, because each proxy appends the address it saw: everything left of the last
    untrusted hop was written by the client and can be forged.
    """
    peer = request.remote or "unknown"
    if not trusted:
        return peer
    ip = _ip(peer)
    if ip is None or not any(ip in net for net in trusted):
        return peer
    hops = [h.strip() for value in request.headers.getall("X-Forwarded-For", ()) for h in value.split(",")]
    for hop in reversed([h for h in hops if h]):
        addr = _ip(hop)
        if addr is None:
            return peer  # a malformed header from a trusted proxy: fall back to what we know
        if not any(addr in net for net in trusted):
            return str(addr)
    return peer


def is_https(request: web.BaseRequest, trusted: tuple[Network, ...]) -> bool:
    """The one definition of "this request is https": `request.secure`, or `X-Forwarded-Proto: https`
    set by a peer in `server.trusted_proxies` (the right-most value: the one that proxy wrote)."""
    if request.secure:
        return True
    ip = _ip(request.remote or "")
    if ip is None or not any(ip in net for net in trusted):
        return False
    values = [v.strip().lower() for h in request.headers.getall("X-Forwarded-Proto", ()) for v in h.split(",")]
    return bool(values) and values[-1] == "https"


class Admission:
    """Counts every WebSocket from admission until its socket is really gone.

    Evicted clients leave the broadcast set at once but may keep their socket for a grace period;
    they still count here, so `max_connections` bounds sockets, not just subscribers.
    """

    def __init__(self, *, max_connections: int, max_per_ip: int) -> None:
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.open = 0
        self.per_ip: collections.Counter[str] = collections.Counter()

    def admit(self, ip: str) -> str | None:
        """Take a slot for `ip`; None when admitted, else the refusal reason ("capacity" or "per_ip")."""
        if self.open >= self.max_connections:
            return "capacity"
        if self.max_per_ip and self.per_ip[ip] >= self.max_per_ip:
            return "per_ip"
        self.open += 1
        self.per_ip[ip] += 1
        return None

    def release(self, ip: str) -> None:
        """Give back the slot `admit(ip)` took."""
        self.open -= 1
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]
