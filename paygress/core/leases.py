"""This process's leases of per_request grants: the requests it may serve from memory.

Exact across processes: a process serves a per_request grant's request only from a block it
leased from the grant store (`GrantStore.lease`), and gives back what it did not use at every
flush (`GrantStore.give_back`), so the processes together never serve more than was paid.
The hot path is a decrement in memory; the store is asked when a block is used up (blocks
grow with the grant's traffic, up to `max_block`) and once per flush for each grant in use.

A process that dies holding a block forfeits its unused part: at most `max_block` requests
per grant (and, as blocks follow the traffic of one flush interval, usually far fewer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from paygress.core.model import Grant
from paygress.core.ports import GrantStore, StoreUnavailable


@dataclass(slots=True)
class _Held:
    """One grant's lease in this process."""

    held: int = 0  # leased to this process, as the store records it
    used: int = 0  # served from it
    pool: int = 0  # held by nobody, as last seen
    block: int = 1  # what to ask for next
    served: int = 0  # served since the last flush (sizes the next interval's first block)
    dry_until: float = 0.0  # found nothing left anywhere: not asked again before this
    unsure: bool = False  # a lease call failed: the store may hold a lease we never heard of

    @property
    def left(self) -> int:
        return self.held - self.used


class Leases:
    """Takes requests of per_request grants: from memory when this process holds some, else
    from the store. `take` is the hot path; `refill` asks the store; `flush` gives back."""

    def __init__(
        self,
        store: GrantStore,
        *,
        max_block: int = 32,
        wait_seconds: float = 2.0,
        poll_seconds: float = 0.05,
        recheck_seconds: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.max_block = max(1, max_block)
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.recheck_seconds = recheck_seconds
        self.monotonic = monotonic
        self._held: dict[str, _Held] = {}
        self._refills: dict[str, asyncio.Future[None]] = {}
        self._returning: dict[str, asyncio.Future[None]] = {}
        self._unreturned: dict[str, int] = {}  # give-backs that failed, tried again at flush

    def __len__(self) -> int:
        return len(self._held)

    def holds(self, grant_id: str) -> bool:
        """Whether this process may hold some of the grant (it must not be forgotten)."""
        held = self._held.get(grant_id)
        return grant_id in self._unreturned or (held is not None and (held.held > 0 or held.unsure))

    def take(self, grant: Grant) -> bool:
        """One request from this process's lease, in memory; False when it holds none."""
        held = self._held.get(grant.id)
        if held is None or held.used >= held.held:
            return False
        held.used += 1
        held.served += 1
        grant.requests_left = held.held - held.used + held.pool
        return True

    async def refill(self, grant: Grant) -> bool:
        """Leases more of the grant and takes one request; False when nothing is left (none
        in the pool, and no other process holds any that it could give back within
        `wait_seconds`). Raises StoreUnavailable."""
        now = self.monotonic()
        deadline, delay = now + self.wait_seconds, self.poll_seconds
        known = self._held.get(grant.id)
        if known is not None and now < known.dry_until:
            return False  # a replayed used-up token costs no store call each time
        while True:
            if self.take(grant):
                return True
            running = self._returning.get(grant.id) or self._refills.get(grant.id)
            if running is not None:
                await asyncio.shield(running)
                continue
            if grant.id in self._unreturned:
                raise StoreUnavailable()
            elsewhere = await self._lease(grant)
            if self.take(grant):
                return True
            if not elsewhere:  # nothing anywhere: not asked again for a while
                self._held[grant.id].dry_until = self.monotonic() + self.recheck_seconds
                return False
            if self.monotonic() + delay > deadline:
                return False
            await asyncio.sleep(delay)  # another process gives its block back at its flush
            delay = min(delay * 2, 0.25)

    async def _lease(self, grant: Grant) -> bool:
        """One lease call (single-flight per grant); returns whether others hold some."""
        held = self._held.setdefault(grant.id, _Held(pool=grant.requests_left))
        if held.held and held.used >= held.held:
            held.block = min(held.block * 2, self.max_block)  # used up within one interval
        done = asyncio.get_running_loop().create_future()
        self._refills[grant.id] = done
        try:
            lease = await self.store.lease(grant.id, held.block)
        except BaseException:
            held.unsure = True  # the call may have been done: give back at the next flush
            raise
        finally:
            del self._refills[grant.id]
            done.set_result(None)
        held.held, held.pool = lease.held, lease.pool
        grant.requests_left = held.left + lease.pool
        return lease.elsewhere

    async def flush(self) -> None:
        """Gives back every lease this process holds (what was not used goes back to the
        pool). A give-back that fails is tried again at the next flush; meanwhile its grant
        is not leased again."""
        used = dict(self._unreturned)
        for grant_id, held in self._held.items():
            if grant_id in self._refills or not (held.held or held.unsure):
                continue
            used[grant_id] = held.used
            held.pool += held.left
            held.block = max(1, min(held.served, self.max_block))
            held.held = held.used = held.served = 0
            held.unsure = False
        if not used:
            return
        done = asyncio.get_running_loop().create_future()
        for grant_id in used:
            self._returning[grant_id] = done
        try:
            await self.store.give_back(used)
            self._unreturned.clear()
        except BaseException:
            self._unreturned.update(used)
            raise
        finally:
            for grant_id in used:
                self._returning.pop(grant_id, None)
            done.set_result(None)

    def forget(self, grant_id: str) -> None:
        """The grant left memory (nothing held)."""
        held = self._held.get(grant_id)
        if held is not None and not held.held and not held.unsure:
            del self._held[grant_id]
