"""The GrantStore port (the durable redeem cache) on SQLite."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from paygress.core.model import Grant
from paygress.core.pricing import Mode
from paygress.store.sqlite_db import SqliteDatabase, _Cursor


class SqliteGrants:
    """Grants by id (the token's proof fingerprint), their usage, and the grants of a pod."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def get_grant(self, grant_id: str) -> Grant | None:
        return await self.db.run(self._get, grant_id)

    async def load_active_grants(self, now: float) -> list[Grant]:
        return await self.db.run(self._active, now)

    async def grants_of_pod(self, pod: str) -> list[Grant]:
        return await self.db.run(self._of_pod, pod)

    async def save_usage(self, grants: Sequence[Grant]) -> None:
        rows = [(g.requests_left, g.expires_at, time.time(), g.id) for g in grants]
        await self.db.run(self._save_usage, rows)

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

    def _save_usage(self, rows: list[tuple[int, float, float, str]]) -> None:
        with self.db.tx() as tx:
            tx.executemany(
                "UPDATE grants SET requests_left = ?, expires_at = ?, updated_at = ? WHERE id = ?",
                rows,
            )


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
