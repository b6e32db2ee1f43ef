"""The wallet's Ledger port on SQLite: proofs, NUT-13 counters, swap records, withdrawals.

The money invariants it keeps are stated in paygress/core/ledger.py; here is how:
- `begin_swap` takes counters from `free_counters` (lowest first) and then from the mark in
  `counters`, and writes the swap record, in one transaction: a reserved counter is always
  below the mark, and every counter handed to a swap is named in its record until the record
  is settled or abandoned.
- Only `abandon_swap(release_counters=True)` puts counters into `free_counters`.
- `open()` marks every record left by an earlier process as unknown: it may have been sent.
- One process serves a database, so a record is never claimed by another: `claim_swap` is
  `swap_record` (the wallet's in-process locks keep one send per record).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from paygress.cashu.models import Proof
from paygress.core.ledger import (
    RESTORE_GAP_COUNTERS,
    Balance,
    CountersBusy,
    LockedProof,
    NewSwap,
    ProofsKnown,
    ProofsTaken,
    QueueFull,
    SwapExists,
    SwapKind,
    SwapRecord,
    whole_tokens,
)
from paygress.core.model import Grant
from paygress.store.codec import (
    dleq_from_json,
    dleq_to_json,
    grant_from_json,
    grant_to_json,
    proof_from_dict,
    proof_to_dict,
    proofs_from_json,
    proofs_to_json,
)
from paygress.store.sqlite_db import SqliteDatabase, _Cursor
from paygress.store.sqlite_grants import insert_grant


class SqliteLedger:
    """Implements paygress.core.ledger.Ledger."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def after_restart(self) -> None:
        """Records left by an earlier process may have been sent: their outcome is unknown."""
        await self.db.run(self._all_unknown)

    # -- swaps -------------------------------------------------------------------------------

    async def begin_swap(self, swap: NewSwap) -> SwapRecord:
        return await self.db.run(self._begin_swap, swap, time.time())

    async def claim_swap(self, swap_id: str, seconds: float) -> SwapRecord | None:
        return await self.db.run(self._swap_record, swap_id)

    async def mark_unknown(self, swap_id: str) -> None:
        await self.db.run(self._mark_unknown, swap_id)

    async def swap_record(self, swap_id: str) -> SwapRecord | None:
        return await self.db.run(self._swap_record, swap_id)

    async def swap_records(self) -> list[SwapRecord]:
        return await self.db.run(self._swap_records)

    async def settle_swap(self, record: SwapRecord, proofs: Sequence[Proof]) -> None:
        await self.db.run(self._settle_swap, record, list(proofs), time.time())

    async def abandon_swap(
        self, record: SwapRecord, *, release_counters: bool, inputs_spent: bool = False
    ) -> None:
        await self.db.run(self._abandon_swap, record, release_counters, inputs_spent)

    # -- counters ----------------------------------------------------------------------------

    async def counter_mark(self, keyset_id: str) -> int:
        return await self.db.run(self._counter_mark, keyset_id)

    async def advance_counter(self, keyset_id: str, at_least: int) -> None:
        await self.db.run(self._advance_counter, keyset_id, at_least)

    # -- proofs ------------------------------------------------------------------------------

    async def add_restored(
        self, mint: str, unit: str, unspent: Sequence[Proof], spent_ys: Sequence[str]
    ) -> list[Proof]:
        return await self.db.run(self._add_restored, mint, unit, list(unspent), list(spent_ys))

    async def balances(self) -> list[Balance]:
        return await self.db.run(self._balances)

    async def unspent_proofs(self, mint: str, unit: str) -> list[Proof]:
        return await self.db.run(self._unspent_proofs, mint, unit)

    async def mark_withdrawn(
        self, withdrawal_id: str, mint: str, unit: str, proofs: Sequence[Proof]
    ) -> None:
        await self.db.run(self._mark_withdrawn, withdrawal_id, mint, unit, list(proofs))

    async def pending_withdrawn(self) -> list[tuple[str, str, Proof]]:
        return await self.db.run(self._pending_withdrawn)

    async def settle_withdrawn(self, spent_ys: Sequence[str]) -> None:
        await self.db.run(self._settle_withdrawn, list(spent_ys))

    async def accept_locked(
        self,
        fingerprint: str,
        mint: str,
        unit: str,
        proofs: Sequence[Proof],
        grant: Grant,
        *,
        max_queue: int,
    ) -> None:
        await self.db.run(
            self._accept_locked, fingerprint, mint, unit, list(proofs), grant, max_queue
        )

    async def locked_queue(self, limit: int) -> list[LockedProof]:
        return await self.db.run(self._locked_queue, limit)

    async def locked_summary(self) -> tuple[int, float]:
        return await self.db.run(self._locked_summary)

    # -- in the worker thread ---------------------------------------------------------------

    def _all_unknown(self) -> None:
        with self.db.tx() as tx:
            tx.execute("UPDATE swaps SET unknown = 1")

    def _begin_swap(self, swap: NewSwap, now: float) -> SwapRecord:
        with self.db.tx() as tx:
            if tx.execute("SELECT 1 FROM swaps WHERE id = ?", (swap.id,)).fetchone():
                raise SwapExists(swap.id)
            held = tx.execute(
                "SELECT COALESCE(SUM(json_array_length(counters)), 0) FROM swaps"
            ).fetchone()[0]
            if held + len(swap.amounts) > RESTORE_GAP_COUNTERS:
                raise CountersBusy(f"{held} counters held by open swaps")
            counters = _reserve(tx, swap.keyset_id, len(swap.amounts))
            record = SwapRecord(
                id=swap.id,
                kind=swap.kind,
                mint=swap.mint,
                unit=swap.unit,
                keyset_id=swap.keyset_id,
                counters=counters,
                amounts=swap.amounts,
                inputs=swap.inputs,
                grant=swap.grant,
                created_at=now,
            )
            tx.execute(
                "INSERT INTO swaps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                (
                    record.id,
                    record.kind.value,
                    record.mint,
                    record.unit,
                    record.keyset_id,
                    json.dumps(list(record.counters)),
                    json.dumps(list(record.amounts)),
                    proofs_to_json(record.inputs),
                    grant_to_json(record.grant) if record.grant else None,
                    now,
                ),
            )
            if record.kind is SwapKind.WITHDRAW:
                _take_unspent(tx, "reserved", None, record.inputs)
            if record.kind is SwapKind.SETTLE:
                for proof in record.inputs:
                    taken = tx.execute(
                        "UPDATE locked_proofs SET state = 'swapping', swap_id = ?"
                        " WHERE y = ? AND state = 'queued'",
                        (record.id, proof.y()),
                    ).rowcount
                    if not taken:
                        raise ProofsKnown(f"locked proof {proof.y()[:16]} is not queued")
        return record

    def _mark_unknown(self, swap_id: str) -> None:
        with self.db.tx() as tx:
            tx.execute("UPDATE swaps SET unknown = 1 WHERE id = ?", (swap_id,))

    def _swap_record(self, swap_id: str) -> SwapRecord | None:
        with self.db.tx() as tx:
            row = tx.execute("SELECT * FROM swaps WHERE id = ?", (swap_id,)).fetchone()
        return _record(row) if row else None

    def _swap_records(self) -> list[SwapRecord]:
        with self.db.tx() as tx:
            rows = tx.execute("SELECT * FROM swaps ORDER BY created_at, id").fetchall()
        return [_record(r) for r in rows]

    def _settle_swap(self, record: SwapRecord, proofs: list[Proof], now: float) -> None:
        with self.db.tx() as tx:
            if tx.execute("SELECT 1 FROM swaps WHERE id = ?", (record.id,)).fetchone() is None:
                return  # settled before (by a concurrent path): nothing twice
            _insert_proofs(tx, record.mint, record.unit, proofs, now)
            if record.grant is not None:
                insert_grant(tx, record.grant, now)
            if record.kind is SwapKind.WITHDRAW:
                tx.executemany(
                    "UPDATE proofs SET state = 'spent' WHERE y = ?",
                    [(p.y(),) for p in record.inputs],
                )
            if record.kind is SwapKind.SETTLE:
                tx.execute("DELETE FROM locked_proofs WHERE swap_id = ?", (record.id,))
            if record.kind in (SwapKind.REDEEM, SwapKind.SETTLE):
                # Spent now, by us: never to be accepted offline again, in any token.
                tx.executemany(
                    "INSERT OR IGNORE INTO received_inputs VALUES (?, ?, ?)",
                    [(p.y(), record.id, now) for p in record.inputs],
                )
            tx.execute("DELETE FROM swaps WHERE id = ?", (record.id,))

    def _abandon_swap(self, record: SwapRecord, release: bool, inputs_spent: bool) -> None:
        with self.db.tx() as tx:
            gone = tx.execute("DELETE FROM swaps WHERE id = ?", (record.id,)).rowcount
            if not gone:
                return
            if release:
                tx.executemany(
                    "INSERT OR IGNORE INTO free_counters VALUES (?, ?)",
                    [(record.keyset_id, c) for c in record.counters],
                )
            if record.kind is SwapKind.WITHDRAW:
                tx.executemany(
                    "UPDATE proofs SET state = ? WHERE y = ? AND state = 'reserved'",
                    [("spent" if inputs_spent else "unspent", p.y()) for p in record.inputs],
                )
            if record.kind is SwapKind.SETTLE:
                tx.execute(
                    "UPDATE locked_proofs SET state = ?, swap_id = NULL WHERE swap_id = ?",
                    ("lost" if inputs_spent else "queued", record.id),
                )

    def _counter_mark(self, keyset_id: str) -> int:
        with self.db.tx() as tx:
            row = tx.execute("SELECT next FROM counters WHERE keyset_id = ?", (keyset_id,))
            found = row.fetchone()
        return int(found[0]) if found else 0

    def _advance_counter(self, keyset_id: str, at_least: int) -> None:
        with self.db.tx() as tx:
            tx.execute(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT (keyset_id)"
                " DO UPDATE SET next = MAX(next, excluded.next)",
                (keyset_id, at_least),
            )

    def _add_restored(
        self, mint: str, unit: str, unspent: list[Proof], spent_ys: list[str]
    ) -> list[Proof]:
        now = time.time()
        with self.db.tx() as tx:
            known = {
                row[0]
                for p in unspent
                for row in tx.execute("SELECT y FROM proofs WHERE y = ?", (p.y(),))
            }
            new = [p for p in unspent if p.y() not in known]
            _insert_proofs(tx, mint, unit, new, now)
            tx.executemany(
                "UPDATE proofs SET state = 'spent' WHERE y = ? AND state = 'unspent'",
                [(y,) for y in spent_ys],
            )
        return new

    def _balances(self) -> list[Balance]:
        with self.db.tx() as tx:
            rows = tx.execute(
                "SELECT mint, unit,"
                " SUM(CASE WHEN state IN ('unspent', 'reserved') THEN amount ELSE 0 END),"
                " SUM(CASE WHEN state = 'pending' THEN amount ELSE 0 END)"
                " FROM proofs GROUP BY mint, unit ORDER BY mint, unit"
            ).fetchall()
        return [Balance(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    def _unspent_proofs(self, mint: str, unit: str) -> list[Proof]:
        with self.db.tx() as tx:
            rows = tx.execute(
                "SELECT keyset_id, amount, secret, c, dleq FROM proofs"
                " WHERE mint = ? AND unit = ? AND state = 'unspent' ORDER BY amount",
                (mint, unit),
            ).fetchall()
        return [_proof(r) for r in rows]

    def _mark_withdrawn(
        self, withdrawal_id: str, mint: str, unit: str, proofs: list[Proof]
    ) -> None:
        with self.db.tx() as tx:
            _mark_pending(tx, withdrawal_id, mint, unit, proofs, time.time())

    def _pending_withdrawn(self) -> list[tuple[str, str, Proof]]:
        with self.db.tx() as tx:
            rows = tx.execute(
                "SELECT withdrawal_id, mint, keyset_id, amount, secret, c, dleq FROM proofs"
                " WHERE state = 'pending'"
            ).fetchall()
        return [(r[0], r[1], _proof(r[2:])) for r in rows]

    def _settle_withdrawn(self, spent_ys: list[str]) -> None:
        now = time.time()
        with self.db.tx() as tx:
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

    def _accept_locked(
        self,
        fingerprint: str,
        mint: str,
        unit: str,
        proofs: list[Proof],
        grant: Grant,
        max_queue: int,
    ) -> None:
        now = time.time()
        ys = [p.y() for p in proofs]
        with self.db.tx() as tx:
            mine = tx.execute(
                "SELECT COUNT(*) FROM locked_proofs WHERE fingerprint = ? AND state != 'lost'",
                (fingerprint,),
            ).fetchone()[0]
            if mine == len(ys):
                return  # accepted before: done again
            for y in ys:
                held = tx.execute(
                    "SELECT 1 FROM locked_proofs WHERE y = ? UNION ALL"
                    " SELECT 1 FROM received_inputs WHERE y = ? UNION ALL"
                    " SELECT 1 FROM proofs WHERE y = ?",
                    (y, y, y),
                ).fetchone()
                if held:
                    raise ProofsKnown(f"proof {y[:16]} is held already")
            queued = tx.execute(
                "SELECT COUNT(*) FROM locked_proofs WHERE state != 'lost'"
            ).fetchone()[0]
            if queued + len(proofs) > max_queue:
                raise QueueFull(f"{queued} locked proofs queued")
            tx.executemany(
                "INSERT INTO locked_proofs (y, fingerprint, mint, unit, proof, accepted_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (y, fingerprint, mint, unit, json.dumps(proof_to_dict(p)), now)
                    for y, p in zip(ys, proofs, strict=True)
                ],
            )
            insert_grant(tx, grant, now)

    def _locked_queue(self, limit: int) -> list[LockedProof]:
        with self.db.tx() as tx:
            rows = tx.execute(
                "SELECT fingerprint, mint, unit, proof, accepted_at FROM locked_proofs"
                " WHERE state = 'queued' ORDER BY accepted_at, fingerprint, y"
            ).fetchall()
        return whole_tokens(
            (
                LockedProof(proof_from_dict(json.loads(proof)), mint, unit, fp, accepted)
                for fp, mint, unit, proof, accepted in rows
            ),
            limit,
        )

    def _locked_summary(self) -> tuple[int, float]:
        with self.db.tx() as tx:
            count, oldest = tx.execute(
                "SELECT COUNT(*), MIN(accepted_at) FROM locked_proofs WHERE state != 'lost'"
            ).fetchone()
        return int(count), float(oldest or 0.0)


def _reserve(tx: _Cursor, keyset_id: str, count: int) -> tuple[int, ...]:
    """`count` counters of the keyset: the lowest free ones first, then past the mark."""
    free = [
        int(r[0])
        for r in tx.execute(
            "SELECT counter FROM free_counters WHERE keyset_id = ? ORDER BY counter LIMIT ?",
            (keyset_id, count),
        )
    ]
    tx.executemany(
        "DELETE FROM free_counters WHERE keyset_id = ? AND counter = ?",
        [(keyset_id, c) for c in free],
    )
    row = tx.execute("SELECT next FROM counters WHERE keyset_id = ?", (keyset_id,)).fetchone()
    mark = int(row[0]) if row else 0
    fresh = count - len(free)
    if fresh:
        tx.execute(
            "INSERT INTO counters VALUES (?, ?) ON CONFLICT (keyset_id)"
            " DO UPDATE SET next = excluded.next",
            (keyset_id, mark + fresh),
        )
    return (*free, *range(mark, mark + fresh))


def _insert_proofs(tx: _Cursor, mint: str, unit: str, proofs: list[Proof], now: float) -> None:
    tx.executemany(
        "INSERT OR IGNORE INTO proofs (y, mint, unit, keyset_id, amount, secret, c, dleq,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (p.y(), mint, unit, p.keyset_id, p.amount, p.secret, p.C, dleq_to_json(p.dleq), now)
            for p in proofs
        ],
    )


