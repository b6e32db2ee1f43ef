"""Checks of a token's proofs that need no mint call, only the mint's public keys.

NUT-12: a proof that carries a DLEQ proof (e, s, r) proves, offline, that the mint signed it.
A token whose every proof does is *proven*: it is either real or spent, never made up. Checking
stops at the first proof that fails, so a made-up token costs one check at most.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from paygress.cashu.crypto import verify_proof_dleq
from paygress.cashu.models import Proof


@dataclass(frozen=True, slots=True)
class ProofProblem:
    reason: str
    message: str


def check_proofs(
    proofs: Sequence[Proof], keys: Mapping[str, Mapping[int, str]], *, require_dleq: bool
) -> tuple[bool, ProofProblem | None]:
    """(proven, problem): `proven` when every proof's DLEQ proof is valid; `problem` for the
    first proof that cannot be right (an amount the keyset has no key for, an invalid DLEQ
    proof, or no DLEQ proof where one is required)."""
    proven = True
    for index, proof in enumerate(proofs):
        key = keys[proof.keyset_id].get(proof.amount)
        if key is None:
            return False, ProofProblem(
                "invalid_amount", f"Proof {index} has an amount the mint's keyset does not sign."
            )
        if proof.dleq is None or proof.dleq.r is None:
            proven = False
            if require_dleq:
                return False, ProofProblem(
                    "dleq_required",
                    "This gateway accepts only tokens whose proofs carry DLEQ proofs (NUT-12).",
                )
            continue
        if not verify_proof_dleq(proof, key):
            return False, ProofProblem(
                "invalid_dleq", f"The DLEQ proof of proof {index} is not valid: not the mint's."
            )
    return proven, None
