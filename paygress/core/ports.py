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
    expires_at: float = 0.0  # the paid end as the cluster's annotation says
    terminating: bool = False  # deleted (deletionTimestamp set), still shutting down

    @property
    def reachable(self) -> bool:
        """Whether requests may be routed to it: Running with an IP, and not being deleted."""
        return self.phase == "Running" and bool(self.ip) and not self.terminating


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


class PodsError(Exception):
    """A pod operation failed. `status` is the API server's HTTP status, None when it never
    answered. Catch this base to never crash on Kubernetes: answer 503 + Retry-After."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PodsUnavailable(PodsError):
    """The API server could not be reached, timed out or answered 429/5xx, after retries.
    Expected now and then: answer 503 + Retry-After; the caller's next attempt may work."""


class PodNotFound(PodsError):
    """404: the pod does not exist (any more): another replica or an admin deleted it.
    Expected: forget the pod; a delete that finds nothing has nothing left to do."""


class PodExists(PodsError):
    """409 on create: the pod exists already (another replica, or an earlier attempt whose
    answer was lost). Expected: read it instead."""


class PodsRefused(PodsError):
    """The API server refused the request (400/401/403/422: RBAC, Pod Security, an invalid
    manifest). Not the client's fault and not transient: an operator error or a bug, to be
    logged loudly; the client still gets 503 + Retry-After and keeps its grant."""


class Pods(Protocol):
    """Pods for payment, in a workload namespace. The view is fed by a watch: reading it
    costs no API call."""

    def state(self, name: str) -> PodState | None:
        """The last known state (memory only; the hot path)."""
        ...

    async def ensure(self, request: PodRequest) -> PodState:
        """Creates the pod if it does not exist (idempotent); raises PodsError."""
        ...

    async def patch_expiry(self, name: str, expires_at: float) -> None:
        """PATCHes the pod's expiry annotation to the paid end; raises PodsError. The keeper
        loop re-checks a pod whose PATCH failed until the annotation matches."""
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
