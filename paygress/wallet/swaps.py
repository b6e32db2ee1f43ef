"""Swaps at a mint whose every output can be found again: record first, send, then settle or
find out. The money invariants are stated in paygress/core/ledger.py; this module keeps them:

- A swap's outputs come from counters the ledger reserves and names in a durable record
  *before* anything is sent (`begin_swap`).
- A record goes only once its outcome is known: `settle_swap` after the mint signed (the
  answer, or NUT-09 restore finding the signatures), `abandon_swap` after a refusal that
  proves nothing was signed for us. Counters go back to the free set only then.
- A send whose answer is lost marks the record unknown. A refusal of an unknown record means
  "find out": the inputs' state (NUT-07) and then restore (NUT-09) of the outputs. Never a
  guess: when neither tells, the record stays and the caller hears "not settled yet".
- At most `RESTORE_GAP_COUNTERS` counters are reserved and unsettled at one time (the ledger
  refuses more; a swap waits briefly for room), so a restore from the seed alone crosses every
  gap the wallet itself leaves.
- One send per record across processes too: a record is claimed in the ledger (for
  `claim_seconds`) by whoever sends or finds it out; the others wait for its outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from paygress.cashu.errors import (
    CODE_KEYSET_INACTIVE,
    CODE_KEYSET_NOT_FOUND,
    MintError,
    MintRejected,
    MintUnavailable,
)
from paygress.cashu.mint_client import MintClient
from paygress.cashu.models import BlindSignature, PreparedOutput, Proof
from paygress.cashu.nut13 import Seed
from paygress.cashu.outputs import prepare_outputs, unblind
from paygress.core.ledger import CountersBusy, Ledger, NewSwap, SwapClaimed, SwapRecord

log = logging.getLogger("paygress.wallet")


class SwapError(Exception):
    """How a swap ended when it did not settle. Internal to the wallet: operator.py answers
    each with the port's errors (PaymentRejected, TryAgainLater) or an operator's WalletError.
    All expected; none is a bug."""


class SwapRefused(SwapError):
    """The mint definitively did not sign for us (the record is gone). `spent` when (some of)
    the inputs were spent by someone else; `spent_ys` names them when known; `code` is the
    mint's error code (e.g. 12002: a keyset is inactive)."""

    def __init__(
        self,
        detail: str,
        *,
        spent: bool = False,
        spent_ys: Sequence[str] = (),
        code: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.spent = spent
        self.spent_ys = tuple(spent_ys)
        self.code = code

    @property
    def keyset_gone(self) -> bool:
        """The mint does not sign with the keyset (rotated away, or unknown): our outputs
        named a keyset the mint retired; ask for its keysets and swap again."""
        return self.code in (CODE_KEYSET_INACTIVE, CODE_KEYSET_NOT_FOUND)


class SwapNotSettled(SwapError):
    """Not settled now. `reason` "mint_unavailable": the mint was not reached; "payment_pending":
    the outcome is not known yet (a lost answer, inputs pending). An open record stays and is
    tried again later, by the next presentation or the background task."""

    def __init__(self, detail: str, reason: str = "payment_pending") -> None:
        super().__init__(detail)
        self.reason = reason


class SwapBusy(SwapNotSettled):
    """Another process holds the record's claim (it is sending or finding it out now)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, "payment_pending")


class SwapGone(SwapError):
    """The record was settled or abandoned by another path (the background task, another
    request) while this one waited for it: the grant store knows which."""


class CountersBehind(SwapError):
    """The mint has signed these outputs before: our counters are behind (a lost or restored
    ledger). The record is gone (its counters are signed, so not released): restore from
    `first_counter` on, then swap again on fresh counters."""

    def __init__(self, detail: str, first_counter: int) -> None:
        super().__init__(detail)
        self.first_counter = first_counter


class Swaps:
    """Runs swaps through the ledger's records. One swap per record at a time (a lock per
    record id), shared by requests and the background resolver."""

    def __init__(
        self,
        ledger: Ledger,
        seed: Seed,
        client: Callable[[str], MintClient],
        keys: Callable[[str, str], Awaitable[dict[int, str]]],
        *,
        room_wait_seconds: float = 2.0,
        claim_seconds: float = 10.0,
    ) -> None:
        self.ledger = ledger
        self.seed = seed
        self.client = client
        self._keys = keys
        self.room_wait_seconds = room_wait_seconds
        self.claim_seconds = claim_seconds
        self._locks: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def locked(self, swap_id: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(swap_id, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and not getattr(lock, "_waiters", None):
                self._locks.pop(swap_id, None)

    async def run(self, new: NewSwap) -> list[Proof]:
        """Records and sends a new swap; returns the proofs it made (already stored)."""
        record = await self._begin(new)
        async with self.locked(record.id):
            return await self._send(record, fresh=True)

    async def _begin(self, new: NewSwap) -> SwapRecord:
        """The record of a new swap, waiting a little for room among the open ones."""
        delay, waited = 0.01, 0.0
        while True:
            try:
                return await self.ledger.begin_swap(new)
            except CountersBusy:
                if waited >= self.room_wait_seconds:
                    raise SwapNotSettled(
                        "too many swaps under way; try again shortly", "mint_unavailable"
                    ) from None
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.25)

    async def resolve(self, record: SwapRecord, *, wait: bool = False) -> list[Proof]:
        """Settles an open record (finding out first if a send's outcome was lost); raises
        SwapGone if another path finished it first, SwapBusy if another process holds it (with
        `wait`, once that claim has lasted its term)."""
        async with self.locked(record.id):
            current = await self._claim(record.id, wait)
            if current is None:
                raise SwapGone(record.id)
            if current.unknown or not current.inputs:
                proofs = await self._find_out(current)
                if proofs is not None:
                    return proofs
            return await self._send(current, fresh=False)

    async def _claim(self, swap_id: str, wait: bool) -> SwapRecord | None:
        """The record, claimed for this process; with `wait`, polls while another holds it."""
        delay, deadline = 0.02, asyncio.get_running_loop().time() + self.claim_seconds
        while True:
            try:
                return await self.ledger.claim_swap(swap_id, self.claim_seconds)
            except SwapClaimed:
                if not wait or asyncio.get_running_loop().time() > deadline:
                    raise SwapBusy(f"swap {swap_id[:16]} is being settled elsewhere") from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    # -- one record ----------------------------------------------------------------------------

    async def _send(self, record: SwapRecord, *, fresh: bool) -> list[Proof]:
        outputs = self._outputs(record)
        client = self.client(record.mint)
        try:
            signatures = await client.swap(list(record.inputs), [o.message() for o in outputs])
        except MintRejected as exc:
            return await self._refused(record, outputs, exc, fresh=fresh)
        except MintUnavailable as exc:
            if not exc.sent and fresh and not record.unknown:
                # Never sent, never sent before: nothing can have been signed.
                await self._abandon(record, release=True)
                raise SwapNotSettled(str(exc), "mint_unavailable") from None
            await self.ledger.mark_unknown(record.id)
            reason = "payment_pending" if exc.sent else "mint_unavailable"
            raise SwapNotSettled(f"swap {record.id[:16]}: {exc}", reason) from None
        except MintError as exc:
            await self.ledger.mark_unknown(record.id)
            raise SwapNotSettled(f"swap {record.id[:16]}: {exc}") from None
        return await self._settle(record, outputs, signatures)

    async def _refused(
        self, record: SwapRecord, outputs: list[PreparedOutput], exc: MintRejected, *, fresh: bool
    ) -> list[Proof]:
        if exc.outputs_already_signed and fresh and not record.unknown:
            # Signed before, by an earlier life of this seed: they hold money, keep them
            # reserved (restore will find them) and let the caller catch the counters up.
            await self._abandon(record, release=False)
            raise CountersBehind(exc.detail, min(record.counters))
        if exc.is_pending:
            await self.ledger.mark_unknown(record.id)
            raise SwapNotSettled(f"swap {record.id[:16]}: the inputs are pending at the mint")
        if exc.is_spent or exc.outputs_already_signed:
            if fresh and not record.unknown and exc.is_spent:
                spent = await self._spent_ys(record)
                await self._abandon(record, release=True, inputs_spent=True)
                raise SwapRefused(exc.detail, spent=True, spent_ys=spent)
            # Sent before with the answer lost: this refusal may be our own earlier swap.
            await self.ledger.mark_unknown(record.id)
            unknown = await self.ledger.swap_record(record.id) or record
            proofs = await self._find_out(unknown)
            if proofs is not None:
                return proofs
            raise SwapNotSettled(f"swap {record.id[:16]}: outcome not known yet")
        # Any other refusal signed nothing in this send; an earlier send of the same inputs
        # and outputs would have been refused the same way (or would show as spent).
        await self._abandon(record, release=True)
        raise SwapRefused(exc.detail, code=exc.code)

    async def _find_out(self, record: SwapRecord) -> list[Proof] | None:
        """Settles the record if the mint signed its outputs; abandons it if the inputs were
        spent by someone else. None when the swap may be sent again (nothing signed, inputs
        unspent). Raises SwapNotSettled when the mint cannot tell yet."""
        client = self.client(record.mint)
        outputs = self._outputs(record)
        try:
            # The state first, then restore: a mint signs and spends in one transaction, so
            # inputs seen spent before restore finds nothing were not spent by our swap.
            states = (
                await client.check_state([p.y() for p in record.inputs]) if record.inputs else []
            )
            returned, signatures = await client.restore([o.message() for o in outputs])
        except MintError as exc:
            reason = "mint_unavailable" if isinstance(exc, MintUnavailable) else "payment_pending"
            raise SwapNotSettled(
                f"swap {record.id[:16]}: cannot find out ({exc})", reason
            ) from None
        if signatures:
            if len(signatures) != len(outputs):
                raise SwapNotSettled(f"swap {record.id[:16]}: only some outputs are signed")
            by_b = {m.B_: s for m, s in zip(returned, signatures, strict=True)}
            ordered = [by_b.get(o.B_) for o in outputs]
            if any(s is None for s in ordered):
                raise SwapNotSettled(f"swap {record.id[:16]}: restore answered other outputs")
            log.info("swap %s: found signed at the mint", record.id[:16])
            return await self._settle(record, outputs, [s for s in ordered if s is not None])
        if not record.inputs:
            # A record without inputs (schema 1) cannot be sent again: nothing was signed.
            await self._abandon(record, release=False)
            raise SwapRefused("nothing was signed for this swap")
        if "PENDING" in states:
            raise SwapNotSettled(f"swap {record.id[:16]}: the inputs are pending at the mint")
        spent = [p.y() for p, st in zip(record.inputs, states, strict=True) if st == "SPENT"]
        if spent:
            await self._abandon(record, release=True, inputs_spent=True)
            raise SwapRefused("the inputs were spent by someone else", spent=True, spent_ys=spent)
        return None

    async def _settle(
        self,
        record: SwapRecord,
        outputs: list[PreparedOutput],
        signatures: Sequence[BlindSignature],
    ) -> list[Proof]:
        keys = await self._keys(record.mint, record.keyset_id)
        proofs = unblind(outputs, signatures, keys)
        await self.ledger.settle_swap(record, proofs)
        return proofs

    async def _abandon(
        self, record: SwapRecord, *, release: bool, inputs_spent: bool = False
    ) -> None:
        await self.ledger.abandon_swap(record, release_counters=release, inputs_spent=inputs_spent)

    async def _spent_ys(self, record: SwapRecord) -> list[str]:
        """Which inputs the mint says are spent (one NUT-07 call; [] if it cannot tell)."""
        try:
            states = await self.client(record.mint).check_state([p.y() for p in record.inputs])
        except MintError:
            return []
        return [p.y() for p, st in zip(record.inputs, states, strict=True) if st == "SPENT"]

    def _outputs(self, record: SwapRecord) -> list[PreparedOutput]:
        return [
            prepare_outputs(self.seed, record.keyset_id, counter, [amount])[0]
            for counter, amount in zip(record.counters, record.amounts, strict=True)
        ]
