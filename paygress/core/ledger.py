"""The wallet's ledger: the port behind which the operator wallet keeps its money.

The wallet (paygress/wallet) depends on this port only; a store module (SQLite today, Redis
next) implements it. The invariants it keeps are the wallet's money invariants:

1. Ecash is persisted before access is granted: a redemption's proofs and its grant are
   written in one `settle_swap`.
2. Every NUT-13 counter whose output was ever sent to a mint is either in a durable swap
   record or below the keyset's durable counter mark, and restore scans up to the mark (and,
   with no ledger at all, across any run of unsigned counters shorter than
   `RESTORE_GAP_COUNTERS`: `begin_swap` refuses to reserve more while open records hold that
   many). Counters are handed out lowest-first from the free set, then from the mark; only
   `abandon_swap(release_counters=True)`, for outputs the mint definitively did not sign,
   returns counters to the free set.
3. A swap record is deleted only once its outcome is known: `settle_swap` (signed, proofs
   stored) or `abandon_swap` (definitively not signed, or signed for someone else's inputs).
4. One process at a time sends or finds out a record: `begin_swap` creates it claimed by its
   creator, `claim_swap` lets another process take it over only once that claim has expired
   (and then as unknown: the claimer may have sent it). So several processes sharing one
   ledger never send the same token's swap twice, and one that dies mid-swap is covered.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from paygress.cashu.models import Proof
from paygress.core.model import Grant

# The most counters that may be reserved and not yet settled at one time, across all swaps of
# all processes sharing the ledger (`begin_swap` refuses beyond it). Any run of unsigned
# counters below a signed one is shorter than this, so a restore from the seed alone that scans
# on until it has seen this many unsigned counters in a row has found every signed output.
RESTORE_GAP_COUNTERS = 1024


class CountersBusy(Exception):
    """Open swap records hold RESTORE_GAP_COUNTERS counters: no more may be reserved until
    some settle. Expected under a burst; the caller waits a little or answers 503."""


class SwapExists(Exception):
    """`begin_swap` found a record with this id (another process or path is swapping the same
    token): resolve that record instead of starting another swap."""


class SwapClaimed(Exception):
    """Another process holds a live claim on this record (it is sending it or finding it out
    now): wait for its outcome rather than sending the swap a second time."""


class ProofsTaken(Exception):
    """Some of the proofs chosen for a withdrawal are no longer unspent (a withdrawal by
    another process took them first): nothing was changed; choose again."""


class SwapKind(enum.StrEnum):
    REDEEM = "redeem"  # a client's token into our outputs (the grant is in the record)
    WITHDRAW = "withdraw"  # our proofs into a payout part and change
    SETTLE = "settle"  # proofs accepted offline (locked to us) into our outputs


@dataclass(frozen=True, slots=True)
class SwapRecord:
    """A swap sent, or about to be sent, to a mint whose outcome is not known yet.

    `inputs` are kept so that the swap can be sent again (or its outcome found out) without
    the client. `unknown` is set when a send got no answer (timeout, 5xx, a crash): a refusal
    of a later send then needs finding out before the record may go.
    """

    id: str
    kind: SwapKind
    mint: str
    unit: str
    keyset_id: str
    counters: tuple[int, ...]
    amounts: tuple[int, ...]
    inputs: tuple[Proof, ...]
    grant: Grant | None = None
    unknown: bool = False
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class NewSwap:
    """A swap to record: `begin_swap` reserves its counters and returns the record."""

    id: str
    kind: SwapKind
    mint: str
    unit: str
    keyset_id: str
    amounts: tuple[int, ...]
    inputs: tuple[Proof, ...]
    grant: Grant | None = None


@dataclass(frozen=True, slots=True)
class Balance:
    mint: str
    unit: str
    spendable: int
    pending: int


@dataclass(frozen=True, slots=True)
class LockedProof:
    """A proof accepted offline: locked to the operator's key (NUT-11) and proven by its DLEQ
    proof (NUT-12), waiting in the queue to be swapped into our outputs."""

    proof: Proof
    mint: str
    unit: str
    fingerprint: str  # of the token it came in: a token's proofs are swapped together
    accepted_at: float


def whole_tokens(queued: Iterable[LockedProof], limit: int) -> list[LockedProof]:
    """The first tokens of `queued` (in its order) whose proofs together fit `limit`; at least
    one token, however many proofs it has (a token's proofs are swapped together)."""
    tokens: dict[str, list[LockedProof]] = {}
    for locked in queued:
        tokens.setdefault(locked.fingerprint, []).append(locked)
    batch: list[LockedProof] = []
    for token in tokens.values():
        if batch and len(batch) + len(token) > limit:
            break
        batch += token
    return batch


class ProofsKnown(Exception):
    """A proof offered for offline acceptance is held already (queued, being swapped, or ours):
    the token, or part of it, was used here before."""


class QueueFull(Exception):
    """The queue of locked proofs holds its maximum: take the online path."""


class LedgerError(RuntimeError):
    """The ledger cannot be used as it is (wrong seed, newer schema, not open). A bug or an
    operator's mistake, not a client's: the process should not go on."""


class Ledger(Protocol):
    """Durable state of the operator wallet."""

    # -- swaps -------------------------------------------------------------------------------

    async def begin_swap(self, swap: NewSwap) -> SwapRecord:
        """Reserves `len(swap.amounts)` counters of the keyset (lowest free first) and writes
        the record, claimed by this process, in one transaction; a withdrawal's inputs become
        reserved. Raises CountersBusy when open records already hold RESTORE_GAP_COUNTERS
        counters, SwapExists when a record with this id is open, ProofsTaken when a
        withdrawal's inputs are not all unspent."""
        ...

    async def claim_swap(self, swap_id: str, seconds: float) -> SwapRecord | None:
        """Claims an open record for this process for `seconds` (renewing its own claim); a
        record whose claim by another process expired is taken over as unknown. None when the
        record is gone; raises SwapClaimed while another process's claim is live."""
        ...

    async def mark_unknown(self, swap_id: str) -> None:
        """A send of this swap got no answer: its outcome must be found out."""
        ...

    async def swap_record(self, swap_id: str) -> SwapRecord | None: ...

    async def swap_records(self) -> list[SwapRecord]:
        """Every open record, oldest first."""
        ...

    async def settle_swap(self, record: SwapRecord, proofs: Sequence[Proof]) -> None:
        """The mint signed the record's outputs: stores the proofs (and a redemption's grant;
        a withdrawal's inputs become spent) and deletes the record, in one transaction.
        Idempotent."""
        ...

    async def abandon_swap(
        self, record: SwapRecord, *, release_counters: bool, inputs_spent: bool = False
    ) -> None:
        """The mint definitively did not sign for us: deletes the record; the counters go back
        to the free set only if `release_counters` (the outputs were never signed); a
        withdrawal's inputs go back to unspent, or to spent if `inputs_spent`."""
        ...

    # -- counters ----------------------------------------------------------------------------

    async def counter_mark(self, keyset_id: str) -> int:
        """One past the highest counter of the keyset ever reserved."""
        ...

    async def advance_counter(self, keyset_id: str, at_least: int) -> None:
        """Moves the mark forward to `at_least` (never back); free counters below it stay."""
        ...

    # -- proofs ------------------------------------------------------------------------------

    async def add_restored(
        self, mint: str, unit: str, unspent: Sequence[Proof], spent_ys: Sequence[str]
    ) -> list[Proof]:
        """Adds restored unspent proofs not yet held (returns them); marks spent ones spent."""
        ...

    async def balances(self) -> list[Balance]: ...

    async def unspent_proofs(self, mint: str, unit: str) -> list[Proof]: ...

    async def mark_withdrawn(
        self, withdrawal_id: str, mint: str, unit: str, proofs: Sequence[Proof]
    ) -> None:
        """Proofs handed out as they are: pending until the mint sees them spent. Raises
        ProofsTaken (and changes nothing) unless every one is unspent."""
        ...

    async def pending_withdrawn(self) -> list[tuple[str, str, Proof]]:
        """(withdrawal id, mint, proof) of every proof handed out and not yet seen spent."""
        ...

    async def settle_withdrawn(self, spent_ys: Sequence[str]) -> None: ...

    # -- proofs accepted offline -------------------------------------------------------------
    # Invariant: a locked proof is in the queue from its acceptance (with the grant it pays for,
    # in one transaction) until the swap that spends it settles; a `settle` swap record takes
    # queued proofs (`begin_swap`), and abandoning it puts them back (or, spent by someone
    # else, marks them lost). Locked proofs are the only ecash restore cannot recover from the
    # seed until they are swapped: the queue is drained within seconds.

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
        """Queues the proofs and writes the grant they pay for, in one transaction; done again
        (every proof queued under this fingerprint already: another process accepted the same
        token meanwhile) it changes nothing. Raises ProofsKnown if any proof is held already, or
        was ever swapped by us (the inputs of settled redemptions are remembered for this),
        QueueFull beyond `max_queue` queued proofs."""
        ...

    async def locked_queue(self, limit: int) -> list[LockedProof]:
        """Queued proofs, oldest first, whole tokens only, at most `limit` (at least one
        token)."""
        ...

    async def locked_summary(self) -> tuple[int, float]:
        """(proofs queued or being swapped, acceptance time of the oldest; 0.0 when none)."""
        ...
