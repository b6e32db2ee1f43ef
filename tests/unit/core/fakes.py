"""In-memory stand-ins for the gate's ports, and a maker of well-formed tokens."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from coincurve import PrivateKey

from paygress.cashu.models import DLEQ, Proof, Token
from paygress.cashu.token import encode_token_v3, encode_token_v4
from paygress.core.model import Grant, Received
from paygress.core.ports import Lease, RedeemError, StoreUnavailable, Verified

MINT = "http://mint.test"
KEYSET = "00ad268c4d1f5826"


def make_token(
    amounts: Sequence[int] = (8, 2),
    *,
    mint: str = MINT,
    unit: str = "sat",
    version: int = 4,
    dleq: bool = False,
) -> str:
    """A well-formed token (its proofs made up); with `dleq`, each proof carries a DLEQ proof
    (made up too: the fake wallet decides whether it is "valid")."""
    proofs = tuple(
        Proof(
            keyset_id=KEYSET,
            amount=a,
            secret=secrets.token_hex(32),
            C=PrivateKey().public_key.format().hex(),
            dleq=DLEQ(secrets.token_hex(32), secrets.token_hex(32), secrets.token_hex(32))
            if dleq
            else None,
        )
        for a in amounts
    )
    token = Token(mint=mint, unit=unit, proofs=proofs, memo=None, version=version)
    return encode_token_v4(token) if version == 4 else encode_token_v3(token)


class FakeWallet:
    """Verifies every token (proven when `proven`) and redeems it for its face value minus
    `fee`, or raises `error` (from redeem) / `verify_error` (from verify)."""

    def __init__(self, fee: int = 0, fee_ppk: int = 0, *, proven: bool = False) -> None:
        self.fee = fee
        self.fee_ppk = fee_ppk
        self.proven = proven
        self.lock: str | None = None
        self.error: RedeemError | None = None
        self.verify_error: RedeemError | None = None
        self.calls = 0
        self.verifies = 0
        self.delay = 0.0
        self.store: FakeStore | None = None

    def input_fee_ppk(self) -> int:
        return self.fee_ppk

    def lock_pubkey(self) -> str | None:
        return self.lock

    async def verify(self, token: Token) -> Verified:
        self.verifies += 1
        if self.verify_error is not None:
            raise self.verify_error
        return Verified(token=token, inputs=token.proofs, fee=self.fee, proven=self.proven)

    async def redeem(
        self,
        verified: Verified,
        fingerprint: str,
        grant_for: Callable[[Received], Grant],
        admit: Callable[[], None],
    ) -> Grant:
        grant = grant_for(Received(verified.token.amount, verified.fee))
        admit()
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        if self.store is not None:
            self.store.grants[grant.id] = replace(grant)
        return grant


class FakeStore:
    """The grant store in memory, leases included (one holder: this process)."""

    def __init__(self) -> None:
        self.grants: dict[str, Grant] = {}
        self.held: dict[str, int] = {}  # leased to this process
        self.others: dict[str, int] = {}  # leased to other processes
        self.saves = 0
        self.leases = 0
        self.available = True

    def _up(self) -> None:
        if not self.available:
            raise StoreUnavailable()

    async def get_grant(self, grant_id: str) -> Grant | None:
        self._up()
        grant = self.grants.get(grant_id)
        return replace(grant) if grant else None

    async def load_active_grants(self, now: float) -> list[Grant]:
        return [replace(g) for g in self.grants.values() if g.usable(now)]

    async def lease(self, grant_id: str, want: int) -> Lease:
        self._up()
        self.leases += 1
        grant = self.grants[grant_id]
        take = min(want, grant.requests_left)
        grant.requests_left -= take
        self.held[grant_id] = self.held.get(grant_id, 0) + take
        return Lease(self.held[grant_id], grant.requests_left, bool(self.others.get(grant_id)))

    async def give_back(self, used: Mapping[str, int]) -> None:
        self._up()
        for grant_id, count in used.items():
            held = self.held.pop(grant_id, 0)
            self.grants[grant_id].requests_left += max(0, held - count)

    async def save_expiry(self, grants: Sequence[Grant]) -> None:
        self._up()
        self.saves += 1
        for g in grants:
            stored = self.grants[g.id]
            stored.expires_at = max(stored.expires_at, g.expires_at)

    async def grants_of_pod(self, pod: str) -> list[Grant]:
        return [replace(g) for g in self.grants.values() if g.pod == pod]
