"""The operator's wallet: redeems tokens into seed-derived proofs (NUT-03, NUT-13) and pays out.

The only module that talks to mints. It refuses to build a client for a mint that is not
allow-listed, so a token can never make Paygress contact an arbitrary host.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import replace

from paygress.cashu.mint_client import MintClient, MintProtocolError, MintRejected, MintUnavailable
from paygress.cashu.models import BlindSignature, KeysetInfo, PreparedOutput, Proof, Token
from paygress.cashu.nut13 import Seed
from paygress.cashu.outputs import input_fee, prepare_outputs, select_proofs, split_amount, unblind
from paygress.cashu.token import encode_token_v4
from paygress.core.model import Grant, Received
from paygress.core.ports import MintUnreachable, PaymentRejected
from paygress.core.pricing import normalize_mint_url
from paygress.store.sqlite import Balance, PendingSwap, SqliteStore

log = logging.getLogger("paygress.wallet")

ClientFactory = Callable[[str], MintClient]


class WalletError(RuntimeError):
    """An operator wallet operation (withdraw) could not be done; the message says why."""


class OperatorWallet:
    """Redeems tokens at allow-listed mints and keeps the proofs in the store."""

    def __init__(
        self,
        store: SqliteStore,
        seed: Seed,
        mints: Sequence[str],
        unit: str,
        *,
        timeout: float = 5.0,
        client_factory: ClientFactory | None = None,
    ) -> None:
        self.store = store
        self.seed = seed
        self.unit = unit
        self.allowed = frozenset(normalize_mint_url(m) for m in mints)
        self._factory = client_factory or (lambda url: MintClient(url, timeout=timeout))
        self._clients: dict[str, MintClient] = {}
        self._keysets: dict[str, list[KeysetInfo]] = {}
        self._keys: dict[str, dict[int, str]] = {}
        self._payout_lock = asyncio.Lock()

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

    # -- redeem ------------------------------------------------------------------------------

    async def redeem(
        self, token: Token, fingerprint: str, grant_for: Callable[[Received], Grant]
    ) -> Grant:
        """Swaps the token's proofs for new ones from our seed; stores them with the grant."""
        mint = normalize_mint_url(token.mint)
        self.client(mint)  # refuses a mint off the allow-list before anything else
        try:
            inputs = await self._full_keyset_ids(mint, token.proofs)
            ppk = self._fee_ppk(mint)
            fee = input_fee(inputs, ppk)
            allowance = _fee_allowance(token.amount, max(ppk[p.keyset_id] for p in inputs))
            grant = grant_for(Received(amount_in=token.amount, fee=fee, fee_allowance=allowance))
            net = token.amount - fee
            swap = await self.store.get_swap(fingerprint)
            if swap is not None:
                recovered = await self._recover(swap)
                if recovered is not None:
                    return recovered
                outputs = self._outputs(swap.keyset_id, swap.counter_start, swap.amounts)
                signatures = await self._swap(fingerprint, mint, inputs, outputs, grant)
            else:
                try:
                    outputs, signatures = await self._fresh_swap(
                        fingerprint, mint, inputs, net, grant
                    )
                except MintRejected as exc:
                    if not exc.outputs_already_signed:
                        raise
                    # Our counters are behind the mint (a lost or restored database): catch
                    # up from the mint (NUT-09) and try once more with fresh outputs.
                    log.warning("outputs already signed at %s: restoring counters", mint)
                    await self._restore_keyset(mint, (await self._active_keyset(mint))[0].id)
                    outputs, signatures = await self._fresh_swap(
                        fingerprint, mint, inputs, net, grant
                    )
            proofs = unblind(outputs, signatures, self._keys[outputs[0].keyset_id])
            await self.store.commit_swap(fingerprint, mint, self.unit, proofs, grant=grant)
            return grant
        except MintRejected as exc:
            if exc.is_spent:
                raise PaymentRejected(
                    "already_spent", "The mint says this token is already spent."
                ) from None
            raise PaymentRejected(
                "mint_rejected", f"The mint refused the token: {exc.detail[:200]}"
            ) from None
        except MintUnavailable as exc:
            log.warning("mint %s unavailable: %s", mint, exc)
            raise MintUnreachable(
                "mint_unavailable", "The mint cannot be reached right now; try again shortly."
            ) from None
        except MintProtocolError as exc:
            log.error("mint %s answered out of protocol: %s", mint, exc)
            raise MintUnreachable(
                "mint_protocol_error", "The mint gave an answer Paygress cannot use."
            ) from None

    async def _fresh_swap(
        self, fingerprint: str, mint: str, inputs: list[Proof], net: int, grant: Grant
    ) -> tuple[list[PreparedOutput], list[BlindSignature]]:
        """Swaps `inputs` for outputs worth `net` on new counters of the active keyset."""
        keyset, keys = await self._active_keyset(mint)
        amounts = split_amount(net, keys)
        start = await self.store.reserve_counters(keyset.id, len(amounts))
        outputs = self._outputs(keyset.id, start, tuple(amounts))
        return outputs, await self._swap(fingerprint, mint, inputs, outputs, grant)

    async def _swap(
        self,
        fingerprint: str,
        mint: str,
        inputs: list[Proof],
        outputs: list[PreparedOutput],
        grant: Grant | None,
    ) -> list[BlindSignature]:
        """Records the swap (for recovery), then sends it; a refusal forgets the record."""
        await self.store.begin_swap(
            PendingSwap(
                fingerprint,
                mint,
                self.unit,
                outputs[0].keyset_id,
                outputs[0].counter,
                tuple(o.amount for o in outputs),
                grant,
            )
        )
        try:
            return await self.client(mint).swap(inputs, [o.message() for o in outputs])
        except MintRejected:
            await self.store.drop_swap(fingerprint)
            raise

    def _outputs(self, keyset_id: str, start: int, amounts: Sequence[int]) -> list[PreparedOutput]:
        return prepare_outputs(self.seed, keyset_id, start, amounts)

    async def _recover(self, swap: PendingSwap) -> Grant | None:
        """Finishes a swap whose answer was lost: asks the mint to restore its signatures."""
        outputs = self._outputs(swap.keyset_id, swap.counter_start, swap.amounts)
        client = self.client(swap.mint)
        _, signatures = await client.restore([o.message() for o in outputs])
        if len(signatures) != len(outputs):
            return None
        keys = await self._keys_of(client, swap.keyset_id)
        proofs = unblind(outputs, signatures, keys)
        await self.store.commit_swap(
            swap.fingerprint, swap.mint, swap.unit, proofs, grant=swap.grant
        )
        log.info("recovered swap %s from the mint", swap.fingerprint[:16])
        return swap.grant

    async def recover_pending(self) -> int:
        """At start: secures the ecash of swaps interrupted by a crash; returns how many."""
        done = 0
        for swap in await self.store.pending_swaps():
            if swap.mint not in self.allowed:
                continue
            try:
                if await self._recover(swap) is not None:
                    done += 1
                else:
                    await self.store.drop_swap(swap.fingerprint)
            except (MintUnavailable, MintRejected, MintProtocolError) as exc:
                log.warning("swap %s not recovered yet: %s", swap.fingerprint[:16], exc)
        return done

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
                for keyset in await self._keysets_of(url, refresh=True):
                    if keyset.unit == self.unit:
                        found = await self._restore_keyset(url, keyset.id)
                        count += len(found)
                        amount += sum(p.amount for p in found)
            except (MintUnavailable, MintRejected, MintProtocolError) as exc:
                raise WalletError(f"cannot restore from {url}: {exc}") from None
        return count, amount

    async def _restore_keyset(
        self, mint: str, keyset_id: str, batch: int = 100, empty_batches: int = 3
    ) -> list[Proof]:
        """Restores one keyset's proofs; stops after `empty_batches` batches with none."""
        client = self.client(mint)
        keys = await self._keys_of(client, keyset_id)
        restored: list[Proof] = []
        start, empty, next_counter = 0, 0, 0
        while empty < empty_batches:
            # The mint tells the amounts; the messages carry a dummy one (as NUT-09 wallets do).
            outputs = self._outputs(keyset_id, start, [1] * batch)
            returned, signatures = await client.restore([o.message() for o in outputs])
            by_b = {o.B_: o for o in outputs}
            for message, signature in zip(returned, signatures, strict=True):
                output = replace(by_b[message.B_], amount=signature.amount)
                restored += unblind([output], [signature], keys, require_dleq=True)
                next_counter = max(next_counter, output.counter + 1)
            empty = 0 if signatures else empty + 1
            start += batch
        await self.store.advance_counter(keyset_id, next_counter)
        if not restored:
            return []
        states = await client.check_state([p.y() for p in restored])
        unspent = [p for p, st in zip(restored, states, strict=True) if st == "UNSPENT"]
        spent = [p.y() for p, st in zip(restored, states, strict=True) if st == "SPENT"]
        new = await self.store.add_restored(mint, self.unit, unspent, spent)
        log.info(
            "restored keyset %s at %s: %d signed, %d unspent, %d new",
            keyset_id[:16],
            mint,
            len(restored),
            len(unspent),
            len(new),
        )
        return new

    async def _full_keyset_ids(self, mint: str, proofs: Sequence[Proof]) -> list[Proof]:
        """The proofs with full keyset ids; unknown keysets refresh the mint's list once."""
        for attempt in range(2):
            keysets = await self._keysets_of(mint, refresh=attempt > 0)
            ids = {k.id for k in keysets}
            resolved = [_resolve(p, ids) for p in proofs]
            if all(p is not None for p in resolved):
                return [p for p in resolved if p is not None]
        raise PaymentRejected("unknown_keyset", "The token names a keyset this mint does not have.")

    def _fee_ppk(self, mint: str) -> dict[str, int]:
        """NUT-02 input fee per keyset id of a mint whose keysets are loaded."""
        return {k.id: k.input_fee_ppk for k in self._keysets[mint]}

    async def _keysets_of(self, mint: str, *, refresh: bool = False) -> list[KeysetInfo]:
        if refresh or mint not in self._keysets:
            self._keysets[mint] = await self.client(mint).keysets()
        return self._keysets[mint]

    async def _active_keyset(self, mint: str) -> tuple[KeysetInfo, dict[int, str]]:
        active = [k for k in await self._keysets_of(mint) if k.active and k.unit == self.unit]
        if not active:
            active = [
                k
                for k in await self._keysets_of(mint, refresh=True)
                if k.active and k.unit == self.unit
            ]
        if not active:
            raise MintProtocolError(f"mint has no active keyset for unit {self.unit}")
        keyset = min(active, key=lambda k: (k.input_fee_ppk, k.id))
        return keyset, await self._keys_of(self.client(mint), keyset.id)

    async def _keys_of(self, client: MintClient, keyset_id: str) -> dict[int, str]:
        if keyset_id not in self._keys:
            self._keys[keyset_id] = await client.keys(keyset_id)
        return self._keys[keyset_id]

    # -- operator ------------------------------------------------------------------------------

    async def balances(self) -> list[Balance]:
        """Spendable and pending amounts; first settles withdrawals the mint has seen spent."""
        await self.settle_withdrawals()
        return await self.store.balances()

    async def settle_withdrawals(self) -> None:
        pending = await self.store.pending_withdrawn()
        by_mint: dict[str, list[Proof]] = {}
        for _wid, mint, proof in pending:
            by_mint.setdefault(mint, []).append(proof)
        for mint, proofs in by_mint.items():
            if mint not in self.allowed:
                continue
            try:
                states = await self.client(mint).check_state([p.y() for p in proofs])
            except (MintUnavailable, MintRejected, MintProtocolError) as exc:
                log.warning("cannot check withdrawals at %s: %s", mint, exc)
                continue
            spent = [p.y() for p, s in zip(proofs, states, strict=True) if s == "SPENT"]
            if spent:
                await self.store.settle_withdrawn(spent)

    async def withdraw(self, amount: int, mint: str | None = None) -> tuple[str, str, int]:
        """Hands out `amount` as a V4 token; returns (token, withdrawal id, amount).

        Exact change comes from a swap at the mint (fee paid from the wallet). The handed-out
        proofs stay 'pending' until the mint reports them spent.
        """
        if amount <= 0:
            raise WalletError("amount must be positive")
        async with self._payout_lock:
            mint = self._payout_mint(mint, await self.store.balances())
            proofs = await self.store.unspent_proofs(mint, self.unit)
            wid = secrets.token_hex(8)
            chosen = select_proofs(proofs, amount)
            if chosen is None:
                raise WalletError(f"not enough ecash at {mint}: wanted {amount} {self.unit}")
            try:
                if sum(p.amount for p in chosen) != amount:
                    chosen = await self._split_for(mint, chosen, amount, wid)
                else:
                    await self.store.mark_withdrawn(wid, mint, self.unit, chosen)
            except MintRejected as exc:
                raise WalletError(f"the mint refused the swap: {exc.detail[:200]}") from None
            except (MintUnavailable, MintProtocolError) as exc:
                raise WalletError(f"the mint cannot be used right now: {exc}") from None
            token = Token(mint=mint, unit=self.unit, proofs=tuple(chosen), memo=None, version=4)
            return encode_token_v4(token), wid, amount

    def _payout_mint(self, mint: str | None, balances: Sequence[Balance]) -> str:
        if mint:
            return normalize_mint_url(mint)
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
        keyset, keys = await self._active_keyset(mint)
        fee = input_fee(inputs, self._fee_ppk(mint))
        total = sum(p.amount for p in inputs)
        change = total - fee - amount
        if change < 0:
            raise WalletError(f"not enough ecash at {mint} to pay {amount} plus a fee of {fee}")
        send_amounts = split_amount(amount, keys)
        keep_amounts = split_amount(change, keys)
        count = len(send_amounts) + len(keep_amounts)
        start = await self.store.reserve_counters(keyset.id, count)
        outputs = self._outputs(keyset.id, start, (*send_amounts, *keep_amounts))
        signatures = await self.client(mint).swap(inputs, [o.message() for o in outputs])
        new = unblind(outputs, signatures, keys)
        send = new[: len(send_amounts)]
        await self.store.commit_swap(
            f"withdraw:{wid}",
            mint,
            self.unit,
            new,
            spent=[p.y() for p in inputs],
            pending_withdrawal=(wid, send),
        )
        return send


def _fee_allowance(amount: int, fee_ppk: int) -> int:
    """The input fee of `amount` sent in the fewest proofs (one per power of two)."""
    return (bin(amount).count("1") * fee_ppk + 999) // 1000


def _resolve(proof: Proof, ids: set[str]) -> Proof | None:
    if proof.keyset_id in ids:
        return proof
    matches = [i for i in ids if i.startswith(proof.keyset_id)]
    if len(matches) != 1:
        return None
    return Proof(
        keyset_id=matches[0],
        amount=proof.amount,
        secret=proof.secret,
        C=proof.C,
        dleq=proof.dleq,
        witness=proof.witness,
    )
