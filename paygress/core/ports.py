"""The small interfaces through which the core reaches side effects (wallet, store, metrics)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from paygress.cashu.models import Token
from paygress.core.model import Grant, Received
from paygress.core.tiers import Tier


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

    async def grants_of_pod(self, pod: str) -> list[Grant]: ...


@dataclass(frozen=True, slots=True)
class PodState:
    """What the gate needs to know of a paid pod."""

    name: str
    phase: str  # Pending, Running, Succeeded, Failed, Unknown
    ip: str | None = None
    ready: bool = False
    expires_at: float = 0.0

    @property
    def reachable(self) -> bool:
        return self.phase == "Running" and bool(self.ip)


@dataclass(frozen=True, slots=True)
class PodRequest:
    """A pod to create for a grant."""

    name: str
    tier: Tier
    image: str
    grant_id: str
    route: str
    paid: int
    expires_at: float


class PodsUnavailable(Exception):
    """The Kubernetes API could not be used (after retries): 503 with Retry-After."""


class Pods(Protocol):
    """Pods for payment, in a workload namespace."""

    def state(self, name: str) -> PodState | None:
        """The last known state (memory only; the hot path)."""
        ...

    async def ensure(self, request: PodRequest) -> PodState:
        """Creates the pod if it does not exist (idempotent); raises PodsUnavailable."""
        ...

    async def refresh(self, name: str) -> PodState | None:
        """Asks the API for the pod's current state (rate-limited by the implementation)."""
        ...

    async def extend(self, name: str, expires_at: float) -> None:
        """Moves the pod's paid end (its expiry annotation); raises PodsUnavailable."""
        ...


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
