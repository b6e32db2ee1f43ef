"""NUT-18 payment requests (``creqA`` + base64url CBOR), as used by NUT-24 ``X-Cashu`` 402s.

Only the fields Paygress needs are modelled. NUT-24 in-band payment means "no transport",
so ``"t"`` is never written; on decode ``"t"`` and unknown keys are ignored. ``"nut10"`` asks
the payer to lock the proofs (e.g. P2PK to the receiver's key, NUT-11).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from typing import Any

import cbor2

__all__ = [
    "PREFIX",
    "Nut10Option",
    "PaymentRequest",
    "decode_payment_request",
    "encode_payment_request",
]

PREFIX = "creqA"
MAX_REQUEST_CHARS = 10_000
_B64_RE = re.compile(r"[A-Za-z0-9_\-+/]*={0,2}")


@dataclass(frozen=True, slots=True)
class Nut10Option:
    """A spending condition the payer should lock the proofs with (NUT-10): `kind` and
    `data`, e.g. ("P2PK", <the receiver's public key>)."""

    kind: str
    data: str
    tags: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    """A NUT-18 payment request; ``None`` fields are omitted from the encoding."""

    amount: int | None
    unit: str | None
    mints: tuple[str, ...]
    description: str | None
    id: str | None
    single_use: bool | None
    nut10: Nut10Option | None = None


def encode_payment_request(pr: PaymentRequest) -> str:
    """Encode as ``creqA`` + unpadded base64url CBOR (keys i, a, u, s, m, d)."""
    doc: dict[str, Any] = {}
    if pr.id is not None:
        doc["i"] = pr.id
    if pr.amount is not None:
        doc["a"] = pr.amount
    if pr.unit is not None:
        doc["u"] = pr.unit
    if pr.single_use is not None:
        doc["s"] = pr.single_use
    if pr.mints:
        doc["m"] = list(pr.mints)
    if pr.description is not None:
        doc["d"] = pr.description
    if pr.nut10 is not None:
        lock: dict[str, Any] = {"k": pr.nut10.kind, "d": pr.nut10.data}
        if pr.nut10.tags:
            lock["t"] = [list(t) for t in pr.nut10.tags]
        doc["nut10"] = lock
    encoded = base64.urlsafe_b64encode(cbor2.dumps(doc)).decode("ascii").rstrip("=")
    return PREFIX + encoded


def _opt(doc: dict[Any, Any], key: str, kind: type) -> Any:
    value = doc.get(key)
    if value is not None and (type(value) is not kind):
        raise ValueError(f"payment request field {key!r} has the wrong type")
    return value


def decode_payment_request(s: str) -> PaymentRequest:
    """Decode a ``creqA`` request; raise ValueError on anything malformed."""
    if not isinstance(s, str):
        raise ValueError("payment request must be a string")
    s = s.strip()
    if len(s) > MAX_REQUEST_CHARS:
        raise ValueError("payment request is too large")
    if not s.startswith(PREFIX):
        raise ValueError("payment request must start with 'creqA'")
    body = s[len(PREFIX) :]
    # base64url per spec; standard-alphabet bodies (seen in the spec's own vectors) also pass
    if not body or not _B64_RE.fullmatch(body) or len(body.rstrip("=")) % 4 == 1:
        raise ValueError("payment request body is not base64url")
    body = body.rstrip("=").replace("+", "-").replace("/", "_")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("payment request body is not base64url") from exc
    stream = io.BytesIO(raw)
    try:
        doc = cbor2.CBORDecoder(stream, max_depth=16, allow_duplicate_keys=False).decode()
    except Exception as exc:  # cbor2 errors, tag decoder errors
        raise ValueError("payment request body is not valid CBOR") from exc
    if stream.tell() != len(raw):
        raise ValueError("payment request body has trailing bytes")
    if not isinstance(doc, dict):
        raise ValueError("payment request must be a CBOR map")
    amount = _opt(doc, "a", int)
    if amount is not None and amount <= 0:
        raise ValueError("payment request amount must be positive")
    mints = _opt(doc, "m", list) or []
    if not all(type(m) is str and m for m in mints):
        raise ValueError("payment request mints must be non-empty strings")
    return PaymentRequest(
        amount=amount,
        unit=_opt(doc, "u", str),
        mints=tuple(mints),
        description=_opt(doc, "d", str),
        id=_opt(doc, "i", str),
        single_use=_opt(doc, "s", bool),
        nut10=_nut10(_opt(doc, "nut10", dict)),
    )


def _nut10(lock: dict[Any, Any] | None) -> Nut10Option | None:
    if lock is None:
        return None
    kind, data, tags = lock.get("k"), lock.get("d"), lock.get("t") or []
    if type(kind) is not str or type(data) is not str or type(tags) is not list:
        raise ValueError("payment request nut10 must hold a kind and data")
    if not all(type(t) is list and all(type(v) is str for v in t) for t in tags):
        raise ValueError("payment request nut10 tags must be lists of strings")
    return Nut10Option(kind, data, tuple(tuple(t) for t in tags))
