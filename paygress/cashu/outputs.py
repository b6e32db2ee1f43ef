"""Pure wallet arithmetic: denominations, NUT-02 fees, outputs, unblinding, coin selection."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from paygress.cashu.crypto import blind_message, unblind_signature, verify_dleq
from paygress.cashu.errors import MintProtocolError
from paygress.cashu.models import DLEQ, BlindSignature, PreparedOutput, Proof
from paygress.cashu.nut13 import Seed

__all__ = ["input_fee", "prepare_outputs", "select_proofs", "split_amount", "unblind"]

_MAX_SUBSET_STATES = 4096


def split_amount(amount: int, denominations: Iterable[int]) -> list[int]:
    """Greedy split of ``amount`` into the available denominations, ascending.

    ``denominations`` are the keyset's amounts (the keys of ``GET /v1/keys``). Raises
    ValueError for a negative amount or one the denominations cannot represent.
    """
    if amount < 0:
        raise ValueError("amount must be non-negative")
    denoms = sorted({d for d in denominations if d > 0}, reverse=True)
    parts: list[int] = []
    remaining = amount
    for d in denoms:
        if remaining >= d:
            count, remaining = divmod(remaining, d)
            parts.extend([d] * count)
    if remaining:
        raise ValueError("amount cannot be represented with the keyset's denominations")
    parts.reverse()
    return parts


def input_fee(proofs: Iterable[Proof], fee_ppk_by_keyset: Mapping[str, int]) -> int:
    """NUT-02 input fee: ``ceil(sum(input_fee_ppk of each proof's keyset) / 1000)``."""
    total_ppk = 0
    for proof in proofs:
        try:
            total_ppk += fee_ppk_by_keyset[proof.keyset_id]
        except KeyError:
            raise ValueError(f"no input_fee_ppk known for keyset {proof.keyset_id}") from None
    return (total_ppk + 999) // 1000


def prepare_outputs(
    seed: Seed, keyset_id: str, counter_start: int, amounts: Sequence[int]
) -> list[PreparedOutput]:
    """Deterministic outputs for ``amounts`` using counters ``counter_start, +1, ...``."""
    outputs: list[PreparedOutput] = []
    for offset, amount in enumerate(amounts):
        if amount <= 0:
            raise ValueError("output amounts must be positive")
        counter = counter_start + offset
        secret, r = seed.derive(keyset_id, counter)
        outputs.append(
            PreparedOutput(
                amount=amount,
                keyset_id=keyset_id,
                secret=secret,
                r=r,
                B_=blind_message(secret.encode("utf-8"), r),
                counter=counter,
            )
        )
    return outputs


def unblind(
    outputs: Sequence[PreparedOutput],
    signatures: Sequence[BlindSignature],
    keys: Mapping[int, str],
    *,
    require_dleq: bool = False,
) -> list[Proof]:
    """Turn the mint's signatures on ``outputs`` (same order) into proofs.

    ``keys`` maps amount -> mint public key of the outputs' keyset. A DLEQ, when present,
    is verified (NUT-12 "MUST"); any mismatch raises MintProtocolError.
    """
    if len(outputs) != len(signatures):
        raise MintProtocolError(
            f"mint returned {len(signatures)} signatures for {len(outputs)} outputs"
        )
    proofs: list[Proof] = []
    for index, (out, sig) in enumerate(zip(outputs, signatures, strict=True)):
        if sig.amount != out.amount or sig.keyset_id != out.keyset_id:
            raise MintProtocolError(f"signature {index} does not match its output")
        mint_key = keys.get(sig.amount)
        if mint_key is None:
            raise MintProtocolError(f"no mint key for amount {sig.amount}")
        dleq: DLEQ | None = None
        if sig.dleq is not None:
            if not verify_dleq(out.B_, sig.C_, sig.dleq.e, sig.dleq.s, mint_key):
                raise MintProtocolError(f"DLEQ proof of signature {index} is invalid")
            dleq = DLEQ(e=sig.dleq.e, s=sig.dleq.s, r=out.r.hex())
        elif require_dleq:
            raise MintProtocolError(f"signature {index} has no DLEQ proof")
        try:
            c = unblind_signature(sig.C_, out.r, mint_key)
        except ValueError:
            raise MintProtocolError(f"signature {index} cannot be unblinded") from None
        proofs.append(
            Proof(keyset_id=out.keyset_id, amount=out.amount, secret=out.secret, C=c, dleq=dleq)
        )
    return proofs


def _exact_subset(proofs: Sequence[Proof], amount: int) -> list[Proof] | None:
    """Bounded subset-sum search for a selection summing exactly to ``amount``."""
    # greedy first: exact whenever amounts are powers of two
    chosen: list[Proof] = []
    remaining = amount
    for p in sorted(proofs, key=lambda p: p.amount, reverse=True):
        if p.amount <= remaining:
            chosen.append(p)
            remaining -= p.amount
    if remaining == 0:
        return chosen
    # small dynamic programme over reachable sums (capped to keep it cheap)
    reach: dict[int, tuple[int, ...]] = {0: ()}
    for i, p in enumerate(proofs):
        for total, picked in list(reach.items()):
            new_total = total + p.amount
            if new_total <= amount and new_total not in reach:
                reach[new_total] = (*picked, i)
                if new_total == amount:
                    return [proofs[j] for j in reach[new_total]]
        if len(reach) > _MAX_SUBSET_STATES:
            break
    return None


def select_proofs(proofs: Sequence[Proof], amount: int) -> list[Proof] | None:
    """Pick proofs summing to at least ``amount``, preferring an exact match.

    Otherwise minimise the overshoot (then the number of proofs). None if the total is short.
    """
    if amount <= 0:
        return []
    if sum(p.amount for p in proofs) < amount:
        return None
    exact = _exact_subset(proofs, amount)
    if exact is not None:
        return exact
    # largest first until covered, then drop what is not needed (smallest first)
    order = sorted(range(len(proofs)), key=lambda i: proofs[i].amount, reverse=True)
    chosen: list[int] = []
    total = 0
    for i in order:
        if total >= amount:
            break
        chosen.append(i)
        total += proofs[i].amount
    for i in sorted(chosen, key=lambda i: proofs[i].amount):
        if total - proofs[i].amount >= amount:
            chosen.remove(i)
            total -= proofs[i].amount
    candidates = [[proofs[i] for i in chosen]]
    single = min((p for p in proofs if p.amount >= amount), key=lambda p: p.amount, default=None)
    if single is not None:
        candidates.append([single])
    return min(candidates, key=lambda c: (sum(p.amount for p in c), len(c)))
