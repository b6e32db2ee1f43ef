"""What one mint's keysets are (NUT-02) and their keys (NUT-01), asked as rarely as possible.

Keysets are loaded once and then refreshed at most once per `refresh_seconds` (single-flight):
a token naming a keyset the mint does not have costs one refresh per interval at most, however
many such tokens arrive, and is refused from memory otherwise. Keys of a keyset never change
(its id is a hash of them), so they are fetched once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from paygress.cashu.errors import MintProtocolError, MintUnavailable
from paygress.cashu.mint_client import MintClient
from paygress.cashu.models import KeysetInfo, Proof
from paygress.cashu.token import resolve_keyset_id


class UnknownKeyset(Exception):
    """A proof names a keyset the mint does not have (after a refresh, or too soon for one)."""


class MintKeysets:
    """One mint's keysets and keys, for a wallet that holds `unit`."""

    def __init__(
        self,
        client: Callable[[], MintClient],
        unit: str,
        *,
        refresh_seconds: float = 60.0,
        retry_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.unit = unit
        self.refresh_seconds = refresh_seconds
        self.retry_seconds = retry_seconds
        self.clock = clock
        self._failed_at = -float("inf")
        self._keysets: list[KeysetInfo] | None = None
        self._loaded_at = -float("inf")
        self._loading: asyncio.Task[list[KeysetInfo]] | None = None
        self._keys: dict[str, dict[int, str]] = {}
        self._fetching: dict[str, asyncio.Task[dict[int, str]]] = {}

    @property
    def loaded(self) -> bool:
        return self._keysets is not None

    async def keysets(self, *, refresh: bool = False) -> list[KeysetInfo]:
        """The mint's keysets: loaded once; `refresh` asks again unless it was asked within
        `refresh_seconds` (then the list in memory is the answer)."""
        fresh = self.clock() - self._loaded_at < self.refresh_seconds
        if self._keysets is not None and (not refresh or fresh):
            return self._keysets
        if self._loading is None and self.clock() - self._failed_at < self.retry_seconds:
            # The mint failed us a moment ago: do not ask again for every token.
            if self._keysets is not None:
                return self._keysets
            raise MintUnavailable("keysets: the mint failed a moment ago")
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())
        try:
            return await asyncio.shield(self._loading)
        finally:
            if self._loading is not None and self._loading.done():
                self._loading = None

    async def _load(self) -> list[KeysetInfo]:
        try:
            keysets = await self._client().keysets()
        except Exception:
            self._failed_at = self.clock()
            raise
        self._keysets, self._loaded_at = keysets, self.clock()
        return keysets

    def fee_ppk(self) -> dict[str, int]:
        """NUT-02 input fee per keyset id (empty before the first load)."""
        return {k.id: k.input_fee_ppk for k in self._keysets or ()}

    def max_active_fee_ppk(self) -> int:
        """The highest input fee of the active keysets in our unit (0 before the first load)."""
        return max(
            (k.input_fee_ppk for k in self._keysets or () if k.active and k.unit == self.unit),
            default=0,
        )

    async def resolve(self, proofs: Sequence[Proof]) -> list[Proof]:
        """The proofs with full keyset ids of our unit; an unknown id refreshes the list (at
        most once per interval) and raises UnknownKeyset if it is still unknown."""
        for refresh in (False, True):
            keysets = await self.keysets(refresh=refresh)
            ids = [k.id for k in keysets if k.unit == self.unit]
            resolved = [_with_id(p, resolve_keyset_id(p.keyset_id, ids)) for p in proofs]
            if all(p is not None for p in resolved):
                return [p for p in resolved if p is not None]
        raise UnknownKeyset

    async def keys(self, keyset_id: str) -> dict[int, str]:
        """amount → public key of a keyset (fetched once, single-flight)."""
        keys = self._keys.get(keyset_id)
        if keys is not None:
            return keys
        task = self._fetching.get(keyset_id)
        if task is None:
            task = self._fetching[keyset_id] = asyncio.ensure_future(self._client().keys(keyset_id))
        try:
            keys = await asyncio.shield(task)
        finally:
            if task.done():
                self._fetching.pop(keyset_id, None)
        self._keys[keyset_id] = keys
        return keys

    async def active(self) -> tuple[KeysetInfo, dict[int, str]]:
        """The keyset our outputs go to: active, our unit, the lowest fee (then id)."""
        for refresh in (False, True):
            active = [k for k in await self.keysets(refresh=refresh) if _usable(k, self.unit)]
            if active:
                keyset = min(active, key=lambda k: (k.input_fee_ppk, k.id))
                return keyset, await self.keys(keyset.id)
        raise MintProtocolError(f"mint has no active keyset for unit {self.unit}")

    def forget_active(self) -> None:
        """The mint refused our outputs' keyset (rotated): the list is asked for again next
        time (keys already fetched stay: a keyset's keys never change)."""
        self._keysets = None
        self._loaded_at = self._failed_at = -float("inf")


def _usable(keyset: KeysetInfo, unit: str) -> bool:
    return keyset.active and keyset.unit == unit


def _with_id(proof: Proof, keyset_id: str | None) -> Proof | None:
    if keyset_id is None:
        return None
    return proof if keyset_id == proof.keyset_id else proof.with_keyset_id(keyset_id)
