"""The operator's wallet: verifies tokens, redeems them into seed-derived proofs (NUT-03,
NUT-13) and pays out. Implements the core's Wallet port on top of the Ledger port.

The only module that talks to mints. It refuses to build a client for a mint that is not
allow-listed, so a token can never make Paygress contact an arbitrary host.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from paygress.cashu.errors import MintError, MintProtocolError
from paygress.cashu.mint_client import MintClient
from paygress.cashu.models import Proof, Token
from paygress.cashu.nut11 import parse_p2pk, sign_p2pk, witness
from paygress.cashu.nut13 import Seed
from paygress.cashu.outputs import input_fee, select_proofs, split_amount
from paygress.cashu.token import encode_token_v4
from paygress.core.ledger import (
    Balance,
    Ledger,
    NewSwap,
    ProofsKnown,
    ProofsTaken,
    QueueFull,
    SwapExists,
    SwapKind,
)
from paygress.core.model import Grant, Received
from paygress.core.ports import PaymentRejected, SettledMeanwhile, TryAgainLater, Verified
from paygress.core.pricing import normalize_mint_url
from paygress.wallet.keysets import MintKeysets, UnknownKeyset
from paygress.wallet.locks import OfflineSettings, can_sign, lock_key, lock_pubkey
from paygress.wallet.restore import scan
from paygress.wallet.swaps import (
    CountersBehind,
    SwapBusy,
    SwapGone,
    SwapNotSettled,
    SwapRefused,
    Swaps,
)
from paygress.wallet.verify import check_proofs

log = logging.getLogger("paygress.wallet")

ClientFactory = Callable[[str], MintClient]


@dataclass(slots=True)
class Backlog:
    """Work waiting (open swap records, queued locked proofs), for the gauges: how much, and
    since when (the oldest's time.time())."""

    count: int = 0
    oldest: float = 0.0

    def size(self) -> float:
        return float(self.count)

    def age(self) -> float:
        return max(0.0, time.time() - self.oldest) if self.count else 0.0


class WalletError(RuntimeError):
    """An operator's wallet operation (withdraw, restore) could not be done; the message says
    why, in words for the operator. Expected, not a bug."""


class OperatorWallet:
    """Verifies and redeems tokens at allow-listed mints; keeps the proofs in the ledger."""

    def __init__(
        self,
        ledger: Ledger,
        seed: Seed,
        mints: Sequence[str],
        unit: str,
        *,
        timeout: float = 5.0,
        client_factory: ClientFactory | None = None,
        require_dleq: bool = False,
        keyset_refresh_seconds: float = 60.0,
        offline: OfflineSettings | None = None,
        events: Callable[[str, int], None] | None = None,
        claim_seconds: float = 10.0,
    ) -> None:
        self.ledger = ledger
        self.seed = seed
        self.unit = unit
        self.require_dleq = require_dleq
        self.allowed = frozenset(normalize_mint_url(m) for m in mints)
        self._factory = client_factory or (lambda url: MintClient(url, timeout=timeout))
        self._clients: dict[str, MintClient] = {}
        self._keysets = {
            mint: MintKeysets(
                lambda mint=mint: self.client(mint),  # type: ignore[misc]
                unit,
                refresh_seconds=keyset_refresh_seconds,
            )
            for mint in self.allowed
        }
        self.swaps = Swaps(ledger, seed, self.client, self._keys, claim_seconds=claim_seconds)
        self._payout_lock = asyncio.Lock()
        self.open_swaps = Backlog()
        self.locked = Backlog()
        self._lock_key = lock_key(seed)
        self.pubkey = lock_pubkey(seed)
        self.offline = offline or OfflineSettings()
        self.events = events or (lambda _event, _count: None)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    def client(self, mint: str) -> MintClient:
        """The HTTP client of an allow-listed mint (never of any other)."""
        if mint not in self.allowed:
            raise PaymentRejected("mint_not_accepted", "The token's mint is not accepted here.")
        client = self._clients.get(mint)
        if client is None:
            client = self._clients[mint] = self._factory(mint)
        return client

    def keysets(self, mint: str) -> MintKeysets:
        self.client(mint)  # refuses a mint off the allow-list
        return self._keysets[mint]

    async def _keys(self, mint: str, keyset_id: str) -> dict[int, str]:
        return await self.keysets(mint).keys(keyset_id)

    # -- the Wallet port -----------------------------------------------------------------------

    def input_fee_ppk(self) -> int:
        """The highest input fee (per thousand proofs) of the allow-listed mints' active
        keysets, as far as they are loaded (0 before)."""
        return max((k.max_active_fee_ppk() for k in self._keysets.values()), default=0)

    async def warm_up(self) -> None:
        """Loads every allow-listed mint's keysets (so that 402s ask for the mint's fee too),
        retrying with backoff until each has answered once."""
        delay = 1.0
        while True:
            missing = [m for m, k in self._keysets.items() if not k.loaded]
            for mint in missing:
                try:
                    keyset, _ = await self._keysets[mint].active()
                    log.info("mint %s: active keyset %s", mint, keyset.id[:16])
                except MintError as exc:
                    log.warning("mint %s not reachable yet: %s", mint, exc)
            if all(k.loaded for k in self._keysets.values()):
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    async def verify(self, token: Token) -> Verified:
        """Checks the token's proofs against the mint's keys, in memory once the keys are
        known: keyset ids, amounts, DLEQ proofs. No swap."""
        mint = normalize_mint_url(token.mint)
        keysets = self.keysets(mint)
        try:
            inputs = await keysets.resolve(token.proofs)
            keys = {k: await keysets.keys(k) for k in {p.keyset_id for p in inputs}}
        except UnknownKeyset:
            raise PaymentRejected(
                "unknown_keyset", "The token names a keyset this mint does not have."
            ) from None
        except MintError as exc:
            raise _unreachable(mint, exc) from None
        proven, problem = check_proofs(inputs, keys, require_dleq=self.require_dleq)
        if problem is not None:
            raise PaymentRejected(problem.reason, problem.message)
        fee = input_fee(inputs, keysets.fee_ppk())
        offline = proven and self._offline_eligible(inputs)
        return Verified(token=token, inputs=tuple(inputs), fee=fee, proven=proven, offline=offline)

    def _offline_eligible(self, inputs: Sequence[Proof]) -> bool:
        """Every proof locked to our key alone, long enough (NUT-11); refuses proofs locked to
        a key we cannot sign for (nobody but their owner can spend those: not a payment)."""
        now = time.time()
        eligible = self.offline.accept_locked
        for proof in inputs:
            try:
                lock = parse_p2pk(proof.secret)
            except ValueError:
                raise PaymentRejected(
                    "bad_lock", "A proof's spending condition (NUT-10) is malformed."
                ) from None
            if lock is None:
                eligible = False
            elif not can_sign(lock, self.pubkey):
                raise PaymentRejected(
                    "locked_to_another_key",
                    "The token is locked (NUT-11) to a key this gateway cannot sign for; lock it "
                    f"to {self.pubkey}, or send it unlocked.",
                )
            elif not lock.spendable_only_by(
                self.pubkey, now=now, margin=self.offline.locktime_margin_seconds
            ):
                eligible = False
        return eligible

    def lock_pubkey(self) -> str | None:
        return self.pubkey if self.offline.accept_locked else None

    async def redeem(
        self,
        verified: Verified,
        fingerprint: str,
        grant_for: Callable[[Received], Grant],
        admit: Callable[[], None],
    ) -> Grant:
        """Swaps the token's proofs for new ones from our seed; the proofs and the grant are
        stored together before this returns. A swap interrupted earlier (its record is open)
        is settled first, never sent twice on new outputs."""
        token = verified.token
        mint = normalize_mint_url(token.mint)
        try:
            record = await self.ledger.swap_record(fingerprint)
            if record is None:
                grant = grant_for(Received(amount_in=token.amount, fee=verified.fee))
                if verified.offline and await self._accept_offline(verified, fingerprint, grant):
                    return grant
                net = token.amount - verified.fee
                inputs = self._signed(verified.inputs)
                try:
                    await self._swap_in(mint, fingerprint, inputs, net, grant, admit)
                    return grant
                except SwapExists:  # another process began this very swap meanwhile
                    record = await self.ledger.swap_record(fingerprint)
                    if record is None:
                        raise SwapGone(fingerprint) from None
            await self.swaps.resolve(record, wait=True)
            assert record.grant is not None
            return record.grant
        except SwapRefused as exc:
            if exc.spent:
                raise PaymentRejected(
                    "already_spent",
                    "The mint says this token is already spent.",
                    by_mint=True,
                    spent_ys=exc.spent_ys,
                ) from None
            raise PaymentRejected(
                "mint_rejected", f"The mint refused the token: {exc.detail[:200]}", by_mint=True
            ) from None
        except SwapGone:
            raise SettledMeanwhile(
                "payment_pending",
                "The mint has not settled this payment yet; send the same token again shortly.",
            ) from None
        except SwapNotSettled as exc:
            log.warning("token %s not settled yet: %s", fingerprint[:16], exc)
            if exc.reason == "mint_unavailable":
                raise TryAgainLater(
                    "mint_unavailable", "The mint cannot be reached right now; try again shortly."
                ) from None
            raise TryAgainLater(
                "payment_pending",
                "The mint has not settled this payment yet; send the same token again shortly.",
            ) from None
        except MintError as exc:
            raise _unreachable(mint, exc) from None

    async def _accept_offline(self, verified: Verified, fingerprint: str, grant: Grant) -> bool:
        """Queues the token's locked proofs with its grant: no mint call. False when the queue
        is full (the caller swaps online instead)."""
        token = verified.token
        try:
            await self.ledger.accept_locked(
                fingerprint,
                normalize_mint_url(token.mint),
                self.unit,
                verified.inputs,
                grant,
                max_queue=self.offline.max_queue,
            )
        except QueueFull:
            log.warning("queue of locked proofs is full: swapping token %s now", fingerprint[:16])
            return False
        except ProofsKnown:
            raise PaymentRejected(
                "already_spent", "The token's proofs were spent here before."
            ) from None
        self.events("locked_accepted", len(verified.inputs))
        return True

    def _signed(self, proofs: Sequence[Proof]) -> tuple[Proof, ...]:
        """The proofs, those locked to us with our NUT-11 signature as their witness."""
        signed = []
        for proof in proofs:
            lock = parse_p2pk(proof.secret)
            if lock is not None and can_sign(lock, self.pubkey):
                proof = replace(proof, witness=witness(sign_p2pk(proof.secret, self._lock_key)))
            signed.append(proof)
        return tuple(signed)

    async def settle_locked(self) -> int:
        """Swaps one batch of queued locked proofs (whole tokens, one mint) into our outputs;
        returns how many proofs settled. A proof the mint reports spent is an alarm: only we
        could spend it."""
        batch = await self.ledger.locked_queue(self.offline.batch_proofs)
        if not batch:
            return 0
        mint = batch[0].mint
        proofs = self._signed([lp.proof for lp in batch if lp.mint == mint])
        keysets = self.keysets(mint)
        await keysets.keysets()  # the fee table
        net = sum(p.amount for p in proofs) - input_fee(proofs, keysets.fee_ppk())
        digest = hashlib.sha256("".join(sorted(p.y() for p in proofs)).encode()).hexdigest()
        try:
            swap = await self._new_swap(
                f"settle:{digest}",
                SwapKind.SETTLE,
                mint,
                proofs,
                lambda keys: split_amount(net, keys),
            )
        except (SwapExists, ProofsKnown):  # another process took this batch: it swaps it
            return 0
        try:
            await self.swaps.run(swap)
        except SwapRefused as exc:
            if exc.keyset_gone:  # our outputs' keyset was retired: the next batch asks again
                keysets.forget_active()
            event = "locked_lost" if exc.spent else "locked_failed"
            self.events(event, len(proofs))
            log.error(
                "locked proofs %s %s at %s: %s",
                digest[:16],
                "spent by someone else" if exc.spent else "refused",
                mint,
                exc.detail,
            )
            return 0
        self.events("locked_settled", len(proofs))
        return len(proofs)

    async def refresh_locked(self) -> int:
        """Reads the queue of locked proofs (for the gauges); returns how many wait."""
        self.locked.count, self.locked.oldest = await self.ledger.locked_summary()
        return self.locked.count

    async def _new_swap(
        self,
        swap_id: str,
        kind: SwapKind,
        mint: str,
        inputs: Sequence[Proof],
        amounts: Callable[[dict[int, str]], Sequence[int]],
        grant: Grant | None = None,
    ) -> NewSwap:
        """A swap of `inputs` into outputs of the mint's active keyset; `amounts` splits what
        they are worth by that keyset's denominations."""
        keyset, keys = await self.keysets(mint).active()
        return NewSwap(
            id=swap_id,
            kind=kind,
            mint=mint,
            unit=self.unit,
            keyset_id=keyset.id,
            amounts=tuple(amounts(keys)),
            inputs=tuple(inputs),
            grant=grant,
        )

    async def _swap_in(
        self,
        mint: str,
        fingerprint: str,
        inputs: Sequence[Proof],
        net: int,
        grant: Grant,
        admit: Callable[[], None],
    ) -> None:
        """A new swap of `inputs` into outputs worth `net`; catches our counters up once if the
        mint has signed them before (a lost or restored ledger)."""
        if net <= 0:
            raise PaymentRejected(
                "insufficient_after_fees", "The mint's fee takes the whole token; send more."
            )
        admit()
        for attempt in range(2):
            swap = await self._new_swap(
                fingerprint,
                SwapKind.REDEEM,
                mint,
                inputs,
                lambda keys: split_amount(net, keys),
                grant,
            )
            try:
                await self.swaps.run(swap)
                return
            except CountersBehind as behind:
                if attempt:
                    raise SwapNotSettled("counters still behind after a restore") from None
                log.warning("outputs already signed at %s: restoring counters", mint)
                await self._restore_keyset(mint, swap.keyset_id, start=behind.first_counter)
            except SwapRefused as refused:
                if attempt or not refused.keyset_gone:
                    raise
                log.warning("keyset %s retired at %s: asking again", swap.keyset_id[:16], mint)
                self.keysets(mint).forget_active()

    async def recover_pending(self) -> int:
        """Settles open swap records (interrupted by a crash or a lost answer) where the mint
        can tell; returns how many are settled or abandoned. The others stay for next time."""
        done = 0
        for record in await self.ledger.swap_records():
            if record.mint not in self.allowed:
                continue
            try:
                await self.swaps.resolve(record)
                done += 1
            except SwapRefused as exc:
                log.info("swap %s abandoned: %s", record.id[:16], exc)
                done += 1
            except (SwapGone, SwapBusy):
                continue  # a request or another process finished it meanwhile, or holds it
            except (SwapNotSettled, MintError) as exc:
                log.warning("swap %s not settled yet: %s", record.id[:16], exc)
        return done

    async def refresh_open_swaps(self) -> int:
        """Reads the open swap records (for the gauges); returns how many there are."""
        records = await self.ledger.swap_records()
        self.open_swaps.count = len(records)
        self.open_swaps.oldest = min((r.created_at for r in records), default=0.0)
        return len(records)

    # -- operator ------------------------------------------------------------------------------

    async def restore(self, mint: str | None = None) -> tuple[int, int]:
        """Finds every proof ever issued to this seed (NUT-09 + NUT-13) at the allow-listed
        mints, stores the unspent ones and moves the counters past them.

        Returns (proofs restored, their amount). Proofs already known keep their state.
        """
        mints = [normalize_mint_url(mint)] if mint else sorted(self.allowed)
        count = amount = 0
        for url in mints:
            if url not in self.allowed:
                raise WalletError(f"{url} is not an accepted mint")
            try:
                for keyset in await self.keysets(url).keysets(refresh=True):
                    if keyset.unit == self.unit:
                        found = await self._restore_keyset(url, keyset.id)
                        count += len(found)
                        amount += sum(p.amount for p in found)
            except MintError as exc:
                raise WalletError(f"cannot restore from {url}: {exc}") from None
        return count, amount

    async def _restore_keyset(self, mint: str, keyset_id: str, start: int = 0) -> list[Proof]:
        client = self.client(mint)
        keys = await self._keys(mint, keyset_id)
        mark = await self.ledger.counter_mark(keyset_id)
        restored, next_counter = await scan(
            client, self.seed, keyset_id, keys, start=start, mark=mark
        )
        await self.ledger.advance_counter(keyset_id, next_counter)
        if not restored:
            return []
        states = await client.check_state([p.y() for p in restored])
        unspent = [p for p, st in zip(restored, states, strict=True) if st == "UNSPENT"]
        spent = [p.y() for p, st in zip(restored, states, strict=True) if st == "SPENT"]
        new = await self.ledger.add_restored(mint, self.unit, unspent, spent)
        log.info(
            "restored keyset %s at %s: %d signed, %d unspent, %d new",
            keyset_id[:16],
            mint,
            len(restored),
            len(unspent),
            len(new),
        )
        return new

    async def balances(self) -> list[Balance]:
        """Spendable and pending amounts; first settles withdrawals the mint has seen spent."""
        await self.settle_withdrawals()
        return await self.ledger.balances()

    async def settle_withdrawals(self) -> None:
        pending = await self.ledger.pending_withdrawn()
        by_mint: dict[str, list[Proof]] = {}
        for _wid, mint, proof in pending:
            by_mint.setdefault(mint, []).append(proof)
        for mint, proofs in by_mint.items():
            if mint not in self.allowed:
                continue
            try:
                states = await self.client(mint).check_state([p.y() for p in proofs])
            except MintError as exc:
                log.warning("cannot check withdrawals at %s: %s", mint, exc)
                continue
            spent = [p.y() for p, s in zip(proofs, states, strict=True) if s == "SPENT"]
            if spent:
                await self.ledger.settle_withdrawn(spent)

    async def withdraw(self, amount: int, mint: str | None = None) -> tuple[str, str, int]:
        """Hands out `amount` as a V4 token; returns (token, withdrawal id, amount).

        Exact change comes from a swap at the mint (fee paid from the wallet), recorded like a
        redemption: an answer lost on the way is found out later, never lost. The handed-out
        proofs stay 'pending' until the mint reports them spent.
        """
        if amount <= 0:
            raise WalletError("amount must be positive")
        async with self._payout_lock:
            balances = await self.ledger.balances()
            mint = self._payout_mint(mint, balances)
            proofs = await self.ledger.unspent_proofs(mint, self.unit)
            available = sum(p.amount for p in proofs)
            chosen = select_proofs(proofs, amount)
            if chosen is None:
                raise WalletError(
                    f"not enough ecash at {mint}: wanted {amount} {self.unit}, "
                    f"{available} {self.unit} available"
                )
            wid = secrets.token_hex(8)
            try:
                if sum(p.amount for p in chosen) != amount:
                    chosen = await self._split_for(mint, chosen, amount, wid)
                await self.ledger.mark_withdrawn(wid, mint, self.unit, chosen)
            except SwapRefused as exc:
                raise WalletError(f"the mint refused the swap: {exc.detail[:200]}") from None
            except ProofsTaken:
                raise WalletError(
                    "another withdrawal (another replica?) took these proofs first; try again"
                ) from None
            except SwapNotSettled:
                raise WalletError(
                    "the mint did not answer the change swap; it is settled in the background "
                    "(the amount stays in the wallet): try again shortly"
                ) from None
            except MintError as exc:
                raise WalletError(f"the mint cannot be used right now: {exc}") from None
            token = Token(mint=mint, unit=self.unit, proofs=tuple(chosen), memo=None, version=4)
            return encode_token_v4(token), wid, amount

    def _payout_mint(self, mint: str | None, balances: Sequence[Balance]) -> str:
        if mint:
            url = normalize_mint_url(mint)
            if url not in self.allowed:
                raise WalletError(f"{url} is not an accepted mint")
            return url
        funded = sorted({b.mint for b in balances if b.unit == self.unit and b.spendable > 0})
        if len(funded) != 1:
            raise WalletError(
                "the wallet holds ecash of several mints; name one with --mint"
                if funded
                else "the wallet is empty"
            )
        return funded[0]

    async def _split_for(
        self, mint: str, inputs: list[Proof], amount: int, wid: str
    ) -> list[Proof]:
        """Swaps `inputs` into a part worth `amount` (returned) and change (kept)."""
        keysets = self.keysets(mint)
        await keysets.keysets()  # the fee table
        fee = input_fee(inputs, keysets.fee_ppk())
        change = sum(p.amount for p in inputs) - fee - amount
        if change < 0:
            raise WalletError(f"not enough ecash at {mint} to pay {amount} plus a fee of {fee}")
        send: list[int] = []

        def amounts(keys: dict[int, str]) -> list[int]:
            send[:] = split_amount(amount, keys)  # the first outputs: handed out
            return [*send, *split_amount(change, keys)]

        swap = await self._new_swap(f"withdraw:{wid}", SwapKind.WITHDRAW, mint, inputs, amounts)
        new = await self.swaps.run(swap)
        return new[: len(send)]


def _unreachable(mint: str, exc: MintError) -> TryAgainLater:
    if isinstance(exc, MintProtocolError):
        log.error("mint %s answered out of protocol: %s", mint, exc)
        return TryAgainLater("mint_protocol_error", "The mint gave an answer Paygress cannot use.")
    log.warning("mint %s unavailable: %s", mint, exc)
    return TryAgainLater(
        "mint_unavailable", "The mint cannot be reached right now; try again shortly."
    )
