"""NUT-10 well-known secrets and NUT-11 P2PK: who can spend a locked proof, and signing for it.

A P2PK secret is the JSON text ``["P2PK", {"nonce": ..., "data": <pubkey>, "tags": [...]}]``.
Until its ``locktime`` (if any), only ``n_sigs`` signatures of the keys ``[data] + pubkeys``
spend it; after the locktime the ``refund`` keys can (and, without refund keys, anyone).
A signature (SIG_INPUTS) is BIP-340 Schnorr over SHA-256 of the secret's text; the witness is
``{"signatures": [<hex>]}``. SIG_ALL (signatures over all inputs and outputs) is recognised
and reported, not produced here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass

from coincurve import PrivateKey, PublicKeyXOnly

__all__ = ["P2PKLock", "parse_p2pk", "sign_p2pk", "verify_p2pk_signature", "witness"]

_PUBKEY = re.compile(r"0[23][0-9a-f]{64}")
MAX_SECRET_TAGS = 32


@dataclass(frozen=True, slots=True)
class P2PKLock:
    """The spending conditions of a P2PK-locked proof."""

    pubkeys: tuple[str, ...]  # data first, then the `pubkeys` tag (lowercase, compressed)
    n_sigs: int
    sig_all: bool
    locktime: int | None
    refund: tuple[str, ...]

    def spendable_only_by(self, pubkey: str, *, now: float, margin: float) -> bool:
        """True when `pubkey` alone can spend it, and nobody else can before now + margin:
        one signature among keys that are all `pubkey`, signatures over the inputs only, and
        no locktime (after which refund keys, or anyone, could spend) within the margin."""
        return (
            set(self.pubkeys) == {pubkey}
            and self.n_sigs == 1
            and not self.sig_all
            and (self.locktime is None or self.locktime >= now + margin)
        )


def parse_p2pk(secret: str) -> P2PKLock | None:
    """The lock of a NUT-10 P2PK secret; None when the secret is not one (a plain secret, or
    another kind). Raises ValueError for a P2PK secret that is malformed."""
    if not secret.startswith("["):
        return None
    try:
        doc = json.loads(secret)
    except ValueError:
        return None
    if not (isinstance(doc, list) and len(doc) == 2 and doc[0] == "P2PK"):
        return None
    body = doc[1]
    if not isinstance(body, dict) or not _is_pubkey(body.get("data")):
        raise ValueError("P2PK secret without a valid public key")
    tags = body.get("tags") or []
    if not isinstance(tags, list) or len(tags) > MAX_SECRET_TAGS:
        raise ValueError("P2PK secret with invalid tags")
    values: dict[str, list[str]] = {}
    for tag in tags:
        if not (isinstance(tag, list) and tag and all(isinstance(t, str) for t in tag)):
            raise ValueError("P2PK secret with an invalid tag")
        values.setdefault(tag[0], []).extend(tag[1:])
    extra = [k.lower() for k in values.get("pubkeys", [])]
    refund = [k.lower() for k in values.get("refund", [])]
    if not all(_is_pubkey(k) for k in (*extra, *refund)):
        raise ValueError("P2PK secret with an invalid key in its tags")
    return P2PKLock(
        pubkeys=(body["data"].lower(), *extra),
        n_sigs=_int_tag(values, "n_sigs", None) or 1,
        sig_all=(values.get("sigflag") or ["SIG_INPUTS"])[0] == "SIG_ALL",
        locktime=_int_tag(values, "locktime", None),
        refund=tuple(refund),
    )


def sign_p2pk(secret: str, key: PrivateKey) -> str:
    """A NUT-11 signature (SIG_INPUTS) of a proof's secret, as hex."""
    digest = hashlib.sha256(secret.encode("utf-8")).digest()
    return str(key.sign_schnorr(digest, os.urandom(32)).hex())


def verify_p2pk_signature(secret: str, pubkey: str, signature: str) -> bool:
    """Checks a NUT-11 signature of `secret` by the compressed `pubkey`. Never raises."""
    try:
        digest = hashlib.sha256(secret.encode("utf-8")).digest()
        return bool(
            PublicKeyXOnly(bytes.fromhex(pubkey)[1:]).verify(bytes.fromhex(signature), digest)
        )
    except (ValueError, TypeError):
        return False


def witness(*signatures: str) -> str:
    """The witness of a P2PK proof (NUT-11)."""
    return json.dumps({"signatures": list(signatures)}, separators=(",", ":"))


def _is_pubkey(value: object) -> bool:
    return isinstance(value, str) and _PUBKEY.fullmatch(value.lower()) is not None


def _int_tag(values: dict[str, list[str]], name: str, default: int | None) -> int | None:
    found = values.get(name)
    if not found:
        return default
    text = found[0]
    if not (text.isascii() and text.isdecimal()) or len(text) > 18:
        raise ValueError(f"P2PK secret with an invalid {name} tag")
    return int(text)
