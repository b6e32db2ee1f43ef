import hashlib
import ipaddress

import pytest

from paygress.core.free_clients import FreeClient, FreeClients, parse_address

KEY = "k3y-0f-the-p4rtner-" + "x" * 20
KEY_HASH = hashlib.sha256(KEY.encode()).digest()
OFFICE = FreeClient("office", networks=(ipaddress.ip_network("10.1.0.0/16"),))
V6 = FreeClient("v6", networks=(ipaddress.ip_network("2001:db8::/32"),))
PARTNER = FreeClient("partner", key_sha256=KEY_HASH, routes=frozenset({"api"}))
BOTH = FreeClient(
    "vpn-with-key", networks=(ipaddress.ip_network("192.168.0.0/24"),), key_sha256=KEY_HASH
)
CLIENTS = FreeClients((OFFICE, V6, PARTNER, BOTH))


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        ("10.1.2.3", OFFICE),
        ("10.1.2.3:51234", OFFICE),
        ("::ffff:10.1.2.3", OFFICE),  # a dual-stack listener's view of an IPv4 client
        ("2001:db8::7", V6),
        ("[2001:db8::7]:443", V6),
        ("10.2.0.1", None),
        ("", None),
        ("unknown", None),
        ("10.1.2.3, 1.2.3.4", None),
    ],
)
def test_by_address(client: str, expected: FreeClient | None) -> None:
    assert CLIENTS.find(client, {}, "api") is expected


def test_by_key_only_on_its_routes() -> None:
    headers = {"x-paygress-key": KEY}
    assert CLIENTS.find("203.0.113.9", headers, "api") is PARTNER
    assert CLIENTS.find("203.0.113.9", headers, "other") is None
    assert CLIENTS.find("203.0.113.9", {"x-paygress-key": KEY + "!"}, "api") is None
    assert CLIENTS.find("203.0.113.9", {"x-paygress-key": f"  {KEY} "}, "api") is PARTNER


def test_an_entry_with_both_needs_both() -> None:
    headers = {"x-paygress-key": KEY}
    assert CLIENTS.find("192.168.0.5", headers, "other") is BOTH
    assert CLIENTS.find("192.168.0.5", {}, "other") is None
    assert CLIENTS.find("192.168.1.5", headers, "other") is None


def test_the_first_entry_in_config_order_wins() -> None:
    wide = FreeClient("wide", networks=(ipaddress.ip_network("10.0.0.0/8"),))
    assert FreeClients((wide, OFFICE)).find("10.1.2.3", {}, "api") is wide
    assert FreeClients((OFFICE, wide)).find("10.1.2.3", {}, "api") is OFFICE


def test_the_key_header_is_configurable() -> None:
    clients = FreeClients((PARTNER,), key_header="X-Api-Key")
    assert clients.find("", {"x-api-key": KEY}, "api") is PARTNER
    assert clients.find("", {"x-paygress-key": KEY}, "api") is None


def test_addresses_seen_are_remembered_within_bounds() -> None:
    clients = FreeClients((OFFICE,))
    for i in range(10_000):
        assert clients.find(f"172.16.{i // 256}.{i % 256}", {}, "api") is None
    assert len(clients._addresses) <= 4096
    assert clients.find("10.1.0.1", {}, "api") is OFFICE


def test_an_entry_needs_a_condition_and_describes_itself_without_its_key() -> None:
    with pytest.raises(ValueError, match="cidrs, an api_key_sha256"):
        FreeClient("nobody")
    text = BOTH.describe()
    assert "192.168.0.0/24" in text and KEY_HASH.hex()[:12] in text
    assert KEY_HASH.hex() not in text and KEY not in text
    assert PARTNER.describe().endswith("; api")
    assert OFFICE.describe().endswith("; every priced route")


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4:80 ", "1.2.3.4"),
        ("[::1]:80", "::1"),
        ("::1", "::1"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("nope", None),
        ("1.2.3.4:80:80", None),
        ("", None),
    ],
)
def test_parse_address(text: str, address: str | None) -> None:
    parsed = parse_address(text)
    assert (str(parsed) if parsed else None) == address
