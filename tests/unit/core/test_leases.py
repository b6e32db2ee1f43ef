"""Leases: a process serves a per_request grant's requests from a block it leased, gives back
what it did not use at every flush, and never serves more than the store let it hold."""

from __future__ import annotations

import asyncio

import pytest

from paygress.core.leases import Leases
from paygress.core.model import Grant
from paygress.core.ports import StoreUnavailable
from paygress.core.pricing import Mode

from .fakes import MINT, FakeStore


def stored(store: FakeStore, left: int, gid: str = "g") -> Grant:
    grant = Grant(gid, "api", Mode.PER_REQUEST, "sat", MINT, left, 1.0, requests_left=left)
    store.grants[gid] = Grant(gid, "api", Mode.PER_REQUEST, "sat", MINT, left, 1.0, left)
    return grant


async def serve(leases: Leases, grant: Grant, n: int) -> int:
    served = 0
    for _ in range(n):
        if leases.take(grant) or await leases.refill(grant):
            served += 1
    return served


async def test_blocks_grow_with_traffic_and_the_unused_goes_back() -> None:
    store = FakeStore()
    grant = stored(store, 100)
    leases = Leases(store, max_block=16)
    assert await serve(leases, grant, 20) == 20
    assert store.leases == 5, "blocks of 1, 2, 4, 8, 16"
    assert grant.requests_left == 80, "what is left anywhere, as this process knows it"
    assert store.grants["g"].requests_left == 100 - 31
    await leases.flush()
    assert store.grants["g"].requests_left == 80 and store.held == {}
    assert await serve(leases, grant, 16) == 16
    assert store.leases == 6, "after a flush, one block the size of the last interval's use"


async def test_never_more_than_paid_and_a_used_up_grant_costs_no_store_call() -> None:
    store = FakeStore()
    grant = stored(store, 5)
    leases = Leases(store, max_block=4)
    assert await serve(leases, grant, 9) == 5
    calls = store.leases
    assert await serve(leases, grant, 50) == 0
    assert store.leases == calls, "asked again only after recheck_seconds"


async def test_requests_held_by_another_process_are_waited_for() -> None:
    store = FakeStore()
    grant = stored(store, 3)
    store.grants["g"].requests_left = 0
    store.others["g"] = 3  # another process holds all three, and gives one back soon

    async def other_flushes() -> None:
        await asyncio.sleep(0.1)
        store.others["g"] = 0
        store.grants["g"].requests_left += 1

    leases = Leases(store, wait_seconds=1.0, poll_seconds=0.02)
    flushing = asyncio.create_task(other_flushes())
    assert await leases.refill(grant), "served once the other process gave one back"
    await flushing
    assert not await leases.refill(grant), "nothing left anywhere"


async def test_a_failed_lease_is_given_back_at_the_next_flush() -> None:
    store = FakeStore()
    grant = stored(store, 10)
    leases = Leases(store)
    real = store.lease

    async def lost_answer(grant_id: str, want: int) -> object:
        await real(grant_id, want)  # done at the store, the answer lost on the way
        raise StoreUnavailable()

    store.lease = lost_answer  # type: ignore[method-assign,assignment]
    with pytest.raises(StoreUnavailable):
        await leases.refill(grant)
    assert leases.holds("g"), "may hold a lease it never heard of"
    await leases.flush()
    assert store.grants["g"].requests_left == 10 and store.held == {}


async def test_a_failed_give_back_keeps_the_grant_from_being_leased_again() -> None:
    store = FakeStore()
    grant = stored(store, 10)
    leases = Leases(store)
    assert await serve(leases, grant, 1) == 1
    store.available = False
    with pytest.raises(StoreUnavailable):
        await leases.flush()
    store.available = True
    with pytest.raises(StoreUnavailable):  # its lease may or may not have ended
        await leases.refill(grant)
    await leases.flush()  # the give-back again: once only
    assert store.grants["g"].requests_left == 9
    assert await serve(leases, grant, 9) == 9
