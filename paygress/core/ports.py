"""The small interfaces through which the core reaches side effects (wallet, store, metrics)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from paygress.cashu.models import Proof, Token
from paygress.core.model import Grant, Received
from paygress.core.tiers import Tier


class RedeemError(Exception):
    """A token could not be redeemed now. Expected, never a bug: the gate answers the client
    with `status`, the short machine code `reason` and the plain words of `message`."""

    status = 400

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class PaymentRejected(RedeemError):
    """Refused for good (bad or spent proofs, fees above the value, an unknown keyset): 4xx.
    The same token gets the same answer again, so the gate remembers it (`remember`). When
    the mint itself refused the proofs (`by_mint`), any encoding of the same proofs is refused
    too; `spent_ys` names proofs the mint reported spent, refused from memory in any token."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        status: int = 400,
        remember: bool = True,
        by_mint: bool = False,
        spent_ys: Sequence[str] = (),
    ) -> None:
        super().__init__(reason, message)
        self.status = status
        self.remember = remember
        self.by_mint = by_mint
        self.spent_ys = tuple(spent_ys)


class TryAgainLater(RedeemError):
    """Not decided now (the mint unreachable, a swap's outcome not known yet, the swap budget
    spent): 503 (or 429) with Retry-After. The same token may succeed later."""

    def __init__(
        self, reason: str, message: str, *, status: int = 503, retry_after: int | None = None
    ) -> None:
        super().__init__(reason, message)
        self.status = status
        self.retry_after = retry_after


class SettledMeanwhile(TryAgainLater):
    """Another path (the wallet's background task, another request) finished this token's
    swap while the redemption waited for it: the grant store says whether it was paid."""


@dataclass(frozen=True, slots=True)
class Verified:
    """A token checked against its mint's keys (no swap yet): `inputs` are its proofs with
    full keyset ids, `fee` the mint's input fee for them, `proven` when every proof carries a
    valid DLEQ proof (NUT-12), i.e. the mint provably signed them; `offline` when, besides,
    every proof is locked to the operator's key alone (NUT-11) long enough for it to be
    accepted now and swapped later."""

    token: Token
    inputs: tuple[Proof, ...]
    fee: int
    proven: bool
    offline: bool = False


class Wallet(Protocol):
    """The operator's wallet: checks and redeems tokens at their (allow-listed) mint."""

    def input_fee_ppk(self) -> int:
        """The highest input fee (parts per thousand per proof) of the accepted mints' active
        keysets, as far as known (0 before): what a 402 asks for on top of the price."""
        ...

    def lock_pubkey(self) -> str | None:
        """The key a 402 asks payers to lock to (NUT-11), or None when locked tokens are not
        accepted offline."""
        ...

    async def verify(self, token: Token) -> Verified:
        """Checks the proofs against the mint's keys, in memory once the keys are known.
        Raises PaymentRejected or TryAgainLater."""
        ...

    async def redeem(
        self,
        verified: Verified,
        fingerprint: str,
        grant_for: Callable[[Received], Grant],
        admit: Callable[[], None],
    ) -> Grant:
        """Swaps the token into the wallet (or, `offline`, queues its locked proofs for a later
        swap); persists the proofs and the grant together before returning. `admit` is called
        just before a new swap is sent (it raises TryAgainLater when the swap budget is spent).
        Raises PaymentRejected or TryAgainLater."""
        ...


class StoreUnavailable(TryAgainLater):
    """The grant store (or the wallet's ledger) cannot be reached now: 503 + Retry-After.
    Expected during an outage of a shared store; nothing was decided, nothing is lost."""

    def __init__(
        self, message: str = "The payment store cannot be reached right now; try again shortly."
    ) -> None:
        super().__init__("store_unavailable", message)


@dataclass(frozen=True, slots=True)
class Lease:
    """What `GrantStore.lease` found: `held` requests of the grant are held by this process
    (all it holds, as the store records it), `pool` are held by nobody, and `elsewhere` says
    whether other live processes hold some (which they give back at their next flush)."""

    held: int
    pool: int
    elsewhere: bool


class GrantStore(Protocol):
    """Durable grants (the redeem cache), shared by every process that serves one seed.

    A per_request grant is counted exactly across processes with leases: a process takes a
    block of the grant's requests (`lease`), serves it from memory, and gives back what it did
    not use (`give_back`) at every flush and at shutdown. A stored grant's `requests_left` is
    the pool that no process holds. A process that dies holding a lease forfeits its unused
    part: a payer can lose at most one block per grant and per process that died, never gain.
    """

    @property
    def available(self) -> bool:
        """False while the store cannot be reached (as its last calls and probes found)."""
        ...

    async def get_grant(self, grant_id: str) -> Grant | None: ...

    async def load_active_grants(self, now: float) -> list[Grant]:
        """Time grants not yet expired and per_request grants with a pool left."""
        ...

    async def lease(self, grant_id: str, want: int) -> Lease:
        """Moves up to `want` requests of a per_request grant from its pool to this process,
        atomically. Raises StoreUnavailable."""
        ...

    async def give_back(self, used: Mapping[str, int]) -> None:
        """Ends this process's leases of these grants: of what it held, all but `used[id]`
        requests go back to the pool. Idempotent (a lease ended once is not ended twice).
        Raises StoreUnavailable."""
        ...

    async def save_expiry(self, grants: Sequence[Grant]) -> None:
        """Writes the ends of time grants (a top-up moved them); an end never moves back."""
        ...

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


@dataclass(frozen=True, slots=True)
class SessionClaims:
    """What a paid session says: the route it is for (its audience), the grant that paid for it,
    the paid end (Unix seconds), what was paid, and for a pod grant the pod and its address."""

    route: str
    grant: str
    expires_at: int
    paid: int
    unit: str
    pod: str = ""
    destination: str = ""  # ip:port of the pod


class SessionTokens(Protocol):
    """Signed sessions (paygress/sessions.py: JWTs the proxy verifies itself)."""

    def sign(self, claims: SessionClaims, issued_at: int) -> str:
        """A new session token carrying `claims`."""
        ...

    def read(self, token: str) -> SessionClaims | None:
        """The claims of a token this service signed (signature and issuer checked), or None."""
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
