from pathlib import Path

import pytest
from coincurve import PrivateKey

from paygress.cashu.models import Proof
from paygress.core.model import Grant
from paygress.core.pricing import Mode
from paygress.store.sqlite import PendingSwap, SqliteStore, StoreError

MINT = "http://mint.test"


def proof(amount: int, n: int) -> Proof:
    return Proof(
        keyset_id="00ad268c4d1f5826",
        amount=amount,
        secret=f"{n:064x}",
        C=PrivateKey().public_key.format().hex(),
    )


def grant(gid: str = "g1", left: int = 3) -> Grant:
    return Grant(
        id=gid,
        route="api",
        mode=Mode.PER_REQUEST,
        unit="sat",
        mint=MINT,
        paid=12,
        created_at=1.0,
        requests_left=left,
    )


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = SqliteStore(tmp_path / "state" / "p.db")
    await s.open("seed-a")
    yield s
    await s.close()


async def test_commit_swap_stores_proofs_and_grant_atomically(store: SqliteStore) -> None:
    await store.begin_swap(PendingSwap("fp", MINT, "sat", "00ad", 0, (8, 4), grant()))
    assert [s.fingerprint for s in await store.pending_swaps()] == ["fp"]
    pending = await store.get_swap("fp")
    assert pending is not None and pending.grant == grant()
    await store.commit_swap("fp", MINT, "sat", [proof(8, 1), proof(4, 2)], grant=grant())
    assert await store.pending_swaps() == []
    assert await store.get_grant("g1") == grant()
    [balance] = await store.balances()
    assert (balance.mint, balance.spendable, balance.pending) == (MINT, 12, 0)


async def test_usage_and_active_grants(store: SqliteStore) -> None:
    timed = Grant("g2", "live", Mode.PER_SECOND, "sat", MINT, 5, 1.0, expires_at=100.0)
    await store.commit_swap("a", MINT, "sat", [], grant=grant())
    await store.commit_swap("b", MINT, "sat", [], grant=timed)
    assert {g.id for g in await store.load_active_grants(now=50)} == {"g1", "g2"}
    assert {g.id for g in await store.load_active_grants(now=150)} == {"g1"}
    used = grant(left=0)
    await store.save_usage([used])
    assert await store.load_active_grants(now=50) == [timed]
    assert (await store.get_grant("g1")).requests_left == 0  # type: ignore[union-attr]


async def test_counters_are_reserved_in_ranges(store: SqliteStore) -> None:
    assert await store.reserve_counters("k1", 3) == 0
    assert await store.reserve_counters("k1", 2) == 3
    assert await store.reserve_counters("k2", 1) == 0
    assert await store.reserve_counters("k1", 1) == 5


async def test_withdrawal_is_pending_until_settled(store: SqliteStore) -> None:
    proofs = [proof(8, 1), proof(4, 2), proof(2, 3)]
    await store.commit_swap("fp", MINT, "sat", proofs)
    await store.mark_withdrawn("w1", MINT, "sat", proofs[:2])
    [balance] = await store.balances()
    assert (balance.spendable, balance.pending) == (2, 12)
    assert [p.amount for p in await store.unspent_proofs(MINT, "sat")] == [2]
    assert len(await store.pending_withdrawn()) == 2
    await store.settle_withdrawn([proofs[0].y()])
    [balance] = await store.balances()
    assert (balance.spendable, balance.pending) == (2, 4)


async def test_state_survives_reopen_and_refuses_another_seed(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    s = SqliteStore(path)
    await s.open("seed-a")
    await s.commit_swap("fp", MINT, "sat", [proof(8, 1)], grant=grant())
    await s.close()
    s = SqliteStore(path)
    await s.open("seed-a")
    assert await s.get_grant("g1") == grant()
    await s.close()
    other = SqliteStore(path)
    with pytest.raises(StoreError, match="another wallet seed"):
        await other.open("seed-b")
    await other.close()
