"""Value objects: Y caching, equality/hash, no secrets in repr."""

from __future__ import annotations

import dataclasses

import pytest

from paygress.cashu.crypto import hash_to_curve
from paygress.cashu.models import DLEQ, BlindedMessage, PreparedOutput, Proof, Token

C = "02a9acc1e48c25eeeb9289b5031cc57da9fe72f3fe2861d264bdc074209b107ba2"


def test_proof_y_cached_and_excluded_from_equality() -> None:
    p = Proof("00ad268c4d1f5826", 1, "topsecret", C)
    q = Proof("00ad268c4d1f5826", 1, "topsecret", C)
    assert p.y() == hash_to_curve(b"topsecret").format().hex()
    assert p.y() is p.y()  # second call hits the cache
    assert p == q and hash(p) == hash(q)  # q has no cached Y yet
    changed = dataclasses.replace(p, secret="other")
    assert changed.y() == hash_to_curve(b"other").format().hex()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.amount = 2  # type: ignore[misc]


def test_repr_hides_secret_material() -> None:
    p = Proof("00ad268c4d1f5826", 1, "topsecret", C, DLEQ("aa", "bb", "rr"), "witness")
    token = Token("https://m", "sat", (p,), None, 4)
    for text in (repr(p), repr(token)):
        assert "topsecret" not in text and "rr" not in text and "witness" not in text
    out = PreparedOutput(1, "00ad268c4d1f5826", "topsecret", b"\x07" * 32, C, 3)
    assert "topsecret" not in repr(out) and "0707" not in repr(out)
    assert out.message() == BlindedMessage(1, "00ad268c4d1f5826", C)


def test_token_amount() -> None:
    proofs = tuple(Proof("00ad268c4d1f5826", a, f"s{a}", C) for a in (1, 2, 8))
    assert Token("https://m", "sat", proofs, None, 3).amount == 11
    assert Token("https://m", "sat", (), None, 3).amount == 0
