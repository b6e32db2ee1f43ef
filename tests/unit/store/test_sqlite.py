"""The SQLite store: both ports on one database, its migration, and its file permissions."""

import os
import sqlite3
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio
from coincurve import PrivateKey

from paygress.cashu.models import Proof
from paygress.core.ledger import LedgerError, NewSwap, SwapKind
from paygress.core.model import Grant
from paygress.core.pricing import Mode
from paygress.store.sqlite import SqliteStore

MINT = "http://mint.test"
KEYSET = "00ad268c4d1f5826"


def proof(amount: int, n: int) -> Proof:
    return Proof(
        keyset_id=KEYSET,
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


def redeem(sid: str, amounts: tuple[int, ...], g: Grant | None = None) -> NewSwap:
    return NewSwap(sid, SwapKind.REDEEM, MINT, "sat", KEYSET, amounts, (proof(16, 99),), g)


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state" / "p.db")
    await s.open("seed-a")
    yield s
    await s.close()


async def test_settling_a_swap_stores_proofs_and_grant_atomically(store: SqliteStore) -> None:
    record = await store.ledger.begin_swap(redeem("fp", (8, 4), grant()))
    assert record.counters == (0, 1) and not record.unknown
    assert [r.id for r in await store.ledger.swap_records()] == ["fp"]
    assert await store.ledger.swap_record("fp") == record
    await store.ledger.settle_swap(record, [proof(8, 1), proof(4, 2)])
    await store.ledger.settle_swap(record, [proof(8, 1), proof(4, 2)])  # idempotent
    assert await store.ledger.swap_records() == []
    assert await store.grants.get_grant("g1") == grant()
    [balance] = await store.ledger.balances()
    assert (balance.mint, balance.spendable, balance.pending) == (MINT, 12, 0)


async def test_usage_and_active_grants(store: SqliteStore) -> None:
    timed = Grant("g2", "live", Mode.PER_SECOND, "sat", MINT, 5, 1.0, expires_at=100.0)
    for sid, g in (("a", grant()), ("b", timed)):
        await store.ledger.settle_swap(await store.ledger.begin_swap(redeem(sid, (1,), g)), [])
    assert {g.id for g in await store.grants.load_active_grants(now=50)} == {"g1", "g2"}
    assert {g.id for g in await store.grants.load_active_grants(now=150)} == {"g1"}
    await store.grants.save_usage([grant(left=0)])
    assert await store.grants.load_active_grants(now=50) == [timed]
    assert (await store.grants.get_grant("g1")).requests_left == 0  # type: ignore[union-attr]


async def test_counters_come_lowest_free_first_then_past_the_mark(store: SqliteStore) -> None:
    ledger = store.ledger
    a = await ledger.begin_swap(redeem("a", (1, 1, 1)))
    b = await ledger.begin_swap(redeem("b", (1, 1)))
    assert (a.counters, b.counters) == ((0, 1, 2), (3, 4))
    assert await ledger.counter_mark(KEYSET) == 5
    # Refused for good: a's outputs were never signed, so its counters are reused...
    await ledger.abandon_swap(a, release_counters=True)
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


async def test_a_withdrawal_swap_reserves_its_inputs_until_settled(store: SqliteStore) -> None:
    ledger = store.ledger
    funds = [proof(8, 1), proof(4, 2)]
    await ledger.settle_swap(await ledger.begin_swap(redeem("in", (8, 4))), funds)
    withdraw = NewSwap("withdraw:w1", SwapKind.WITHDRAW, MINT, "sat", KEYSET, (4, 3), (funds[0],))
    record = await ledger.begin_swap(withdraw)
    assert [p.amount for p in await ledger.unspent_proofs(MINT, "sat")] == [4]
    [balance] = await ledger.balances()
    assert balance.spendable == 12  # reserved is still ours
    await ledger.abandon_swap(record, release_counters=True)
    assert sorted(p.amount for p in await ledger.unspent_proofs(MINT, "sat")) == [4, 8]
    record = await ledger.begin_swap(withdraw)
    await ledger.settle_swap(record, [proof(4, 3), proof(2, 4), proof(1, 5)])
    assert sorted(p.amount for p in await ledger.unspent_proofs(MINT, "sat")) == [1, 2, 4, 4]


async def test_withdrawal_is_pending_until_settled(store: SqliteStore) -> None:
    ledger = store.ledger
    proofs = [proof(8, 1), proof(4, 2), proof(2, 3)]
    await ledger.settle_swap(await ledger.begin_swap(redeem("fp", (8, 4, 2))), proofs)
    await ledger.mark_withdrawn("w1", MINT, "sat", proofs[:2])
    [balance] = await ledger.balances()
    assert (balance.spendable, balance.pending) == (2, 12)
    assert [p.amount for p in await ledger.unspent_proofs(MINT, "sat")] == [2]
    assert len(await ledger.pending_withdrawn()) == 2
    await ledger.settle_withdrawn([proofs[0].y()])
    [balance] = await ledger.balances()
    assert (balance.spendable, balance.pending) == (2, 4)


async def test_records_left_by_an_earlier_process_are_unknown(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    s = SqliteStore(path)
    await s.open("seed-a")
    record = await s.ledger.begin_swap(redeem("fp", (8,), grant()))
    assert not record.unknown
    await s.close()
    s = SqliteStore(path)
    await s.open("seed-a")
    again = await s.ledger.swap_record("fp")
    assert again is not None and again.unknown and again.inputs == record.inputs
    assert again.grant == grant() and again.counters == record.counters
    await s.close()


async def test_state_survives_reopen_and_refuses_another_seed(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    s = SqliteStore(path)
    await s.open("seed-a")
    await s.ledger.settle_swap(await s.ledger.begin_swap(redeem("fp", (8,), grant())), [])
    await s.close()
    s = SqliteStore(path)
    await s.open("seed-a")
    assert await s.grants.get_grant("g1") == grant()
    await s.close()
    other = SqliteStore(path)
    with pytest.raises(LedgerError, match="another wallet seed"):
        await other.open("seed-b")
    await other.close()


async def test_the_state_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        s = SqliteStore(tmp_path / "state" / "p.db")
        await s.open("seed-a")
        await s.ledger.settle_swap(await s.ledger.begin_swap(redeem("fp", (8,))), [proof(8, 1)])
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "state").iterdir()}
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert modes["p.db"] == 0o600 and modes.get("p.db-wal", 0o600) == 0o600
    assert all(mode == 0o600 for mode in modes.values()), modes
    await s.close()


SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE counters (keyset_id TEXT PRIMARY KEY, next INTEGER NOT NULL);
CREATE TABLE proofs (
    y TEXT PRIMARY KEY, mint TEXT NOT NULL, unit TEXT NOT NULL, keyset_id TEXT NOT NULL,
    amount INTEGER NOT NULL, secret TEXT NOT NULL, c TEXT NOT NULL, dleq TEXT,
    state TEXT NOT NULL DEFAULT 'unspent' CHECK (state IN ('unspent', 'pending', 'spent')),
    withdrawal_id TEXT, created_at REAL NOT NULL
);
CREATE INDEX proofs_by_state ON proofs (mint, unit, state);
CREATE TABLE grants (
    id TEXT PRIMARY KEY, route TEXT NOT NULL, mode TEXT NOT NULL, unit TEXT NOT NULL,
    mint TEXT NOT NULL, paid INTEGER NOT NULL, requests_left INTEGER NOT NULL,
    expires_at REAL NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    pod TEXT NOT NULL DEFAULT ''
);
CREATE TABLE swaps (
    fingerprint TEXT PRIMARY KEY, mint TEXT NOT NULL, unit TEXT NOT NULL,
    keyset_id TEXT NOT NULL, counter_start INTEGER NOT NULL, amounts TEXT NOT NULL,
    grant_json TEXT, created_at REAL NOT NULL
);
CREATE TABLE withdrawals (
    id TEXT PRIMARY KEY, mint TEXT NOT NULL, unit TEXT NOT NULL, amount INTEGER NOT NULL,
    state TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL
);
INSERT INTO meta VALUES ('seed_id', 'seed-a'), ('schema_version', '1');
INSERT INTO counters VALUES ('00ad268c4d1f5826', 12);
INSERT INTO swaps VALUES ('fp1', 'http://mint.test', 'sat', '00ad268c4d1f5826', 10, '[1, 1]',
    NULL, 5.0);
"""


async def test_a_schema_1_database_is_migrated_with_its_open_swaps(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_1)
    p = proof(8, 1)
    db.execute(
        "INSERT INTO proofs VALUES (?, ?, 'sat', ?, 8, ?, ?, NULL, 'unspent', NULL, 1.0)",
        (p.y(), MINT, KEYSET, p.secret, p.C),
    )
    db.commit()
    db.close()
    s = SqliteStore(path)
    await s.open("seed-a")
    [record] = await s.ledger.swap_records()
    assert (record.id, record.counters, record.amounts) == ("fp1", (10, 11), (1, 1))
    assert record.unknown and record.inputs == ()
    assert [q.amount for q in await s.ledger.unspent_proofs(MINT, "sat")] == [8]
    assert await s.ledger.counter_mark(KEYSET) == 12
    await s.close()
    s = SqliteStore(path)  # opening again is a no-op
    await s.open("seed-a")
    assert len(await s.ledger.swap_records()) == 1
    await s.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('schema_version', '99')")
    db.commit()
    db.close()
    s = SqliteStore(path)
    with pytest.raises(LedgerError, match="newer"):
        await s.open("seed-a")
    await s.close()


async def test_no_more_counters_than_restore_crosses_are_held_by_open_swaps(
    store: SqliteStore,
) -> None:
    from paygress.core.ledger import RESTORE_GAP_COUNTERS, CountersBusy

    ledger = store.ledger
    big = await ledger.begin_swap(redeem("a", (1,) * (RESTORE_GAP_COUNTERS - 1)))
    await ledger.begin_swap(redeem("b", (1,)))
    with pytest.raises(CountersBusy):
        await ledger.begin_swap(redeem("c", (1,)))
    await ledger.abandon_swap(big, release_counters=True)
    assert (await ledger.begin_swap(redeem("c", (1,)))).counters == (0,)


async def test_locked_proofs_are_queued_with_their_grant_and_swapped_whole_tokens_at_a_time(
    store: SqliteStore,
) -> None:
    from paygress.core.ledger import ProofsKnown, QueueFull

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


async def test_locked_proofs_spent_by_someone_else_are_kept_as_lost(store: SqliteStore) -> None:
    ledger = store.ledger
    await ledger.accept_locked("fa", MINT, "sat", [proof(4, 10)], grant("fa"), max_queue=10)
    [locked] = await ledger.locked_queue(limit=10)
    settle = NewSwap("settle:1", SwapKind.SETTLE, MINT, "sat", KEYSET, (3,), (locked.proof,))
    record = await ledger.begin_swap(settle)
    await ledger.abandon_swap(record, release_counters=True, inputs_spent=True)
    assert await ledger.locked_queue(limit=10) == []
    assert await ledger.locked_summary() == (0, 0.0)
