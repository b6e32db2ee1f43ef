"""One spelling per host: what a route's `match.hosts` is compared with.

`PAID.example.com`, `paid.example.com.`, `paid.example.com:443` and `paid.example.com.:80` are
one host to a proxy's virtual hosts and to most upstreams, so they are one host to the price.
A host that is not a valid name or address (`a:80:80`, `a%2e`, `a,b`, `a b`, `[::1`, `127.1`)
is refused rather than guessed at: an upstream could read it as the paid host.
"""

from __future__ import annotations

import ipaddress
import re

# DNS names and dotted-quad IPv4 (letters, digits, `-`, `_`; no empty label), lowercased.
_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")
MAX_HOST_LENGTH = 253


class BadHost(ValueError):
    """The request's host is not one spelling of a name or address (`reason` bad_host), or
    there is none where a route needs one (`reason` missing_host)."""

    def __init__(self, message: str, reason: str = "bad_host") -> None:
        super().__init__(message)
        self.reason = reason


def normalize_host(raw: str) -> str:
    """The canonical form of a Host/:authority value: lowercase, no port, no trailing dot,
    IPv6 in its compressed form inside brackets. '' when there is no host at all; raises
    BadHost when the value is malformed."""
    host = raw.strip()
    if not host:
        return ""
    if len(host) > MAX_HOST_LENGTH + 8:  # a name, a dot and a port at most
        raise BadHost(f"The host is longer than a host name can be: {raw[:80]!r}…")
    if not host.isascii():  # before lower(): e.g. the Kelvin sign lowercases to `k`
        raise BadHost(f"The host is not ASCII (send IDNs as xn--): {raw[:80]!r}")
    host = host.lower()
    if host.startswith("["):
        return _bracketed(host)
    name, colon, port = host.partition(":")
    if colon and not _is_port(port):
        raise BadHost(f"The host is not host[:port]: {raw[:80]!r}")
    if name.endswith("."):
        name = name[:-1]
    if len(name) > MAX_HOST_LENGTH or not _NAME.fullmatch(name):
        raise BadHost(f"The host is not a host name or address: {raw[:80]!r}")
    last = name.rpartition(".")[2]
    if _NUMERIC_LABEL.fullmatch(last) and not _is_dotted_quad(name):
        # A name ending in a number is an IPv4 address to URL parsers and resolvers
        # (`127.1`, `0x7f.0.0.1`, `2130706433`): only the dotted-quad spelling is accepted.
        raise BadHost(f"The host ends in a number but is not a dotted-quad IPv4: {raw[:80]!r}")
    return name


def _bracketed(host: str) -> str:
    end = host.find("]")
    if end < 0:
        raise BadHost(f"The host's IPv6 literal is not closed: {host[:80]!r}")
    rest = host[end + 1 :]
    if rest and not (rest[0] == ":" and _is_port(rest[1:])):
        raise BadHost(f"The host is not [IPv6][:port]: {host[:80]!r}")
    try:
        address = ipaddress.IPv6Address(host[1:end])
    except ValueError:
        raise BadHost(f"The host is not an IPv6 address: {host[:80]!r}") from None
    if address.scope_id is not None:
        raise BadHost(f"The host has an IPv6 zone id, which no URL host may: {host[:80]!r}")
    return f"[{address.compressed}]"


def _is_port(text: str) -> bool:
    """Empty (RFC 3986 allows `host:`) or a decimal port number."""
    return not text or (len(text) <= 5 and text.isascii() and text.isdigit() and int(text) < 65536)


def _is_dotted_quad(name: str) -> bool:
    try:
        return str(ipaddress.IPv4Address(name)) == name
    except ValueError:
        return False
