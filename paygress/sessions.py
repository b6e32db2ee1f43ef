"""Paid sessions as JSON Web Tokens (RFC 7519), signed ES256 (ECDSA P-256, SHA-256, RFC 7518):
a credential that the proxy verifies itself (Envoy's jwt_authn), so that the requests of a time
grant never reach Paygress after the first payment.

The key. The P-256 private scalar is ``d = int(K) mod (n - 1) + 1`` where ``K`` is the 32-byte
``Seed.purpose_key("session")`` (HMAC-SHA256(seed, b"paygress/session"), big-endian) and ``n``
the group order: every replica of one seed signs with the same key, and nothing is stored.
Generation ``g > 0`` (for rotation) uses the purpose ``"session/<g>"`` instead. The ``kid`` is
the key's JWK thumbprint (RFC 7638), so a JWKS may hold several keys during a rotation.

Only this module speaks JWT: the core sees `SessionClaims` through the `SessionTokens` port.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from paygress.cashu.nut13 import Seed
from paygress.core.ports import SessionClaims
from paygress.core.session_access import MAX_SESSION_BYTES

ALG = "ES256"
PURPOSE = "session"
DEFAULT_ISSUER = "paygress"
# The order of the P-256 group (FIPS 186-4, D.1.2.3).
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_SIGNATURE = ec.ECDSA(hashes.SHA256())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """base64url without padding, strictly (no other characters, no padding)."""
    if "=" in text:
        raise ValueError("padded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def session_key(seed: Seed, generation: int = 0) -> ec.EllipticCurvePrivateKey:
    """The session signing key of `seed` (see the module docstring for the derivation)."""
    if generation < 0:
        raise ValueError("a key generation is >= 0")
    purpose = PURPOSE if generation == 0 else f"{PURPOSE}/{generation}"
    scalar = int.from_bytes(seed.purpose_key(purpose), "big") % (P256_N - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The public key as a JWK (RFC 7517/7518), with its thumbprint as `kid`."""
    numbers = key.public_numbers()
    jwk = {
        "crv": "P-256",
        "kty": "EC",
        "x": _b64(numbers.x.to_bytes(32, "big")),
        "y": _b64(numbers.y.to_bytes(32, "big")),
    }
    # RFC 7638: the required members, lexicographic order, no whitespace.
    thumbprint = _b64(hashlib.sha256(_json(jwk)).digest())
    return {**jwk, "alg": ALG, "use": "sig", "kid": thumbprint}


def jwks(seed: Seed, generations: Iterable[int] = (0,)) -> dict[str, list[dict[str, str]]]:
    """The JWK Set a proxy verifies sessions with: the public keys of these generations."""
    return {"keys": [public_jwk(session_key(seed, g).public_key()) for g in generations]}


class SessionSigner:
    """Signs and reads Paygress sessions (the `SessionTokens` port).

    `read` accepts only what `sign` makes: ES256 under one of `verify_keys` (by `kid`), our
    issuer, and claims of the right types. Whether the session is for this route and still
    within its paid end is the caller's decision (the gate's)."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        *,
        issuer: str = DEFAULT_ISSUER,
        verify_keys: Iterable[ec.EllipticCurvePublicKey] = (),
    ) -> None:
        self._key = key
        self.issuer = issuer
        self.jwk = public_jwk(key.public_key())
        self.kid = self.jwk["kid"]
        self._header = _b64(_json({"alg": ALG, "kid": self.kid, "typ": "JWT"}))
        keys = [key.public_key(), *verify_keys]
        self._verify = {public_jwk(k)["kid"]: k for k in keys}

    @classmethod
    def from_seed(
        cls,
        seed: Seed,
        *,
        generation: int = 0,
        issuer: str = DEFAULT_ISSUER,
        also_accept: Iterable[int] = (),
    ) -> SessionSigner:
        """The signer of `seed`'s generation, also reading sessions of the `also_accept`
        generations (during a rotation)."""
        return cls(
            session_key(seed, generation),
            issuer=issuer,
            verify_keys=[session_key(seed, g).public_key() for g in also_accept],
        )

    def sign(self, claims: SessionClaims, issued_at: int) -> str:
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": claims.route,
            "sub": claims.grant,
            "exp": claims.expires_at,
            "iat": issued_at,
            "paid": claims.paid,
            "unit": claims.unit,
        }
        if claims.pod:
            payload["pod"] = claims.pod
        if claims.destination:
            payload["dst"] = claims.destination
        signing_input = f"{self._header}.{_b64(_json(payload))}"
        der = self._key.sign(signing_input.encode("ascii"), _SIGNATURE)
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def read(self, token: str) -> SessionClaims | None:
        """The claims of a session we signed, or None for anything else (never raises)."""
        if len(token) > MAX_SESSION_BYTES or token.count(".") != 2:
            return None
        head, body, sig = token.split(".")
        try:
            header = json.loads(_unb64(head))
            if not isinstance(header, dict) or header.get("alg") != ALG:
                return None  # `none`, HS256 with our public key as secret, ...: never
            key = self._verify.get(header.get("kid"))  # type: ignore[arg-type]
            raw = _unb64(sig)
            if key is None or len(raw) != 64:
                return None
            r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
            key.verify(encode_dss_signature(r, s), f"{head}.{body}".encode("ascii"), _SIGNATURE)
            payload = json.loads(_unb64(body))
        except (ValueError, TypeError, binascii.Error, InvalidSignature, UnicodeError):
            return None
        return _claims(payload, self.issuer)


def _claims(payload: Any, issuer: str) -> SessionClaims | None:
    if not isinstance(payload, dict) or payload.get("iss") != issuer:
        return None
    aud, sub, unit = payload.get("aud"), payload.get("sub"), payload.get("unit", "")
    pod, dst = payload.get("pod", ""), payload.get("dst", "")
    exp, paid = payload.get("exp"), payload.get("paid", 0)
    if not (
        isinstance(aud, str)
        and isinstance(sub, str)
        and isinstance(unit, str)
        and isinstance(pod, str)
        and isinstance(dst, str)
        and type(exp) is int
        and type(paid) is int
    ):
        return None
    return SessionClaims(aud, sub, exp, paid, unit, pod, dst)
