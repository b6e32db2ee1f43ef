"""The contract of both ports (GrantStore, Ledger), held by every store backend alike: SQLite
in-process and Redis against a real redis-server."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from coincurve import PrivateKey

from paygress.cashu.models import Proof
from paygress.core.ledger import (
    RESTORE_GAP_COUNTERS,
    CountersBusy,
    NewSwap,
    ProofsKnown,
    ProofsTaken,
    QueueFull,
    SwapExists,
    SwapKind,
)
from paygress.core.model import Grant
from paygress.core.ports import Lease
from paygress.core.pricing import Mode

from .conftest import Store

MINT = "http://mint.test"
KEYSET = "00ad268c4d1f5826"


def proof(amount: int, n: int) -> Proof:
    return Proof(
        keyset_id=KEYSET,
        amount=amount,
        secret=f"{n:064x}",
        C=PrivateKey().public_key.format().hex(),
    )


def grant(gid: str = "g1", left: int = 3, pod: str = "") -> Grant:
    return Grant(
        id=gid,
        route="api",
        mode=Mode.PER_REQUEST,
        unit="sat",
        mint=MINT,
        paid=12,
        created_at=1.0,
        requests_left=left,
        pod=pod,
    )


def timed(gid: str = "g2", expires: float = 100.0, pod: str = "") -> Grant:
    return Grant(gid, "live", Mode.PER_SECOND, "sat", MINT, 5, 1.0, expires_at=expires, pod=pod)


def redeem(sid: str, amounts: tuple[int, ...], g: Grant | None = None) -> NewSwap:
    return NewSwap(sid, SwapKind.REDEEM, MINT, "sat", KEYSET, amounts, (proof(16, 99),), g)


async def paid(store: Store, g: Grant, sid: str | None = None) -> None:
    """A redemption settled: its grant is in the store."""
    record = await store.ledger.begin_swap(redeem(sid or g.id, (1,), g))
    await store.ledger.settle_swap(record, [])


async def test_settling_a_swap_stores_proofs_and_grant_atomically(store: Store) -> None:
    record = await store.ledger.begin_swap(redeem("fp", (8, 4), grant()))
    assert record.counters == (0, 1) and not record.unknown
    assert [r.id for r in await store.ledger.swap_records()] == ["fp"]
    assert await store.ledger.swap_record("fp") == record
    assert await store.grants.get_grant("g1") is None, "no grant before the proofs"
    await store.ledger.settle_swap(record, [proof(8, 1), proof(4, 2)])
    await store.ledger.settle_swap(record, [proof(8, 1), proof(4, 2)])  # idempotent
    assert await store.ledger.swap_records() == []
    assert await store.ledger.swap_record("fp") is None
    assert await store.grants.get_grant("g1") == grant()
    [balance] = await store.ledger.balances()
    assert (balance.mint, balance.spendable, balance.pending) == (MINT, 12, 0)


async def test_a_second_record_for_one_token_is_refused(store: Store) -> None:
    await store.ledger.begin_swap(redeem("fp", (8,), grant()))
    with pytest.raises(SwapExists):
        await store.ledger.begin_swap(redeem("fp", (8,), grant()))
    assert [r.counters for r in await store.ledger.swap_records()] == [(0,)], "nothing reserved"
    assert await store.ledger.counter_mark(KEYSET) == 1


async def test_claiming_a_record_returns_it_until_it_is_gone(store: Store) -> None:
    record = await store.ledger.begin_swap(redeem("fp", (8,), grant()))
    assert await store.ledger.claim_swap("fp", 5) == record  # its creator's claim, renewed
    await store.ledger.mark_unknown("fp")
    claimed = await store.ledger.claim_swap("fp", 5)
    assert claimed is not None and claimed.unknown
    await store.ledger.abandon_swap(record, release_counters=True)
    assert await store.ledger.claim_swap("fp", 5) is None


async def test_active_grants_are_time_grants_not_over_and_pools_not_empty(store: Store) -> None:
    await paid(store, grant())
    await paid(store, timed())
    await paid(store, grant("g3", left=0))
    assert {g.id for g in await store.grants.load_active_grants(now=50)} == {"g1", "g2"}
    assert {g.id for g in await store.grants.load_active_grants(now=150)} == {"g1"}
    assert await store.grants.lease("g1", 3) == Lease(held=3, pool=0, elsewhere=False)
    assert await store.grants.load_active_grants(now=150) == []
    await store.grants.give_back({"g1": 1})
    [active] = await store.grants.load_active_grants(now=150)
    assert (active.id, active.requests_left) == ("g1", 2)


async def test_a_lease_moves_requests_from_the_pool_and_gives_back_the_unused(
    store: Store,
) -> None:
    await paid(store, grant(left=10))
    assert await store.grants.lease("g1", 4) == Lease(held=4, pool=6, elsewhere=False)
    assert await store.grants.lease("g1", 4) == Lease(held=8, pool=2, elsewhere=False)
    assert await store.grants.lease("g1", 4) == Lease(held=10, pool=0, elsewhere=False)
    assert await store.grants.lease("g1", 4) == Lease(held=10, pool=0, elsewhere=False)
    assert (await store.grants.get_grant("g1")).requests_left == 0  # type: ignore[union-attr]
    await store.grants.give_back({"g1": 7})  # 7 of 10 served: 3 back
    await store.grants.give_back({"g1": 0})  # a lease ends once: done again, nothing more
    assert (await store.grants.get_grant("g1")).requests_left == 3  # type: ignore[union-attr]
    assert await store.grants.lease("g1", 5) == Lease(held=3, pool=0, elsewhere=False)
    await store.grants.give_back({"g1": 3})
    assert (await store.grants.get_grant("g1")).requests_left == 0  # type: ignore[union-attr]


async def test_a_time_grant_lease_or_unknown_grant_has_nothing(store: Store) -> None:
    await paid(store, timed())
    assert await store.grants.lease("g2", 3) == Lease(0, 0, False)
    assert await store.grants.lease("nope", 3) == Lease(0, 0, False)
    await store.grants.give_back({"nope": 0})


async def test_ends_only_move_later_and_pods_know_their_grants(store: Store) -> None:
    await paid(store, timed("a", 100.0, pod="pg-1"))
    await paid(store, timed("b", 150.0, pod="pg-1"))
    await paid(store, timed("c", 150.0, pod="pg-2"))
    await store.grants.save_expiry([replace(timed("a", 300.0)), replace(timed("b", 50.0))])
    ends = {g.id: g.expires_at for g in await store.grants.grants_of_pod("pg-1")}
    assert ends == {"a": 300.0, "b": 150.0}
    assert await store.grants.grants_of_pod("pg-3") == []
    assert {g.id for g in await store.grants.load_active_grants(now=200)} == {"a"}


async def test_counters_come_lowest_free_first_then_past_the_mark(store: Store) -> None:
    ledger = store.ledger
    a = await ledger.begin_swap(redeem("a", (1, 1, 1)))
    b = await ledger.begin_swap(redeem("b", (1, 1)))
    assert (a.counters, b.counters) == ((0, 1, 2), (3, 4))
    assert await ledger.counter_mark(KEYSET) == 5
    # Refused for good: a's outputs were never signed, so its counters are reused...
    await ledger.abandon_swap(a, release_counters=True)
    await ledger.abandon_swap(a, release_counters=True)  # done again: nothing twice
    c = await ledger.begin_swap(redeem("c", (1, 1)))
    assert c.counters == (0, 1)
    d = await ledger.begin_swap(redeem("d", (1, 1, 1)))
    assert d.counters == (2, 5, 6) and await ledger.counter_mark(KEYSET) == 7
    # ...but not those whose outputs may be signed (abandoned without release).
    await ledger.abandon_swap(b, release_counters=False)
    e = await ledger.begin_swap(redeem("e", (1,)))
    assert e.counters == (7,)
    await ledger.advance_counter(KEYSET, 3)  # never back
    assert await ledger.counter_mark(KEYSET) == 8
    await ledger.advance_counter(KEYSET, 20)
    assert (await ledger.begin_swap(redeem("f", (1,)))).counters == (20,)


async def test_concurrent_swaps_never_share_a_counter(store: Store) -> None:
    records = await asyncio.gather(
        *(store.ledger.begin_swap(redeem(f"s{i}", (1,) * (i % 5 + 1))) for i in range(40))
    )
    counters = [c for r in records for c in r.counters]
    assert sorted(counters) == list(range(len(counters)))


async def test_no_more_counters_than_restore_crosses_are_held_by_open_swaps(
    store: Store,
) -> None:
    ledger = store.ledger
    big = await ledger.begin_swap(redeem("a", (1,) * (RESTORE_GAP_COUNTERS - 1)))
    await ledger.begin_swap(redeem("b", (1,)))
    with pytest.raises(CountersBusy):
        await ledger.begin_swap(redeem("c", (1,)))
    await ledger.abandon_swap(big, release_counters=True)
    assert (await ledger.begin_swap(redeem("c", (1,)))).counters == (0,)


async def test_a_withdrawal_swap_reserves_its_inputs_until_settled(store: Store) -> None:
    ledger = store.ledger
    funds = [proof(8, 1), proof(4, 2)]
    await ledger.settle_swap(await ledger.begin_swap(redeem("in", (8, 4))), funds)
    withdraw = NewSwap("withdraw:w1", SwapKind.WITHDRAW, MINT, "sat", KEYSET, (4, 3), (funds[0],))
    record = await ledger.begin_swap(withdraw)
    assert [p.amount for p in await ledger.unspent_proofs(MINT, "sat")] == [4]
    [balance] = await ledger.balances()
    assert balance.spendable == 12  # reserved is still ours
    other = NewSwap("withdraw:w2", SwapKind.WITHDRAW, MINT, "sat", KEYSET, (4,), (funds[0],))
    with pytest.raises(ProofsTaken):  # another withdrawal chose the same proof
        await ledger.begin_swap(other)
    assert await ledger.swap_record("withdraw:w2") is None
    await ledger.abandon_swap(record, release_counters=True)
    assert sorted(p.amount for p in await ledger.unspent_proofs(MINT, "sat")) == [4, 8]
    record = await ledger.begin_swap(withdraw)
    await ledger.settle_swap(record, [proof(4, 3), proof(2, 4), proof(1, 5)])
    assert sorted(p.amount for p in await ledger.unspent_proofs(MINT, "sat")) == [1, 2, 4, 4]
    [balance] = await ledger.balances()
    assert balance.spendable == 11  # 8 spent in the swap; the mint's fee of 1 is gone


async def test_withdrawal_is_pending_until_settled(store: Store) -> None:
    ledger = store.ledger
    proofs = [proof(8, 1), proof(4, 2), proof(2, 3)]
    await ledger.settle_swap(await ledger.begin_swap(redeem("fp", (8, 4, 2))), proofs)
    await ledger.mark_withdrawn("w1", MINT, "sat", proofs[:2])
    await ledger.mark_withdrawn("w1", MINT, "sat", proofs[:2])  # done again: no change
    with pytest.raises(ProofsTaken):
        await ledger.mark_withdrawn("w2", MINT, "sat", proofs[1:])
    [balance] = await ledger.balances()
    assert (balance.spendable, balance.pending) == (2, 12)
    assert [p.amount for p in await ledger.unspent_proofs(MINT, "sat")] == [2]
    pending = await ledger.pending_withdrawn()
    assert sorted((w, m, p.amount) for w, m, p in pending) == [("w1", MINT, 4), ("w1", MINT, 8)]
    await ledger.settle_withdrawn([proofs[0].y()])
    [balance] = await ledger.balances()
    assert (balance.spendable, balance.pending) == (2, 4)


async def test_restored_proofs_are_added_once_and_spent_ones_marked(store: Store) -> None:
    ledger = store.ledger
    held = [proof(8, 1), proof(4, 2)]
    await ledger.settle_swap(await ledger.begin_swap(redeem("fp", (8, 4))), held)
    found = [held[0], proof(2, 3), proof(1, 4)]
    new = await ledger.add_restored(MINT, "sat", found, spent_ys=[held[1].y()])
    assert [p.amount for p in new] == [2, 1]
    assert await ledger.add_restored(MINT, "sat", found, []) == []
    [balance] = await ledger.balances()
    assert balance.spendable == 11
    assert {p.secret for p in await ledger.unspent_proofs(MINT, "sat")} == {p.secret for p in found}


async def test_locked_proofs_are_queued_with_their_grant_and_swapped_whole_tokens_at_a_time(
    store: Store,
) -> None:
    ledger = store.ledger
    a, b = [proof(4, 10), proof(2, 11)], [proof(8, 12)]
    await ledger.accept_locked("fa", MINT, "sat", a, grant("fa"), max_queue=10)
    await ledger.accept_locked("fb", MINT, "sat", b, grant("fb"), max_queue=10)
    assert await store.grants.get_grant("fa") == grant("fa")
    with pytest.raises(ProofsKnown):  # the same proof in another token
        await ledger.accept_locked("fc", MINT, "sat", [a[0]], grant("fc"), max_queue=10)
    with pytest.raises(QueueFull):
        await ledger.accept_locked("fd", MINT, "sat", [proof(1, 13)] * 8, grant("fd"), max_queue=10)
    assert await store.grants.get_grant("fc") is None  # nothing of a refusal is kept
    count, oldest = await ledger.locked_summary()
    assert count == 3 and oldest > 0
    batch = await ledger.locked_queue(limit=2)  # whole tokens: "fa" (2 proofs) only
    assert [lp.fingerprint for lp in batch] == ["fa", "fa"]
    settle = NewSwap(
        "settle:1", SwapKind.SETTLE, MINT, "sat", KEYSET, (5,), tuple(lp.proof for lp in batch)
    )
    record = await ledger.begin_swap(settle)
    with pytest.raises(ProofsKnown):  # another worker cannot take them twice
        await ledger.begin_swap(replace(settle, id="settle:2"))
    assert [lp.fingerprint for lp in await ledger.locked_queue(limit=10)] == ["fb"]
    await ledger.abandon_swap(record, release_counters=True)  # back to the queue
    assert len(await ledger.locked_queue(limit=10)) == 3
    record = await ledger.begin_swap(settle)
    await ledger.settle_swap(record, [proof(4, 20), proof(1, 21)])
    assert await ledger.locked_summary() == (1, (await ledger.locked_queue(10))[0].accepted_at)
    [balance] = await ledger.balances()
    assert balance.spendable == 5
    # A proof once ours can never be accepted offline again.
    with pytest.raises(ProofsKnown):
        await ledger.accept_locked("fe", MINT, "sat", [proof(4, 20)], grant("fe"), max_queue=10)


async def test_locked_proofs_spent_by_someone_else_are_kept_as_lost(store: Store) -> None:
    ledger = store.ledger
    await ledger.accept_locked("fa", MINT, "sat", [proof(4, 10)], grant("fa"), max_queue=10)
    [locked] = await ledger.locked_queue(limit=10)
    settle = NewSwap("settle:1", SwapKind.SETTLE, MINT, "sat", KEYSET, (3,), (locked.proof,))
    record = await ledger.begin_swap(settle)
    await ledger.abandon_swap(record, release_counters=True, inputs_spent=True)
    assert await ledger.locked_queue(limit=10) == []
    assert await ledger.locked_summary() == (0, 0.0)


async def test_a_locked_token_accepted_twice_is_accepted_once(store: Store) -> None:
    """Two processes accepting one token at once: the second changes nothing, and fails not."""
    ledger = store.ledger
    proofs = [proof(4, 10), proof(2, 11)]
    await ledger.accept_locked("fa", MINT, "sat", proofs, grant("fa"), max_queue=10)
    await ledger.accept_locked("fa", MINT, "sat", proofs, grant("fa"), max_queue=10)
    assert await ledger.locked_summary() == (2, (await ledger.locked_queue(10))[0].accepted_at)
    with pytest.raises(ProofsKnown):  # part of it again, in another token
        await ledger.accept_locked("fb", MINT, "sat", [proofs[1]], grant("fb"), max_queue=10)
