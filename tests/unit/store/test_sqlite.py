"""The SQLite store beyond the contract both backends keep (test_contract.py): records of an
earlier process, the seed it belongs to, its migrations, its file permissions, forfeited leases."""

import os
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from paygress.core.ledger import LedgerError
from paygress.store.sqlite import SqliteStore

from .test_contract import KEYSET, MINT, grant, proof, redeem


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state" / "p.db")
    await s.open("seed-a")
    yield s
    await s.close()


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


async def test_leases_of_an_earlier_process_are_forfeited_not_given_back(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    s = SqliteStore(path)
    await s.open("seed-a")
    await s.ledger.settle_swap(await s.ledger.begin_swap(redeem("fp", (8,), grant(left=5))), [])
    await s.grants.lease("g1", 2)  # then the process dies: how many it served is not known
    await s.close()
    s = SqliteStore(path)
    await s.open("seed-a")
    await s.grants.give_back({"g1": 0})  # another life: not its lease
    assert (await s.grants.get_grant("g1")).requests_left == 3  # type: ignore[union-attr]
    await s.close()
