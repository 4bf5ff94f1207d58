"""Who the client is behind proxies, and slot accounting."""

from __future__ import annotations

from unittest import mock

from aiohttp.test_utils import make_mocked_request

from hub.admission import Admission, client_address, parse_networks


def request(peer: str, xff: str | None = None):  # type: ignore[no-untyped-def]
    headers = {"X-Forwarded-For": xff} if xff is not None else {}
    transport = mock.Mock()
    transport.get_extra_info.return_value = (peer, 12345)
    return make_mocked_request("GET", "/ws", headers=headers, transport=transport)


TRUSTED = parse_networks(["10.0.0.0/8", "fd00::/8"])


def test_the_peer_is_the_client_unless_it_is_a_trusted_proxy():
    assert client_address(request("203.0.113.5", "198.51.100.1"), TRUSTED) == "203.0.113.5"
    assert client_address(request("10.1.2.3", "198.51.100.1"), TRUSTED) == "198.51.100.1"
    assert client_address(request("10.1.2.3", "198.51.100.1"), ()) == "10.1.2.3"


def test_the_right_most_untrusted_hop_wins_so_a_client_cannot_forge_its_address():
    # The client wrote "1.1.1.1"; the ingress appended what it saw (198.51.100.9); an inner proxy
    # (10.0.0.7) appended the ingress.
    assert client_address(request("10.9.9.9", "1.1.1.1, 198.51.100.9, 10.0.0.7"), TRUSTED) == "198.51.100.9"
    assert client_address(request("10.9.9.9", "10.0.0.1, 10.0.0.2"), TRUSTED) == "10.9.9.9"  # all trusted
    assert client_address(request("10.9.9.9", "not-an-ip"), TRUSTED) == "10.9.9.9"
    assert client_address(request("10.9.9.9", "[fd00::1], 2001:db8::5"), TRUSTED) == "2001:db8::5"


def test_slots_are_counted_per_address_until_released():
    adm = Admission(max_connections=3, max_per_ip=2)
    assert adm.admit("a") is None and adm.admit("a") is None
    assert adm.admit("a") == "per_ip"
    assert adm.admit("b") is None
    assert adm.admit("c") == "capacity"
    adm.release("a")
    assert adm.admit("c") is None
    for ip in ("a", "b", "c"):
        adm.release(ip)
    assert adm.open == 0 and not adm.per_ip
