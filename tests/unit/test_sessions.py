"""Sessions as JWTs (paygress/sessions.py): the key's derivation, the JWKS, what is signed, and
that nothing but our own ES256 signature is ever read as a session."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from paygress.cashu.nut13 import Seed
from paygress.core.ports import SessionClaims
from paygress.sessions import P256_N, SessionSigner, jwks, public_jwk, session_key

MNEMONIC = "legal winner thank year wave sausage worth useful legal winner thank yellow"
SEED = Seed.from_mnemonic(MNEMONIC)
CLAIMS = SessionClaims("stream", "0123456789abcdef", 2_000_000_000, 30, "sat")
POD = SessionClaims(
    "pods", "fedcba9876543210", 2_000_000_000, 60, "sat", "pg-small-x", "10.0.0.7:8080"
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    head, body, sig = token.split(".")
    return json.loads(unb64(head)), json.loads(unb64(body)), unb64(sig)


def test_the_key_is_the_stated_derivation_of_the_seed() -> None:
    seed_bytes = SEED._seed
    material = hmac.new(seed_bytes, b"paygress/session", hashlib.sha256).digest()
    expected = int.from_bytes(material, "big") % (P256_N - 1) + 1
    assert session_key(SEED).private_numbers().private_value == expected
    rotated = hmac.new(seed_bytes, b"paygress/session/2", hashlib.sha256).digest()
    assert session_key(SEED, 2).private_numbers().private_value == (
        int.from_bytes(rotated, "big") % (P256_N - 1) + 1
    )
    # the group's order as the library knows it: n - 1 is the largest scalar, n is none
    ec.derive_private_key(P256_N - 1, ec.SECP256R1())
    with pytest.raises(ValueError):
        ec.derive_private_key(P256_N, ec.SECP256R1())


def test_jwks_holds_the_public_key_with_its_rfc7638_thumbprint_as_kid() -> None:
    [key] = jwks(SEED)["keys"]
    numbers = session_key(SEED).public_key().public_numbers()
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")
    assert int.from_bytes(unb64(key["x"]), "big") == numbers.x
    assert int.from_bytes(unb64(key["y"]), "big") == numbers.y
    canonical = json.dumps(
        {"crv": key["crv"], "kty": key["kty"], "x": key["x"], "y": key["y"]},
        separators=(",", ":"),
        sort_keys=True,
    )
    assert key["kid"] == b64(hashlib.sha256(canonical.encode()).digest())
    assert "d" not in key
    rotation = jwks(SEED, (0, 1))["keys"]
    assert [k["kid"] for k in rotation] == [
        key["kid"],
        public_jwk(session_key(SEED, 1).public_key())["kid"],
    ]
    assert rotation[0]["kid"] != rotation[1]["kid"]


def test_a_session_is_an_es256_jwt_with_the_claims_that_bind_it() -> None:
    signer = SessionSigner.from_seed(SEED)
    token = signer.sign(POD, issued_at=1_999_999_000)
    header, payload, sig = parts(token)
    assert header == {"alg": "ES256", "kid": signer.kid, "typ": "JWT"}
    assert payload == {
        "iss": "paygress",
        "aud": "pods",
        "sub": "fedcba9876543210",
        "exp": 2_000_000_000,
        "iat": 1_999_999_000,
        "paid": 60,
        "unit": "sat",
        "pod": "pg-small-x",
        "dst": "10.0.0.7:8080",
    }
    # Verified here without Paygress's reader: r || s over the signing input (RFC 7518 3.4).
    signing_input = token.rsplit(".", 1)[0].encode()
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    session_key(SEED).public_key().verify(
        encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256())
    )
    assert signer.read(token) == POD
    assert "pod" not in parts(signer.sign(CLAIMS, 1))[1]


def forge(header: dict[str, Any], payload: dict[str, Any], sig: bytes) -> str:
    enc = [b64(json.dumps(x).encode()) for x in (header, payload)]
    return f"{enc[0]}.{enc[1]}.{b64(sig)}"


def test_nothing_but_our_own_signature_is_read() -> None:
    signer = SessionSigner.from_seed(SEED)
    good = signer.sign(CLAIMS, 1)
    header, payload, sig = parts(good)
    other = SessionSigner.from_seed(Seed.from_mnemonic("abandon " * 11 + "about"))
    tampered_sig = sig[:-1] + bytes([sig[-1] ^ 1])
    hs256 = hmac.new(json.dumps(signer.jwk).encode(), b"x", hashlib.sha256).digest()
    forged = [
        forge({"alg": "none", "typ": "JWT"}, payload, b""),
        forge({**header, "alg": "none"}, payload, sig),
        forge({**header, "alg": "HS256"}, payload, hs256),
        forge({**header, "alg": "ES384"}, payload, sig),
        forge({**header, "kid": other.kid}, payload, sig),
        forge(header, {**payload, "aud": "other"}, sig),  # the signature no longer fits
        forge(header, payload, tampered_sig),
        other.sign(CLAIMS, 1),  # another seed's key
        SessionSigner.from_seed(SEED, issuer="someone").sign(CLAIMS, 1),  # our key, not our iss
        good + "x",
        good.replace(".", "..", 1),
        good[: good.rindex(".")],
        good + "=",
        "a" * 3000,
        "",
        "...",
        "e30.e30.",
    ]
    assert [signer.read(t) for t in forged] == [None] * len(forged)
    assert signer.read(good) == CLAIMS


@pytest.mark.parametrize(
    "change",
    [{"aud": ["stream"]}, {"exp": "2000000000"}, {"exp": True}, {"sub": 5}, {"paid": 1.5}],
)
def test_claims_of_the_wrong_type_are_not_a_session_even_when_signed(
    change: dict[str, Any],
) -> None:
    """What only we could have signed, but never do: refused all the same."""
    key = session_key(SEED)
    signer = SessionSigner(key)
    header = {"alg": "ES256", "kid": signer.kid, "typ": "JWT"}
    payload = {"iss": "paygress", "aud": "stream", "sub": "g", "exp": 2_000_000_000, **change}
    head, body = (b64(json.dumps(x).encode()) for x in (header, payload))
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    token = f"{head}.{body}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
    assert signer.read(token) is None


def test_a_rotation_reads_the_older_generation_and_signs_with_the_new() -> None:
    old = SessionSigner.from_seed(SEED)
    new = SessionSigner.from_seed(SEED, generation=1, also_accept=(0,))
    assert new.kid != old.kid
    assert new.read(old.sign(CLAIMS, 1)) == CLAIMS
    assert parts(new.sign(CLAIMS, 1))[0]["kid"] == new.kid
    assert old.read(new.sign(CLAIMS, 1)) is None
    assert SessionSigner.from_seed(SEED, generation=1).read(old.sign(CLAIMS, 1)) is None
