"""The operator's lock key: clients lock tokens to it (NUT-11 P2PK) so that nobody else can
spend them, which lets Paygress accept them offline and swap them later.

Derivation: the secp256k1 private key is HMAC-SHA256(seed, "paygress/p2pk-lock") read as a
big-endian integer modulo the group order (Seed.purpose_key). Every replica of one seed derives
the same key; `paygress pubkey` prints its public half (compressed, hex).
"""

from __future__ import annotations

from dataclasses import dataclass

from coincurve import PrivateKey

from paygress.cashu.crypto import SECP256K1_N
from paygress.cashu.nut11 import P2PKLock
from paygress.cashu.nut13 import Seed

PURPOSE = "p2pk-lock"


def lock_key(seed: Seed) -> PrivateKey:
    scalar = int.from_bytes(seed.purpose_key(PURPOSE), "big") % SECP256K1_N
    if scalar == 0:  # pragma: no cover - probability 2**-256
        raise ValueError("the seed derives no lock key")
    return PrivateKey(scalar.to_bytes(32, "big"))


def lock_pubkey(seed: Seed) -> str:
    return str(lock_key(seed).public_key.format(compressed=True).hex())


@dataclass(frozen=True, slots=True)
class OfflineSettings:
    """When tokens locked to us are accepted without asking the mint (`offline` config)."""

    accept_locked: bool = True
    locktime_margin_seconds: float = 600.0  # nobody else may spend them before now + this
    max_queue: int = 10_000  # locked proofs waiting for their swap; beyond: online path
    batch_proofs: int = 64  # proofs swapped together (whole tokens)


def can_sign(lock: P2PKLock, pubkey: str) -> bool:
    """Whether our signature alone spends a proof under `lock` (SIG_INPUTS, one signature)."""
    return pubkey in lock.pubkeys and lock.n_sigs == 1 and not lock.sig_all
