"""Blind Diffie-Hellman key exchange (NUT-00) and DLEQ proofs (NUT-12) on secp256k1.

Points travel as hex of the 33-byte compressed encoding; scalars as 32-byte big-endian.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from coincurve import PublicKey

if TYPE_CHECKING:
    from paygress.cashu.models import Proof

__all__ = [
    "DOMAIN_SEPARATOR",
    "SECP256K1_N",
    "blind_message",
    "hash_e",
    "hash_to_curve",
    "parse_point",
    "unblind_signature",
    "verify_dleq",
    "verify_proof_dleq",
]

DOMAIN_SEPARATOR = b"Secp256k1_HashToCurve_Cashu_"
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_FLIP = {2: 3, 3: 2}


def hash_to_curve(msg: bytes) -> PublicKey:
    """Map ``msg`` to a curve point: first valid ``02 || sha256(sha256(DST||msg) || ctr_le32)``."""
    msg_hash = hashlib.sha256(DOMAIN_SEPARATOR + msg).digest()
    for counter in range(2**16):
        candidate = hashlib.sha256(msg_hash + counter.to_bytes(4, "little")).digest()
        try:
            return PublicKey(b"\x02" + candidate)
        except ValueError:
            continue
    raise ValueError("hash_to_curve: no valid point found")  # pragma: no cover


def parse_point(hex_str: str) -> PublicKey:
    """Parse a 33-byte compressed point from hex; raise ValueError if it is not one."""
    if not isinstance(hex_str, str) or len(hex_str) != 66 or hex_str[:2] not in ("02", "03"):
        raise ValueError("not a compressed secp256k1 point")
    return PublicKey(bytes.fromhex(hex_str))


def _scalar(value: bytes) -> bytes:
    """Check that ``value`` is a valid non-zero 32-byte scalar and return it."""
    if len(value) != 32 or not 0 < int.from_bytes(value, "big") < SECP256K1_N:
        raise ValueError("invalid scalar")
    return value


def _neg(point: PublicKey) -> PublicKey:
    raw = point.format(compressed=True)
    return PublicKey(bytes([_FLIP[raw[0]]]) + raw[1:])


def _sub(a: PublicKey, b: PublicKey) -> PublicKey:
    """a - b (raises ValueError if the result is the point at infinity)."""
    return PublicKey.combine_keys([a, _neg(b)])


def hash_e(*points: PublicKey) -> bytes:
    """NUT-12 challenge: sha256 over the concatenated *hex* of uncompressed points."""
    joined = "".join(p.format(compressed=False).hex() for p in points)
    return hashlib.sha256(joined.encode("ascii")).digest()


def blind_message(secret: bytes, r: bytes) -> str:
    """Alice step 1: ``B_ = hash_to_curve(secret) + r*G`` (returns B_ hex)."""
    y = hash_to_curve(secret)
    return y.add(_scalar(r)).format(compressed=True).hex()


def unblind_signature(C_: str, r: bytes, K: str) -> str:
    """Alice step 3: ``C = C_ - r*K`` (returns C hex; ValueError on bad input)."""
    c_blind = parse_point(C_)
    r_k = parse_point(K).multiply(_scalar(r))
    return _sub(c_blind, r_k).format(compressed=True).hex()


def verify_dleq(B_: str, C_: str, e: str, s: str, A: str) -> bool:
    """Alice-side NUT-12 check that ``C_ = a*B_`` for the ``a`` behind ``A``. Never raises."""
    try:
        e_b = _scalar(bytes.fromhex(e))
        s_b = _scalar(bytes.fromhex(s))
        a_pt = parse_point(A)
        b_pt = parse_point(B_)
        c_pt = parse_point(C_)
        r1 = _sub(PublicKey.from_valid_secret(s_b), a_pt.multiply(e_b))
        r2 = _sub(b_pt.multiply(s_b), c_pt.multiply(e_b))
        return hash_e(r1, r2, a_pt, c_pt) == e_b
    except (ValueError, TypeError):
        return False


def verify_proof_dleq(proof: Proof, A: str) -> bool:
    """Carol-side NUT-12 check of a received proof using its blinding factor ``r``.

    False when the proof carries no DLEQ (or no ``r``), or the proof does not verify.
    """
    dleq = proof.dleq
    if dleq is None or dleq.r is None:
        return False
    try:
        r = _scalar(bytes.fromhex(dleq.r))
        a_pt = parse_point(A)
        y = hash_to_curve(proof.secret.encode("utf-8"))
        c_blind = PublicKey.combine_keys([parse_point(proof.C), a_pt.multiply(r)])
        b_blind = y.add(r)
    except (ValueError, TypeError, UnicodeError):
        return False
    return verify_dleq(
        b_blind.format(compressed=True).hex(),
        c_blind.format(compressed=True).hex(),
        dleq.e,
        dleq.s,
        A,
    )
