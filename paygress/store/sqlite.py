"""SQLite (WAL, synchronous=FULL) store. One connection, used from one worker thread."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from paygress.cashu.models import DLEQ, Proof
from paygress.core.model import Grant
from paygress.core.pricing import Mode

T = TypeVar("T")

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (keyset_id TEXT PRIMARY KEY, next INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS proofs (
    y TEXT PRIMARY KEY,
    mint TEXT NOT NULL,
    unit TEXT NOT NULL,
    keyset_id TEXT NOT NULL,
    amount INTEGER NOT NULL,
    secret TEXT NOT NULL,
    c TEXT NOT NULL,
    dleq TEXT,
    state TEXT NOT NULL DEFAULT 'unspent' CHECK (state IN ('unspent', 'pending', 'spent')),
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
    fingerprint TEXT PRIMARY KEY,
    mint TEXT NOT NULL,
    unit TEXT NOT NULL,
    keyset_id TEXT NOT NULL,
    counter_start INTEGER NOT NULL,
    amounts TEXT NOT NULL,
    grant_json TEXT,
    created_at REAL NOT NULL
);
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


class StoreError(RuntimeError):
    """The database cannot be used as it is (wrong seed, newer schema)."""


@dataclass(frozen=True, slots=True)
class PendingSwap:
    """A swap sent (or about to be sent) to a mint whose signatures are not yet stored."""

    fingerprint: str
    mint: str
    unit: str
    keyset_id: str
    counter_start: int
    amounts: tuple[int, ...]
    grant: Grant | None


@dataclass(frozen=True, slots=True)
class Balance:
    mint: str
    unit: str
    spendable: int
    pending: int


def grant_to_json(grant: Grant) -> str:
    data = asdict(grant)
    data["mode"] = grant.mode.value
    return json.dumps(data)


def grant_from_json(text: str) -> Grant:
    data = json.loads(text)
    data["mode"] = Mode(data["mode"])
    return Grant(**data)


class SqliteStore:
    """All durable state of one Paygress instance. Async methods run in one worker thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paygress-sqlite")
        self._db: sqlite3.Connection | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self, seed_id: str) -> None:
        """Opens (creating) the database and checks it belongs to the wallet seed `seed_id`."""
        await self._run(lambda: self._open(seed_id))

    def _open(self, seed_id: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        self._db = db
        with self._tx() as tx:
            meta = dict(tx.execute("SELECT key, value FROM meta").fetchall())
            version = int(meta.get("schema_version", SCHEMA_VERSION))
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: schema {version} is newer than this Paygress")
            if meta.get("seed_id", seed_id) != seed_id:
                raise StoreError(
                    f"{self.path} belongs to another wallet seed; refusing to mix ecash. "
                    "Use the mnemonic this database was created with, or another state_dir."
                )
            tx.execute(
                "INSERT OR IGNORE INTO meta VALUES ('seed_id', ?), ('schema_version', ?)",
                (seed_id, str(SCHEMA_VERSION)),
            )

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._run(close)
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _tx(self) -> _Transaction:
        if self._db is None:
            raise StoreError("store is not open")
        return _Transaction(self._db)

    # -- grants (the redeem cache) ---------------------------------------------------------

    async def get_grant(self, grant_id: str) -> Grant | None:
        def get() -> Grant | None:
            with self._tx() as tx:
                row = tx.execute("SELECT * FROM grants WHERE id = ?", (grant_id,)).fetchone()
            return _grant(row) if row else None

        return await self._run(get)

    async def load_active_grants(self, now: float) -> list[Grant]:
        def load() -> list[Grant]:
            with self._tx() as tx:
                rows = tx.execute(
                    "SELECT * FROM grants WHERE (mode = 'per_request' AND requests_left > 0)"
                    " OR (mode != 'per_request' AND expires_at > ?)",
                    (now,),
                ).fetchall()
            return [_grant(r) for r in rows]

        return await self._run(load)

    async def grants_of_pod(self, pod: str) -> list[Grant]:
        def load() -> list[Grant]:
            with self._tx() as tx:
                rows = tx.execute("SELECT * FROM grants WHERE pod = ?", (pod,)).fetchall()
            return [_grant(r) for r in rows]

        return await self._run(load)

    async def save_usage(self, grants: Sequence[Grant]) -> None:
        rows = [(g.requests_left, g.expires_at, time.time(), g.id) for g in grants]

        def save() -> None:
            with self._tx() as tx:
                tx.executemany(
                    "UPDATE grants SET requests_left = ?, expires_at = ?, updated_at = ?"
                    " WHERE id = ?",
                    rows,
                )

        await self._run(save)

    # -- wallet ----------------------------------------------------------------------------

    async def reserve_counters(self, keyset_id: str, count: int) -> int:
        """Reserves `count` NUT-13 counters for a keyset; returns the first."""

        def reserve() -> int:
            with self._tx() as tx:
                row = tx.execute(
                    "SELECT next FROM counters WHERE keyset_id = ?", (keyset_id,)
                ).fetchone()
                start = int(row[0]) if row else 0
                tx.execute(
                    "INSERT INTO counters VALUES (?, ?) ON CONFLICT (keyset_id)"
                    " DO UPDATE SET next = excluded.next",
                    (keyset_id, start + count),
                )
            return start

        return await self._run(reserve)

    async def advance_counter(self, keyset_id: str, at_least: int) -> None:
        """Moves a keyset's next counter forward to `at_least` (never back)."""

        def advance() -> None:
            with self._tx() as tx:
                tx.execute(
                    "INSERT INTO counters VALUES (?, ?) ON CONFLICT (keyset_id)"
                    " DO UPDATE SET next = MAX(next, excluded.next)",
                    (keyset_id, at_least),
                )

        await self._run(advance)

    async def add_restored(
        self, mint: str, unit: str, unspent: Sequence[Proof], spent_ys: Sequence[str]
    ) -> list[Proof]:
        """Adds restored unspent proofs the store did not have; marks mint-spent ones spent.
        Returns the proofs that were new."""

        def add() -> list[Proof]:
            now = time.time()
            with self._tx() as tx:
                known = {
                    row[0]
                    for p in unspent
                    for row in tx.execute("SELECT y FROM proofs WHERE y = ?", (p.y(),))
                }
                new = [p for p in unspent if p.y() not in known]
                tx.executemany(
                    "INSERT INTO proofs (y, mint, unit, keyset_id, amount, secret, c, dleq,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [_proof_row(p, mint, unit, now) for p in new],
                )
                tx.executemany(
                    "UPDATE proofs SET state = 'spent' WHERE y = ? AND state = 'unspent'",
                    [(y,) for y in spent_ys],
                )
            return new

        return await self._run(add)

    async def begin_swap(self, swap: PendingSwap) -> None:
        """Records a swap before it is sent, so its outputs can be restored after a crash."""

        def begin() -> None:
            with self._tx() as tx:
                tx.execute(
                    "INSERT OR REPLACE INTO swaps VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        swap.fingerprint,
                        swap.mint,
                        swap.unit,
                        swap.keyset_id,
                        swap.counter_start,
                        json.dumps(list(swap.amounts)),
                        grant_to_json(swap.grant) if swap.grant else None,
                        time.time(),
                    ),
                )

        await self._run(begin)

    async def pending_swaps(self) -> list[PendingSwap]:
        def load() -> list[PendingSwap]:
            with self._tx() as tx:
                rows = tx.execute("SELECT * FROM swaps ORDER BY created_at").fetchall()
            return [_swap(r) for r in rows]

        return await self._run(load)

    async def get_swap(self, fingerprint: str) -> PendingSwap | None:
        def get() -> PendingSwap | None:
            with self._tx() as tx:
                row = tx.execute(
                    "SELECT * FROM swaps WHERE fingerprint = ?", (fingerprint,)
                ).fetchone()
            return _swap(row) if row else None

        return await self._run(get)

    async def drop_swap(self, fingerprint: str) -> None:
        def drop() -> None:
            with self._tx() as tx:
                tx.execute("DELETE FROM swaps WHERE fingerprint = ?", (fingerprint,))

        await self._run(drop)

    async def commit_swap(
        self,
        fingerprint: str,
        mint: str,
        unit: str,
        proofs: Sequence[Proof],
        *,
        grant: Grant | None = None,
        spent: Iterable[str] = (),
        pending_withdrawal: tuple[str, Sequence[Proof]] | None = None,
    ) -> None:
        """Stores received proofs (and the grant they pay for) in one transaction.

        `spent` names proofs (by Y) consumed as inputs; `pending_withdrawal` marks some of the
        new proofs as handed out in withdrawal `id`.
        """

        def commit() -> None:
            now = time.time()
            with self._tx() as tx:
                tx.executemany(
                    "INSERT OR IGNORE INTO proofs (y, mint, unit, keyset_id, amount, secret, c,"
                    " dleq, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [_proof_row(p, mint, unit, now) for p in proofs],
                )
                tx.executemany(
                    "UPDATE proofs SET state = 'spent' WHERE y = ?", [(y,) for y in spent]
                )
                if pending_withdrawal is not None:
                    wid, handed = pending_withdrawal
                    _mark_pending(tx, wid, mint, unit, handed, now)
                if grant is not None:
                    tx.execute(
                        "INSERT OR IGNORE INTO grants VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            grant.id,
                            grant.route,
                            grant.mode.value,
                            grant.unit,
                            grant.mint,
                            grant.paid,
                            grant.requests_left,
                            grant.expires_at,
                            grant.created_at,
                            now,
                            grant.pod,
                        ),
                    )
                tx.execute("DELETE FROM swaps WHERE fingerprint = ?", (fingerprint,))

        await self._run(commit)

    async def balances(self) -> list[Balance]:
        def load() -> list[Balance]:
            with self._tx() as tx:
                rows = tx.execute(
                    "SELECT mint, unit,"
                    " SUM(CASE WHEN state = 'unspent' THEN amount ELSE 0 END),"
                    " SUM(CASE WHEN state = 'pending' THEN amount ELSE 0 END)"
                    " FROM proofs GROUP BY mint, unit ORDER BY mint, unit"
                ).fetchall()
            return [Balance(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

        return await self._run(load)

    async def unspent_proofs(self, mint: str, unit: str) -> list[Proof]:
        def load() -> list[Proof]:
            with self._tx() as tx:
                rows = tx.execute(
                    "SELECT keyset_id, amount, secret, c, dleq FROM proofs"
                    " WHERE mint = ? AND unit = ? AND state = 'unspent' ORDER BY amount",
                    (mint, unit),
                ).fetchall()
            return [_proof(r) for r in rows]

        return await self._run(load)

    async def mark_withdrawn(
        self, withdrawal_id: str, mint: str, unit: str, proofs: Sequence[Proof]
    ) -> None:
        """Marks proofs handed out in a withdrawal as pending until the mint sees them spent."""

        def mark() -> None:
            with self._tx() as tx:
                _mark_pending(tx, withdrawal_id, mint, unit, proofs, time.time())

        await self._run(mark)

    async def pending_withdrawn(self) -> list[tuple[str, str, Proof]]:
        """(withdrawal id, mint, proof) of every proof handed out but not yet seen spent."""

        def load() -> list[tuple[str, str, Proof]]:
            with self._tx() as tx:
                rows = tx.execute(
                    "SELECT withdrawal_id, mint, keyset_id, amount, secret, c, dleq FROM proofs"
                    " WHERE state = 'pending'"
                ).fetchall()
            return [(r[0], r[1], _proof(r[2:])) for r in rows]

        return await self._run(load)

    async def settle_withdrawn(self, spent_ys: Sequence[str]) -> None:
        """Proofs of withdrawals the mint reports spent are done."""

        def settle() -> None:
            now = time.time()
            with self._tx() as tx:
                tx.executemany(
                    "UPDATE proofs SET state = 'spent' WHERE y = ? AND state = 'pending'",
                    [(y,) for y in spent_ys],
                )
                tx.execute(
                    "UPDATE withdrawals SET state = 'done', updated_at = ? WHERE state ="
                    " 'pending' AND id NOT IN (SELECT withdrawal_id FROM proofs WHERE state ="
                    " 'pending' AND withdrawal_id IS NOT NULL)",
                    (now,),
                )

        await self._run(settle)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _mark_pending(
    tx: sqlite3.Connection,
    withdrawal_id: str,
    mint: str,
    unit: str,
    proofs: Sequence[Proof],
    now: float,
) -> None:
    tx.execute(
        "INSERT INTO withdrawals VALUES (?, ?, ?, ?, 'pending', ?, ?)",
        (withdrawal_id, mint, unit, sum(p.amount for p in proofs), now, now),
    )
    tx.executemany(
        "UPDATE proofs SET state = 'pending', withdrawal_id = ? WHERE y = ? AND state = 'unspent'",
        [(withdrawal_id, p.y()) for p in proofs],
    )


def _proof_row(p: Proof, mint: str, unit: str, now: float) -> tuple[Any, ...]:
    dleq = json.dumps({"e": p.dleq.e, "s": p.dleq.s, "r": p.dleq.r}) if p.dleq else None
    return (p.y(), mint, unit, p.keyset_id, p.amount, p.secret, p.C, dleq, now)


def _proof(row: Sequence[Any]) -> Proof:
    keyset_id, amount, secret, c, dleq = row
    d = json.loads(dleq) if dleq else None
    return Proof(
        keyset_id=keyset_id,
        amount=int(amount),
        secret=secret,
        C=c,
        dleq=DLEQ(e=d["e"], s=d["s"], r=d.get("r")) if d else None,
    )


def _grant(row: Sequence[Any]) -> Grant:
    gid, route, mode, unit, mint, paid, left, expires, created, _updated, pod = row
    return Grant(
        id=gid,
        route=route,
        mode=Mode(mode),
        unit=unit,
        mint=mint,
        paid=int(paid),
        created_at=float(created),
        requests_left=int(left),
        expires_at=float(expires),
        pod=pod,
    )


def _swap(row: Sequence[Any]) -> PendingSwap:
    fp, mint, unit, keyset_id, start, amounts, grant_json, _created = row
    return PendingSwap(
        fingerprint=fp,
        mint=mint,
        unit=unit,
        keyset_id=keyset_id,
        counter_start=int(start),
        amounts=tuple(json.loads(amounts)),
        grant=grant_from_json(grant_json) if grant_json else None,
    )
