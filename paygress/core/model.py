"""Plain data of the core: the request it judges, the decision it returns, the grants it keeps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from paygress.core.pricing import Mode

Headers = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class HttpRequest:
    """The facts of one HTTP request that the decision needs. Header names are lowercase.
    Not frozen: one is built per check, and a frozen __init__ costs a setattr call per field."""

    method: str
    host: str
    path: str
    headers: Mapping[str, str]
    context: Mapping[str, str] = field(default_factory=dict)
    client: str = ""  # the client's address as the proxy reports it ("" when unknown)


@dataclass(frozen=True, slots=True)
class Allow:
    """Let the request through, adding headers upstream and to the client's response."""

    reason: str
    upstream_headers: Headers = ()
    response_headers: Headers = ()
    remove_headers: tuple[str, ...] = ()
    # Until when (Unix time) a proxy may reuse this allow for the same credentials without
    # asking again: a time grant's or a session's paid end; 0 = never (counted grants, free).
    cache_until: float = 0.0


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the client directly with this status, headers and body, instead of passing the
    request on: a denial (402, 400, 429, 503...) or an answer Paygress gives itself (the
    offers, a pod's status)."""

    status: int
    reason: str
    headers: Headers = ()
    body: bytes = b""


Decision = Allow | Answer


@dataclass(slots=True)
class Grant:
    """What a redeemed token paid for, keyed by the token's proof fingerprint."""

    id: str
    route: str
    mode: Mode
    unit: str
    mint: str
    paid: int
    created_at: float
    requests_left: int = 0
    expires_at: float = 0.0
    pod: str = ""

    def usable(self, now: float) -> bool:
        if self.mode is Mode.PER_REQUEST:
            return self.requests_left > 0
        return now < self.expires_at


@dataclass(frozen=True, slots=True)
class Received:
    """What a token is worth to the operator: its amount less the mint's input fee (NUT-02).

    The client pays the fee: a 402 asks for the price plus the fee of paying it in the fewest
    proofs (see `pricing.asked_amount`), so paying exactly that buys exactly what was asked;
    a token in needlessly many proofs pays their extra fee itself.
    """

    amount_in: int
    fee: int

    @property
    def credited(self) -> int:
        """What the client is credited with: all of it, net of the mint's fee."""
        return self.amount_in - self.fee
