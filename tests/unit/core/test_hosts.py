import pytest

from paygress.core.hosts import BadHost, normalize_host


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("paid.example.com", "paid.example.com"),
        ("PAID.Example.COM", "paid.example.com"),
        ("paid.example.com.", "paid.example.com"),
        ("paid.example.com:443", "paid.example.com"),
        ("paid.example.com.:80", "paid.example.com"),
        ("paid.example.com:", "paid.example.com"),  # RFC 3986: the port may be empty
        ("  paid.example.com ", "paid.example.com"),
        ("my_host.internal", "my_host.internal"),
        ("localhost", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1:8000", "127.0.0.1"),
        ("[::1]", "[::1]"),
        ("[::1]:8080", "[::1]"),
        ("[0:0:0:0:0:0:0:1]", "[::1]"),
        ("[2001:DB8::0:1]:443", "[2001:db8::1]"),
        ("", ""),
        ("   ", ""),
    ],
)
def test_one_spelling_per_host(raw: str, canonical: str) -> None:
    assert normalize_host(raw) == canonical


@pytest.mark.parametrize(
    "raw",
    [
        "paid.example.com:80:80",  # repeated port
        "paid.example.com:8o",
        "paid.example.com:65536",
        "paid.example.com:+80",
        "paid.example.com..",  # one trailing dot only
        ".",
        "paid..example.com",
        ".paid.example.com",
        "paid.example.com%2e",
        "paid.example.com,free.example.com",  # two Host headers, joined by Envoy
        "paid.example.com free.example.com",
        "user@paid.example.com",
        "paid.example.com/x",
        "paid.example.com\\x",
        "päid.example.com",
        "paid.example.\u212aom",  # the Kelvin sign lowercases to k
        "::1",  # IPv6 needs brackets
        "[::1",
        "[::1]x",
        "[::1]:80:80",
        "[not:an:address]",
        "[fe80::1%eth0]",
        "127.1",  # numeric endings are IPv4 to URL parsers: only dotted quads pass
        "0x7f.0.0.1",
        "2130706433",
        "127.000.0.1",
        "a." * 200 + "com",
    ],
)
def test_malformed_hosts_are_refused(raw: str) -> None:
    with pytest.raises(BadHost) as info:
        normalize_host(raw)
    assert info.value.reason == "bad_host"
    assert len(str(info.value)) < 200, "the message quotes a bounded part of the host"
