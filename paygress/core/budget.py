"""The swap budget: how often tokens that prove nothing may cost a swap at a mint.

Anyone can write a well-formed token with made-up proofs for a public keyset; only the mint
can tell it is fake, by refusing the swap. Mints rate-limit swaps per client address, and every
swap Paygress makes comes from Paygress's address: unbounded fakes would spend that limit and
turn honest first payments away. So swaps of tokens without valid DLEQ proofs (NUT-12) are
bounded by token buckets, one per mint and one per client address (as the proxy reports it;
IPv6 addresses by their /64). Tokens whose every proof carries a valid DLEQ proof are provably
signed by the mint and are not charged here.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    """Swaps per minute and how many may come at once (the bucket's size), per mint and per
    client."""

    per_mint_per_minute: float
    per_mint_burst: int
    per_client_per_minute: float
    per_client_burst: int
    max_clients: int = 10_000


class TokenBucket:
    """`rate` tokens per second, up to `capacity`; starts full."""

    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait(self, now: float) -> float:
        """Seconds until one token is there (0 if it is there now)."""
        self._refill(now)
        if self.level >= 1:
            return 0.0
        return math.inf if self.rate <= 0 else (1 - self.level) / self.rate

    def take(self, now: float) -> None:
        self._refill(now)
        self.level -= 1


class SwapBudget:
    """Admits or refuses one swap of an unproven token. Memory is bounded: at most
    `max_clients` client buckets are kept (the least recently seen go first; the per-mint
    bucket still bounds what a crowd of addresses can cost)."""

    def __init__(self, settings: BudgetSettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.clock = clock
        self._mints: dict[str, TokenBucket] = {}
        self._clients: OrderedDict[str, TokenBucket] = OrderedDict()

    def wait(self, mint: str, client: str) -> float:
        """What `admit` would answer now, without counting anything: lets a client over its
        budget be turned away before any work is spent on its token."""
        now = self.clock()
        buckets = (self._mints.get(mint), self._clients.get(client_key(client)))
        return max((b.wait(now) for b in buckets if b is not None), default=0.0)

    def admit(self, mint: str, client: str) -> float:
        """0.0 when the swap may go ahead (and is counted); else the seconds to wait."""
        now = self.clock()
        s = self.settings
        mint_bucket = self._mints.get(mint)
        if mint_bucket is None:
            mint_bucket = self._mints[mint] = TokenBucket(
                s.per_mint_per_minute / 60, max(s.per_mint_burst, 1), now
            )
        key = client_key(client)
        client_bucket = self._clients.pop(key, None)
        if client_bucket is None:
            client_bucket = TokenBucket(
                s.per_client_per_minute / 60, max(s.per_client_burst, 1), now
            )
            while len(self._clients) >= s.max_clients:
                self._clients.popitem(last=False)
        self._clients[key] = client_bucket
        wait = max(mint_bucket.wait(now), client_bucket.wait(now))
        if wait > 0:
            return wait
        mint_bucket.take(now)
        client_bucket.take(now)
        return 0.0

    def __len__(self) -> int:
        return len(self._clients)


def client_key(address: str) -> str:
    """The budget's name for a client: its IPv4 address, or the /64 of its IPv6 address (one
    host commonly holds a whole /64); anything else as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
