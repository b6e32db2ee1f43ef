"""Immutable Cashu value objects (NUT-00/01/02/12). Hex strings are lowercase."""

from __future__ import annotations

from dataclasses import dataclass, field

from paygress.cashu.crypto import hash_to_curve

__all__ = [
    "DLEQ",
    "BlindSignature",
    "BlindedMessage",
    "KeysetInfo",
    "PreparedOutput",
    "Proof",
    "Token",
]


@dataclass(frozen=True, slots=True)
class DLEQ:
    """NUT-12 DLEQ proof; ``r`` (blinding factor) only travels wallet-to-wallet."""

    e: str
    s: str
    r: str | None = None


@dataclass(frozen=True, slots=True)
class Proof:
    """An unblinded ecash note. ``keyset_id`` may be a short (16 hex) v2 id from a V4 token.

    ``repr`` omits the secret, the DLEQ (which holds ``r``) and the witness.
    """

    keyset_id: str
    amount: int
    secret: str = field(repr=False)
    C: str
    dleq: DLEQ | None = field(default=None, repr=False)
    witness: str | None = field(default=None, repr=False)
    _y: str | None = field(default=None, init=False, repr=False, compare=False)

    def with_keyset_id(self, keyset_id: str) -> Proof:
        """The same proof naming its keyset by another id (a short id expanded); keeps the
        cached Y."""
        copy = Proof(
            keyset_id=keyset_id,
            amount=self.amount,
            secret=self.secret,
            C=self.C,
            dleq=self.dleq,
            witness=self.witness,
        )
        object.__setattr__(copy, "_y", self._y)
        return copy

    def y(self) -> str:
        """Hex of compressed ``hash_to_curve(secret)``: the NUT-07 state key (cached)."""
        y = self._y
        if y is None:
            y = hash_to_curve(self.secret.encode("utf-8")).format().hex()
            object.__setattr__(self, "_y", y)
        return y


@dataclass(frozen=True, slots=True)
class Token:
    """A decoded token: proofs from a single mint in a single unit."""

    mint: str
    unit: str
    proofs: tuple[Proof, ...]
    memo: str | None
    version: int

    @property
    def amount(self) -> int:
        """Sum of the proof amounts."""
        return sum(p.amount for p in self.proofs)


@dataclass(frozen=True, slots=True)
class KeysetInfo:
    """One entry of ``GET /v1/keysets`` (NUT-02)."""

    id: str
    unit: str
    active: bool
    input_fee_ppk: int


@dataclass(frozen=True, slots=True)
class BlindedMessage:
    """An output sent to the mint for signing (NUT-00)."""

    amount: int
    keyset_id: str
    B_: str


@dataclass(frozen=True, slots=True)
class BlindSignature:
    """The mint's signature on a BlindedMessage, optionally with a DLEQ (e, s)."""

    amount: int
    keyset_id: str
    C_: str
    dleq: DLEQ | None


@dataclass(frozen=True, slots=True)
class PreparedOutput:
    """A deterministic (NUT-13) output plus the private data needed to unblind it."""

    amount: int
    keyset_id: str
    secret: str = field(repr=False)
    r: bytes = field(repr=False)
    B_: str
    counter: int

    def message(self) -> BlindedMessage:
        """The public part that is sent to the mint."""
        return BlindedMessage(amount=self.amount, keyset_id=self.keyset_id, B_=self.B_)
