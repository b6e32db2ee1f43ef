"""One SQLite database (WAL, synchronous=FULL) on one connection, used from one worker thread.

Owns the schema and its migrations, the file permissions (the database holds ecash: the state
directory is 0700 and the files 0600, whatever the umask), and the typed bridge from the event
loop to the worker thread (`run`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sqlite3
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from paygress.core.ledger import LedgerError

P = ParamSpec("P")
T = TypeVar("T")

SCHEMA_VERSION = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (keyset_id TEXT PRIMARY KEY, next INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS free_counters (
    keyset_id TEXT NOT NULL,
    counter INTEGER NOT NULL,
    PRIMARY KEY (keyset_id, counter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS proofs (
    y TEXT PRIMARY KEY,
    mint TEXT NOT NULL,
    unit TEXT NOT NULL,
    keyset_id TEXT NOT NULL,
    amount INTEGER NOT NULL,
    secret TEXT NOT NULL,
    c TEXT NOT NULL,
    dleq TEXT,
    state TEXT NOT NULL DEFAULT 'unspent'
        CHECK (state IN ('unspent', 'reserved', 'pending', 'spent')),
    withdrawal_id TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS proofs_by_state ON proofs (mint, unit, state);
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    mode TEXT NOT NULL,
    unit TEXT NOT NULL,
    mint TEXT NOT NULL,
    paid INTEGER NOT NULL,
    requests_left INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    pod TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS grants_by_pod ON grants (pod) WHERE pod != '';
CREATE TABLE IF NOT EXISTS swaps (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    mint TEXT NOT NULL,
    unit TEXT NOT NULL,
    keyset_id TEXT NOT NULL,
    counters TEXT NOT NULL,
    amounts TEXT NOT NULL,
    inputs TEXT NOT NULL,
    grant_json TEXT,
    unknown INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS locked_proofs (
    y TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    mint TEXT NOT NULL,
    unit TEXT NOT NULL,
    proof TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'swapping', 'lost')),
    swap_id TEXT,
    accepted_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS locked_by_state ON locked_proofs (state, accepted_at);
CREATE TABLE IF NOT EXISTS received_inputs (
    y TEXT PRIMARY KEY,
    swap_id TEXT NOT NULL,
    received_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    grant_id TEXT NOT NULL,
    holder TEXT NOT NULL,
    held INTEGER NOT NULL,
    PRIMARY KEY (grant_id, holder)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS withdrawals (
    id TEXT PRIMARY KEY,
    mint TEXT NOT NULL,
    unit TEXT NOT NULL,
    amount INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""

# Schema 3 adds `leases` (what a process holds of a per_request grant); 2 -> 3 is SCHEMA alone.
# Schema 1 (Paygress 0.1): proofs without the 'reserved' state; swap records with a counter
# range and no inputs. Its records can still be settled by restore (NUT-09), not sent again.
MIGRATE_1_TO_2 = """
ALTER TABLE proofs RENAME TO proofs_v1;
ALTER TABLE swaps RENAME TO swaps_v1;
DROP INDEX IF EXISTS proofs_by_state;
"""
COPY_1_TO_2 = """
INSERT INTO proofs SELECT * FROM proofs_v1;
DROP TABLE proofs_v1;
"""


class SqliteDatabase:
    """The connection and its worker thread. `run(fn, *args)` calls `fn(connection, *args)`
    in the worker thread; `Transaction(connection)` wraps BEGIN IMMEDIATE … COMMIT."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paygress-sqlite")
        self._db: sqlite3.Connection | None = None

    async def open(self, seed_id: str) -> None:
        """Opens (creating, migrating) the database and checks it belongs to `seed_id`."""
        await self._call(self._open, seed_id)

    async def close(self) -> None:
        await self._call(self._close)
        self._executor.shutdown(wait=True)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` in the worker thread (the only thread that uses the
        connection)."""
        return await self._call(fn, *args, **kwargs)

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    @property
    def connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise LedgerError("the database is not open")
        return self._db

    def tx(self) -> Transaction:
        return Transaction(self.connection)

    # -- in the worker thread ---------------------------------------------------------------

    def _open(self, seed_id: str) -> None:
        _private_directory(self.path.parent)
        _private_file(self.path)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        self._db = db
        try:
            self._migrate(db, seed_id)
        except BaseException:
            db.close()
            self._db = None
            raise
        for suffix in ("-wal", "-shm"):  # SQLite copies the database's mode; older files
            sidecar = self.path.with_name(self.path.name + suffix)
            if sidecar.exists():
                _private_file(sidecar)

    def _migrate(self, db: sqlite3.Connection, seed_id: str) -> None:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = SCHEMA_VERSION
        if "meta" in tables:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            version = int(meta.get("schema_version", "1"))
            if version > SCHEMA_VERSION:
                raise LedgerError(f"{self.path}: schema {version} is newer than this Paygress")
            if meta.get("seed_id", seed_id) != seed_id:
                raise LedgerError(
                    f"{self.path} belongs to another wallet seed; refusing to mix ecash. "
                    "Use the mnemonic this database was created with, or another state_dir."
                )
        with Transaction(db) as tx:
            if version == 1:
                tx.executescript_in_tx(MIGRATE_1_TO_2)
            tx.executescript_in_tx(SCHEMA)
            if version == 1:
                tx.executescript_in_tx(COPY_1_TO_2)
                _copy_swaps_1_to_2(tx)
            tx.execute("INSERT OR IGNORE INTO meta VALUES ('seed_id', ?)", (seed_id,))
            tx.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> _Cursor:
        self.db.execute("BEGIN IMMEDIATE")
        return _Cursor(self.db)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


class _Cursor:
    """The connection inside a transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.execute = db.execute
        self.executemany = db.executemany

    def executescript_in_tx(self, script: str) -> None:
        """Runs several statements inside the open transaction (executescript would COMMIT)."""
        for statement in script.split(";"):
            if statement.strip():
                self.db.execute(statement)


def _copy_swaps_1_to_2(tx: _Cursor) -> None:
    """Schema 1 records named a counter range; schema 2 lists the counters and the inputs
    (unknown for these: they are settled by restore only). All were open when the old version
    stopped, so their outcome is unknown."""
    rows = tx.execute(
        "SELECT fingerprint, mint, unit, keyset_id, counter_start, amounts, grant_json,"
        " created_at FROM swaps_v1"
    ).fetchall()
    for fp, mint, unit, keyset_id, start, amounts, grant_json, created in rows:
        count = len(json.loads(amounts))
        tx.execute(
            "INSERT INTO swaps (id, kind, mint, unit, keyset_id, counters, amounts, inputs,"
            " grant_json, unknown, created_at) VALUES (?, 'redeem', ?, ?, ?, ?, ?, '[]', ?, 1, ?)",
            (
                fp,
                mint,
                unit,
                keyset_id,
                json.dumps(list(range(start, start + count))),
                amounts,
                grant_json,
                created,
            ),
        )
    tx.execute("DROP TABLE swaps_v1")


def _private_directory(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, 0o700)


def _private_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
