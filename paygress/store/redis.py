"""Redis, the store shared by several processes (replicas, workers) of one seed.

`RedisStore(url, ...).grants` is the core's GrantStore and `.ledger` the wallet's Ledger, on
one Redis; a redemption's proofs and grant are written by one script. See redis_db.py for
keys, durability and faults, redis_grants.py for leases, redis_ledger.py for the money.
"""

from __future__ import annotations

from paygress.store.redis_db import Connection, RedisDatabase
from paygress.store.redis_grants import RedisGrants
from paygress.store.redis_ledger import RedisLedger


class RedisStore:
    """Opens the gateway's keys (checking they belong to the wallet's seed); both ports.
    `RedisStore(Connection(url, prefix=…, password=…))`."""

    def __init__(
        self,
        connection: Connection,
        *,
        lease_seconds: float = 10.0,
        claim_seconds: float = 10.0,
        check_persistence: bool = True,
    ) -> None:
        self.db = RedisDatabase(connection)
        self.grants = RedisGrants(self.db, lease_seconds=lease_seconds)
        self.ledger = RedisLedger(self.db, self.grants.holder, claim_seconds=claim_seconds)
        self.check_persistence = check_persistence

    async def open(self, seed_id: str) -> None:
        await self.db.open(seed_id, check_persistence=self.check_persistence)

    async def close(self) -> None:
        await self.db.close()
