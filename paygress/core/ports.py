"""The small interfaces through which the core reaches side effects (wallet, store, metrics)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from paygress.cashu.models import Token
from paygress.core.model import Grant, Received


class RedeemError(Exception):
    """A token could not be redeemed. `reason` is a short machine code, the message plain words."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class PaymentRejected(RedeemError):
    """The mint or our checks refused the payment (spent, fees above value, bad proofs): 400."""


class MintUnreachable(RedeemError):
    """The mint could not be asked (network, timeout, 5xx): 503 with Retry-After."""


class Wallet(Protocol):
    """The operator's wallet: redeems tokens at their (allow-listed) mint."""

    async def redeem(
        self, token: Token, fingerprint: str, grant_for: Callable[[Received], Grant]
    ) -> Grant:
        """Swaps the token into the wallet; persists the new proofs and the grant together
        before returning. Raises PaymentRejected or MintUnreachable."""
        ...


class GrantStore(Protocol):
    """Durable grants (the redeem cache)."""

    async def get_grant(self, grant_id: str) -> Grant | None: ...

    async def load_active_grants(self, now: float) -> list[Grant]: ...

    async def save_usage(self, grants: Sequence[Grant]) -> None: ...


class Metrics(Protocol):
    """Counters the core reports; the metrics module maps them to Prometheus."""

    def decision(self, outcome: str, reason: str, seconds: float) -> None: ...

    def redeem_cache(self, hit: bool) -> None: ...

    def received(self, unit: str, amount: int) -> None: ...


class NullMetrics:
    """Metrics that go nowhere."""

    def decision(self, outcome: str, reason: str, seconds: float) -> None:
        return None

    def redeem_cache(self, hit: bool) -> None:
        return None

    def received(self, unit: str, amount: int) -> None:
        return None
