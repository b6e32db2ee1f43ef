"""The GrantStore port (the durable redeem cache) on SQLite."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from paygress.core.model import Grant
from paygress.core.ports import Lease
from paygress.core.pricing import Mode
from paygress.store.sqlite_db import SqliteDatabase, _Cursor


class SqliteGrants:
    """Grants by id (the token's proof fingerprint), their leases and ends, and the grants of
    a pod. One process serves a database, so its leases are never held elsewhere; those of an
    earlier life of the process are forfeited when it opens (`forfeit_leases`)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        self.holder = secrets.token_hex(8)

    @property
    def available(self) -> bool:
        return True

    async def get_grant(self, grant_id: str) -> Grant | None:
        return await self.db.run(self._get, grant_id)

    async def load_active_grants(self, now: float) -> list[Grant]:
        return await self.db.run(self._active, now)

    async def grants_of_pod(self, pod: str) -> list[Grant]:
        return await self.db.run(self._of_pod, pod)

    async def lease(self, grant_id: str, want: int) -> Lease:
        return await self.db.run(self._lease, grant_id, want)

    async def give_back(self, used: Mapping[str, int]) -> None:
        await self.db.run(self._give_back, dict(used), time.time())

    async def save_expiry(self, grants: Sequence[Grant]) -> None:
        rows = [(g.expires_at, time.time(), g.id) for g in grants]
        await self.db.run(self._save_expiry, rows)

    async def forfeit_leases(self) -> None:
        """Leases left by an earlier process: their use is not known, so they stay used."""
        await self.db.run(self._forfeit)

    # -- in the worker thread ---------------------------------------------------------------

    def _get(self, grant_id: str) -> Grant | None:
        with self.db.tx() as tx:
            row = tx.execute("SELECT * FROM grants WHERE id = ?", (grant_id,)).fetchone()
        return grant_of_row(row) if row else None

    def _active(self, now: float) -> list[Grant]:
        with self.db.tx() as tx:
            rows = tx.execute(
                "SELECT * FROM grants WHERE (mode = 'per_request' AND requests_left > 0)"
                " OR (mode != 'per_request' AND expires_at > ?)",
                (now,),
            ).fetchall()
        return [grant_of_row(r) for r in rows]

    def _of_pod(self, pod: str) -> list[Grant]:
        with self.db.tx() as tx:
            rows = tx.execute("SELECT * FROM grants WHERE pod = ?", (pod,)).fetchall()
        return [grant_of_row(r) for r in rows]

    def _lease(self, grant_id: str, want: int) -> Lease:
        with self.db.tx() as tx:
            row = tx.execute(
                "SELECT requests_left FROM grants WHERE id = ? AND mode = 'per_request'",
                (grant_id,),
            ).fetchone()
            pool = int(row[0]) if row else 0
            take = max(0, min(want, pool))
            if take:
                tx.execute(
                    "UPDATE grants SET requests_left = requests_left - ? WHERE id = ?",
                    (take, grant_id),
                )
                tx.execute(
                    "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT (grant_id, holder)"
                    " DO UPDATE SET held = held + excluded.held",
                    (grant_id, self.holder, take),
                )
            held = tx.execute(
                "SELECT held FROM leases WHERE grant_id = ? AND holder = ?",
                (grant_id, self.holder),
            ).fetchone()
        return Lease(held=int(held[0]) if held else 0, pool=pool - take, elsewhere=False)

    def _give_back(self, used: dict[str, int], now: float) -> None:
        with self.db.tx() as tx:
            for grant_id, count in used.items():
                row = tx.execute(
                    "DELETE FROM leases WHERE grant_id = ? AND holder = ? RETURNING held",
                    (grant_id, self.holder),
                ).fetchone()
                if row is not None and int(row[0]) > count:
                    tx.execute(
                        "UPDATE grants SET requests_left = requests_left + ?, updated_at = ?"
                        " WHERE id = ?",
                        (int(row[0]) - count, now, grant_id),
                    )

    def _save_expiry(self, rows: list[tuple[float, float, str]]) -> None:
        with self.db.tx() as tx:
            tx.executemany(
                "UPDATE grants SET expires_at = MAX(expires_at, ?), updated_at = ? WHERE id = ?",
                rows,
            )

    def _forfeit(self) -> None:
        with self.db.tx() as tx:
            tx.execute("DELETE FROM leases")


def insert_grant(tx: _Cursor, grant: Grant, now: float) -> None:
    """Writes a new grant (an existing one with the same id is kept as it is)."""
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


def grant_of_row(row: Sequence[Any]) -> Grant:
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
