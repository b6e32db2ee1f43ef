"""SQLite, the embedded store of one process: both ports on one database file.

`SqliteStore(path).grants` is the core's GrantStore (the durable redeem cache) and
`.ledger` the wallet's Ledger (proofs, counters, swap records, withdrawals). They share one
connection, so a redemption's proofs and its grant are written in one transaction.
"""

from __future__ import annotations

from pathlib import Path

from paygress.store.sqlite_db import SqliteDatabase
from paygress.store.sqlite_grants import SqliteGrants
from paygress.store.sqlite_ledger import SqliteLedger


class SqliteStore:
    """Opens the database (checking it belongs to the wallet's seed) and serves both ports."""

    def __init__(self, path: str | Path) -> None:
        self.db = SqliteDatabase(path)
        self.grants = SqliteGrants(self.db)
        self.ledger = SqliteLedger(self.db)

    @property
    def path(self) -> Path:
        return self.db.path

    async def open(self, seed_id: str) -> None:
        await self.db.open(seed_id)
        await self.ledger.after_restart()
        await self.grants.forfeit_leases()

    async def close(self) -> None:
        await self.db.close()
