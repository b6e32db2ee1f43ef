"""Several processes of one seed (replicas, workers) redeeming, settling and paying out on one
Redis ledger, against the in-memory mint: one swap per token whoever sees it first, a process
that dies mid-swap is covered by another, two withdrawals never hand out the same proof."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest_asyncio

from paygress.cashu.models import Proof, Token
from paygress.cashu.token import parse_token
from paygress.core.ledger import NewSwap, SwapKind
from paygress.core.model import Grant, Received
from paygress.core.ports import PaymentRejected, SettledMeanwhile
from paygress.store.redis import RedisStore
from paygress.wallet import OperatorWallet, WalletError
from tests.peers.redis import RedisServer
from tests.unit.store.conftest import redis_server, redis_store  # noqa: F401  (a fixture)

from .test_operator import URL, Mint, fp, grant_for, wallet_on


@dataclass
class Process:
    store: RedisStore
    wallet: OperatorWallet

    async def redeem(self, token: Token) -> Grant:
        """As the gate does: a token the store knows is not swapped, and one that another
        process swapped meanwhile (settled, or "spent" at the mint) is read from the store."""
        stored = await self.store.grants.get_grant(fp(token))
        if stored is not None:
            return stored
        verified = await self.wallet.verify(token)
        try:
            return await self.wallet.redeem(verified, fp(token), grant_for(token), lambda: None)
        except (SettledMeanwhile, PaymentRejected):
            grant = await self.store.grants.get_grant(fp(token))
            assert grant is not None
            return grant


@pytest_asyncio.fixture
async def processes(redis_server: RedisServer) -> AsyncIterator[tuple[Mint, list[Process]]]:  # noqa: F811
    mint = Mint(fee_ppk=100)
    prefix = f"t-{secrets.token_hex(6)}"
    found = []
    for _ in range(3):
        store = redis_store(redis_server, prefix, claim_seconds=0.3)
        await store.open("seed")
        found.append(Process(store, wallet_on(store.ledger, mint, claim_seconds=0.3)))
    yield mint, found
    for p in found:
        await p.wallet.aclose()
        await p.store.close()


async def test_one_token_at_three_processes_at_once_is_swapped_once(
    processes: tuple[Mint, list[Process]],
) -> None:
    mint, procs = processes
    token = mint.token(8, 4, 2)
    grants = await asyncio.gather(*(p.redeem(token) for p in procs * 3))
    assert {g.id for g in grants} == {fp(token)} and {g.paid for g in grants} == {13}
    assert mint.calls("/v1/swap") == 1
    balances = [await p.wallet.balances() for p in procs]
    assert all(sum(b.spendable for b in found) == 13 for found in balances)


async def test_a_process_that_dies_mid_swap_is_covered_by_another(
    processes: tuple[Mint, list[Process]],
) -> None:
    mint, (dead, alive, _) = processes
    token = mint.token(8)
    verified = await dead.wallet.verify(token)
    keyset, _ = await dead.wallet.keysets(URL).active()
    # The dead process recorded its swap (and may have sent it): then nothing more.
    grant = grant_for(token)(Received(amount_in=8, fee=verified.fee))
    await dead.store.ledger.begin_swap(
        NewSwap(
            fp(token), SwapKind.REDEEM, URL, "sat", keyset.id, (4, 2, 1), verified.inputs, grant
        )
    )
    assert await alive.wallet.recover_pending() == 0, "claimed by the other: not touched"
    await asyncio.sleep(0.35)
    assert await alive.wallet.recover_pending() == 1
    assert mint.calls("/v1/swap") == 1
    assert sum(b.spendable for b in await alive.wallet.balances()) == 7
    assert (await alive.redeem(token)).paid == 7, "the payer is served"
    assert mint.calls("/v1/swap") == 1


async def test_withdrawals_at_two_processes_never_hand_out_one_proof_twice(
    processes: tuple[Mint, list[Process]],
) -> None:
    mint, (a, b, _) = processes
    for amounts in ((8,), (4,), (2,), (1,), (1,)):
        await a.redeem(mint.token(*amounts, 1))  # each credited with its face value
    outcomes = await asyncio.gather(
        *(p.wallet.withdraw(n) for p, n in ((a, 8), (b, 8), (a, 4), (b, 2))),
        return_exceptions=True,
    )
    tokens = [o for o in outcomes if isinstance(o, tuple)]
    refused = [o for o in outcomes if isinstance(o, WalletError)]
    assert len(tokens) + len(refused) == 4 and not [
        o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, WalletError)
    ]
    secrets_out = [p.secret for t, _, _ in tokens for p in _proofs(t)]
    assert len(secrets_out) == len(set(secrets_out)), "no proof handed out twice"
    spendable, pending = 0, 0
    for balance in await b.wallet.ledger.balances():
        spendable, pending = spendable + balance.spendable, pending + balance.pending
    assert pending == sum(amount for _, _, amount in tokens)
    assert spendable + pending <= 16


def _proofs(token: str) -> tuple[Proof, ...]:
    return parse_token(token).proofs
