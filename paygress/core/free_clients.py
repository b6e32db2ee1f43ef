"""Free passes for listed clients: by source address (CIDR), by an API key, or both.

The address is the one the proxy reports (Envoy's downstream address; on the forward-auth port,
X-Real-IP from deploy/nginx or X-Forwarded-For read from the right by trusted hops), never a
header the client wrote itself. The key travels in one request header (`x-paygress-key` by
default); the config holds only its SHA-256, so a leaked config does not leak keys (use long
random keys: a hash of a short one can be guessed offline). An entry with both needs both.
Tier (pod) routes are never free: a pod needs a paid grant.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_KEY_HEADER = "x-paygress-key"
# The header that tells the upstream a request passed as a listed client (its entry's name).
FREE_CLIENT_HEADER = "x-paygress-free-client"
_ADDRESSES_MAX = 4096

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class FreeClient:
    """One entry of `free_clients.clients`. `routes` empty: every priced route."""

    name: str
    networks: tuple[Network, ...] = ()
    key_sha256: bytes | None = None
    routes: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.networks and self.key_sha256 is None:
            raise ValueError(f"free client {self.name}: give cidrs, an api_key_sha256, or both")

    def describe(self) -> str:
        """Plain words for check-config (a key by the first digits of its hash only)."""
        parts = [", ".join(str(n) for n in self.networks)] if self.networks else []
        if self.key_sha256 is not None:
            parts.append(f"api key sha256 {self.key_sha256.hex()[:12]}…")
        where = ", ".join(sorted(self.routes)) if self.routes else "every priced route"
        return f"{' and '.join(parts)}; {where}"


class FreeClients:
    """Finds the listed client a request comes from, if any. Addresses seen are remembered
    (bounded), so a repeating client costs one dict lookup; a key costs one SHA-256."""

    def __init__(self, clients: Sequence[FreeClient], key_header: str = DEFAULT_KEY_HEADER) -> None:
        self.clients = tuple(clients)
        self.key_header = key_header.lower()
        self._with_networks = tuple(i for i, c in enumerate(self.clients) if c.networks)
        self._by_key: dict[bytes, frozenset[int]] = {}
        for i, c in enumerate(self.clients):
            if c.key_sha256 is not None:
                self._by_key[c.key_sha256] = self._by_key.get(c.key_sha256, frozenset()) | {i}
        self._addresses: dict[str, frozenset[int]] = {}

    def find(self, client: str, headers: Mapping[str, str], route: str) -> FreeClient | None:
        """The first entry (in config order) that `client` (an address, "" when unknown) and
        the request's key header satisfy on `route`."""
        by_address = self._by_address(client) if self._with_networks else frozenset()
        key = headers.get(self.key_header) if self._by_key else None
        by_key = (
            self._by_key.get(hashlib.sha256(key.strip().encode()).digest(), frozenset())
            if key
            else frozenset()
        )
        if not by_address and not by_key:
            return None
        for i, entry in enumerate(self.clients):
            if entry.routes and route not in entry.routes:
                continue
            if entry.networks and i not in by_address:
                continue
            if entry.key_sha256 is not None and i not in by_key:
                continue
            return entry
        return None

    def _by_address(self, client: str) -> frozenset[int]:
        found = self._addresses.get(client)
        if found is None:
            address = parse_address(client)
            found = frozenset(
                i
                for i in self._with_networks
                if address is not None and any(address in net for net in self.clients[i].networks)
            )
            if len(self._addresses) >= _ADDRESSES_MAX:
                self._addresses.clear()
            self._addresses[client] = found
        return found


def parse_address(text: str) -> Address | None:
    """An IP address as proxies report it: `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]:80`;
    an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`, dual-stack listeners) as its IPv4.
    None when it is none of these."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
