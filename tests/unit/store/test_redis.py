"""The Redis store beyond the contract (test_contract.py): several processes on one seed's
keys, claims, leases held elsewhere, the seed the keys belong to, Redis's persistence, and
what an outage does. Against a real redis-server."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest

from paygress.core.ledger import LedgerError, SwapClaimed
from paygress.core.ports import Lease, StoreUnavailable
from paygress.store.redis import RedisStore
from paygress.store.redis_db import Connection
from tests.peers.redis import RedisServer

from .conftest import redis_store
from .test_contract import grant, paid, redeem


async def two_processes(server: RedisServer, **options: Any) -> tuple[RedisStore, RedisStore]:
    """Two stores on the same keys, as two replicas of one seed have."""
    prefix = f"t-{secrets.token_hex(6)}"
    a, b = redis_store(server, prefix, **options), redis_store(server, prefix, **options)
    await a.open("seed-a")
    await b.open("seed-a")
    return a, b


async def test_leases_of_one_grant_add_up_across_processes(redis_server: RedisServer) -> None:
    a, b = await two_processes(redis_server)
    await paid(a, grant(left=10))
    assert await a.grants.lease("g1", 4) == Lease(held=4, pool=6, elsewhere=False)
    assert await b.grants.lease("g1", 8) == Lease(held=6, pool=0, elsewhere=True)
    assert await a.grants.lease("g1", 1) == Lease(held=4, pool=0, elsewhere=True)
    await b.grants.give_back({"g1": 6})
    assert await a.grants.lease("g1", 1) == Lease(held=4, pool=0, elsewhere=False)
    await a.grants.give_back({"g1": 1})  # 3 of a's 4 unused go back
    assert await b.grants.lease("g1", 8) == Lease(held=3, pool=0, elsewhere=False)
    await a.close()
    await b.close()


async def test_a_lease_whose_holder_went_silent_is_not_waited_for(
    redis_server: RedisServer,
) -> None:
    a, b = await two_processes(redis_server, lease_seconds=0.2)
    await paid(a, grant(left=2))
    await a.grants.lease("g1", 2)
    assert (await b.grants.lease("g1", 1)).elsewhere
    await asyncio.sleep(0.3)  # a died holding 2: its lease is forfeited, not given to b
    assert await b.grants.lease("g1", 1) == Lease(held=0, pool=0, elsewhere=False)
    await a.close()
    await b.close()


async def test_a_record_is_claimed_by_one_process_until_its_claim_expires(
    redis_server: RedisServer,
) -> None:
    a, b = await two_processes(redis_server, claim_seconds=0.3)
    record = await a.ledger.begin_swap(redeem("fp", (8,), grant()))
    with pytest.raises(SwapClaimed):  # a is sending it: b must not
        await b.ledger.claim_swap("fp", 0.3)
    assert await a.ledger.claim_swap("fp", 0.3) == record  # a renews its own
    await asyncio.sleep(0.4)  # a died mid-swap: b takes over, as unknown (it may be sent)
    taken = await b.ledger.claim_swap("fp", 5)
    assert taken is not None and taken.unknown and taken.counters == record.counters
    with pytest.raises(SwapClaimed):
        await a.ledger.claim_swap("fp", 5)
    await b.ledger.settle_swap(taken, [])
    assert await a.ledger.claim_swap("fp", 5) is None
    assert await a.grants.get_grant("g1") == grant()
    await a.close()
    await b.close()


async def test_the_keys_belong_to_one_seed(redis_server: RedisServer) -> None:
    prefix = f"t-{secrets.token_hex(6)}"
    first = redis_store(redis_server, prefix)
    await first.open("seed-a")
    await first.close()
    other = redis_store(redis_server, prefix)
    with pytest.raises(LedgerError, match="another wallet seed"):
        await other.open("seed-b")
    await other.close()


async def test_a_redis_that_may_lose_answered_writes_is_refused(tmp_path: Path) -> None:
    async with RedisServer(tmp_path, settings={"appendfsync": "everysec"}) as server:
        store = redis_store(server)
        with pytest.raises(LedgerError, match="appendfsync is 'everysec', needs 'always'"):
            await store.open("seed-a")
        await store.close()
        relaxed = redis_store(server, check_persistence=False)
        await relaxed.open("seed-a")  # the operator accepts it: a warning only
        await relaxed.close()


async def test_a_password_and_the_unix_socket(tmp_path: Path) -> None:
    async with RedisServer(tmp_path, password="s3cret") as server:
        store = RedisStore(Connection(server.socket_url, prefix="p", password="s3cret"))
        await store.open("seed-a")
        await paid(store, grant())
        assert await store.grants.get_grant("g1") == grant()
        await store.close()


async def test_an_outage_is_store_unavailable_and_nothing_is_lost(tmp_path: Path) -> None:
    async with RedisServer(tmp_path) as server:
        store = redis_store(server, "p", probe_seconds=0.05)
        await store.open("seed-a")
        await paid(store, grant(left=5))
        await server.stop()
        with pytest.raises(StoreUnavailable):
            await store.grants.lease("g1", 1)
        with pytest.raises(StoreUnavailable):
            await store.ledger.begin_swap(redeem("fp2", (1,)))
        assert not store.grants.available, "two failures in a row: an outage"
        await server.start()  # the AOF brings everything back
        for _ in range(100):
            if store.grants.available:
                break
            await asyncio.sleep(0.05)
        assert store.grants.available, "the probe found Redis again"
        assert await store.grants.lease("g1", 2) == Lease(held=2, pool=3, elsewhere=False)
        assert await store.ledger.swap_record("fp2") is None
        await store.close()