def _mark_pending(
    tx: _Cursor,
    withdrawal_id: str,
    mint: str,
    unit: str,
    proofs: Sequence[Proof],
    now: float,
) -> None:
    tx.execute(
        "INSERT OR IGNORE INTO withdrawals VALUES (?, ?, ?, ?, 'pending', ?, ?)",
        (withdrawal_id, mint, unit, sum(p.amount for p in proofs), now, now),
    )
    _take_unspent(tx, "pending", withdrawal_id, proofs)


def _take_unspent(
    tx: _Cursor, state: str, withdrawal_id: str | None, proofs: Sequence[Proof]
) -> None:
    """Moves unspent proofs to `state`; ProofsTaken (the transaction rolls back) unless every
    one of them was unspent (or is there already for this withdrawal: done again)."""
    for p in proofs:
        changed = tx.execute(
            "UPDATE proofs SET state = ?, withdrawal_id = COALESCE(?, withdrawal_id)"
            " WHERE y = ? AND (state = 'unspent' OR (state = ? AND withdrawal_id = ?))",
            (state, withdrawal_id, p.y(), state, withdrawal_id),
        ).rowcount
        if changed != 1:
            raise ProofsTaken(p.y())


def _proof(row: Sequence[Any]) -> Proof:
    keyset_id, amount, secret, c, dleq = row
    return Proof(
        keyset_id=keyset_id, amount=int(amount), secret=secret, C=c, dleq=dleq_from_json(dleq)
    )


def _record(row: Sequence[Any]) -> SwapRecord:
    (
        sid,
        kind,
        mint,
        unit,
        keyset_id,
        counters,
        amounts,
        inputs,
        grant_json,
        unknown,
        created,
    ) = row
    return SwapRecord(
        id=sid,
        kind=SwapKind(kind),
        mint=mint,
        unit=unit,
        keyset_id=keyset_id,
        counters=tuple(json.loads(counters)),
        amounts=tuple(json.loads(amounts)),
        inputs=proofs_from_json(inputs),
        grant=grant_from_json(grant_json) if grant_json else None,
        unknown=bool(unknown),
        created_at=float(created),
    )
