"""Strict parsing and encoding of Cashu tokens: V4 ``cashuB`` (CBOR) and V3 ``cashuA`` (JSON).

``parse_token`` raises only :class:`TokenError`, whose message never contains token text.

Keyset ids: V4 tokens made by nutshell >= 0.17 (and cashu-ts/cdk) carry the *short* id of
a v2 keyset (``01`` + 7 bytes = 16 hex) in ``"i"``; v1 ids (``00`` + 7 bytes) are always
short. Full 33-byte v2 ids are accepted too. Mints only know full ids, so expand short ones
with :func:`resolve_keyset_id` against ``GET /v1/keysets`` before swapping.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

import cbor2

from paygress.cashu.crypto import parse_point
from paygress.cashu.models import DLEQ, Proof, Token

__all__ = [
    "TokenError",
    "encode_token_v3",
    "encode_token_v4",
    "parse_token",
    "resolve_keyset_id",
    "short_keyset_id",
]

MAX_AMOUNT = 2**63
MAX_SECRET_CHARS = 1024
MAX_WITNESS_CHARS = 4096
MAX_UNIT_CHARS = 64
MAX_MINT_CHARS = 512

_HEX_RE = re.compile(r"[0-9a-fA-F]*")
_B64_RE = re.compile(r"[A-Za-z0-9_\-+/]*={0,2}")
_KEYSET_HEX_LENGTHS = (16, 66)  # 8-byte (v1, or v2 short) / 33-byte (v2 full)


class TokenError(ValueError):
    """A token could not be accepted. ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _fail(message: str, reason: str = "malformed") -> NoReturn:
    raise TokenError(reason, message)


# --------------------------------------------------------------------------- helpers


def _text(value: object, what: str, max_chars: int, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        _fail(f"{what} must be a string")
    if len(value) > max_chars or (not value and not allow_empty):
        _fail(f"{what} has an invalid length")
    try:
        value.encode("utf-8")
    except UnicodeError:
        _fail(f"{what} is not valid UTF-8")
    return value


def _opt_text(value: object, what: str, max_chars: int) -> str | None:
    return None if value is None else _text(value, what, max_chars, allow_empty=True)


def _amount(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < MAX_AMOUNT:
        _fail("proof amount must be a positive integer below 2**63")
    return value


def _hex_str(value: object, what: str, lengths: tuple[int, ...]) -> str:
    if not isinstance(value, str) or len(value) not in lengths or not _HEX_RE.fullmatch(value):
        _fail(f"{what} must be hex of a valid length")
    return value.lower()


def _bytes_hex(value: object, what: str, lengths: tuple[int, ...]) -> str:
    if not isinstance(value, bytes) or len(value) not in lengths:
        _fail(f"{what} must be a byte string of a valid length")
    return value.hex()


def _point(value: str) -> str:
    try:
        parse_point(value)
    except ValueError:
        _fail("proof signature C is not a valid compressed point")
    return value


def _mint_url(value: object) -> str:
    url = _text(value, "mint URL", MAX_MINT_CHARS)
    if not url.startswith(("https://", "http://")) or any(c.isspace() for c in url):
        _fail("mint URL must be an http(s) URL")
    return url


def _b64decode(body: str) -> bytes:
    if not body or not _B64_RE.fullmatch(body):
        _fail("token body is not base64")
    stripped = body.rstrip("=")
    if len(stripped) % 4 == 1:
        _fail("token body is not base64")
    translated = stripped.replace("+", "-").replace("/", "_")
    padded = translated + "=" * (-len(translated) % 4)
    try:
        return base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        _fail("token body is not base64")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


class _ProofCollector:
    """Accumulates proofs, enforcing the count limit and secret uniqueness."""

    def __init__(self, max_proofs: int) -> None:
        self.max_proofs = max_proofs
        self.proofs: list[Proof] = []
        self.secrets: set[str] = set()

    def add(self, proof: Proof) -> None:
        if len(self.proofs) >= self.max_proofs:
            _fail(f"token has more than {self.max_proofs} proofs", "too_many_proofs")
        if proof.secret in self.secrets:
            _fail("token contains the same proof twice", "duplicate_proofs")
        self.secrets.add(proof.secret)
        self.proofs.append(proof)

    def result(self) -> tuple[Proof, ...]:
        if not self.proofs:
            _fail("token contains no proofs", "empty")
        return tuple(self.proofs)


def _dict(value: object, what: str) -> Mapping[Any, Any]:
    if not isinstance(value, dict):
        _fail(f"{what} must be a map")
    return value


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        _fail(f"{what} must be a list")
    return value


# --------------------------------------------------------------------------- V3 (JSON)


def _parse_v3_dleq(value: object) -> DLEQ | None:
    if value is None:
        return None
    d = _dict(value, "dleq")
    r = d.get("r")
    return DLEQ(
        e=_hex_str(d.get("e"), "dleq e", (64,)),
        s=_hex_str(d.get("s"), "dleq s", (64,)),
        r=None if r is None else _hex_str(r, "dleq r", (64,)),
    )


def _parse_v3(raw: bytes, max_proofs: int) -> Token:
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        _fail("token body is not JSON")
    top = _dict(doc, "token")
    entries = _list(top.get("token"), "token entries")
    unit = top.get("unit")
    unit = "sat" if unit is None else _text(unit, "unit", MAX_UNIT_CHARS)
    memo = _opt_text(top.get("memo"), "memo", 4096)
    mint: str | None = None
    collector = _ProofCollector(max_proofs)
    for entry_obj in entries:
        entry = _dict(entry_obj, "token entry")
        entry_mint = _mint_url(entry.get("mint"))
        if mint is not None and entry_mint != mint:
            _fail("token holds proofs from more than one mint", "multiple_mints")
        mint = entry_mint
        for proof_obj in _list(entry.get("proofs"), "proofs"):
            p = _dict(proof_obj, "proof")
            collector.add(
                Proof(
                    keyset_id=_hex_str(p.get("id"), "keyset id", _KEYSET_HEX_LENGTHS),
                    amount=_amount(p.get("amount")),
                    secret=_text(p.get("secret"), "secret", MAX_SECRET_CHARS),
                    C=_point(_hex_str(p.get("C"), "proof signature C", (66,))),
                    dleq=_parse_v3_dleq(p.get("dleq")),
                    witness=_opt_text(p.get("witness"), "witness", MAX_WITNESS_CHARS),
                )
            )
    proofs = collector.result()
    if mint is None:  # unreachable: a proof implies an entry, which sets the mint
        _fail("token has no mint")
    return Token(mint=mint, unit=unit, proofs=proofs, memo=memo, version=3)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError("non-finite number")


# --------------------------------------------------------------------------- V4 (CBOR)


def _cbor_loads(raw: bytes) -> object:
    stream = io.BytesIO(raw)
    try:
        decoder = cbor2.CBORDecoder(stream, max_depth=16, allow_duplicate_keys=False)
        doc = decoder.decode()
    except Exception:  # cbor2 raises CBORDecodeError, but also tag-decoder errors
        _fail("token body is not valid CBOR")
    if stream.tell() != len(raw):
        _fail("token body has trailing bytes")
    return doc


def _parse_v4_dleq(value: object) -> DLEQ | None:
    if value is None:
        return None
    d = _dict(value, "dleq")
    r = d.get("r")
    return DLEQ(
        e=_bytes_hex(d.get("e"), "dleq e", (32,)),
        s=_bytes_hex(d.get("s"), "dleq s", (32,)),
        r=None if r is None else _bytes_hex(r, "dleq r", (32,)),
    )


def _parse_v4(raw: bytes, max_proofs: int) -> Token:
    top = _dict(_cbor_loads(raw), "token")
    mint = _mint_url(top.get("m"))
    unit = _text(top.get("u"), "unit", MAX_UNIT_CHARS)
    memo = _opt_text(top.get("d"), "memo", 4096)
    collector = _ProofCollector(max_proofs)
    for group_obj in _list(top.get("t"), "token groups"):
        group = _dict(group_obj, "token group")
        keyset_id = _bytes_hex(group.get("i"), "keyset id", (8, 33))
        for proof_obj in _list(group.get("p"), "proofs"):
            p = _dict(proof_obj, "proof")
            collector.add(
                Proof(
                    keyset_id=keyset_id,
                    amount=_amount(p.get("a")),
                    secret=_text(p.get("s"), "secret", MAX_SECRET_CHARS),
                    C=_point(_bytes_hex(p.get("c"), "proof signature C", (33,))),
                    dleq=_parse_v4_dleq(p.get("d")),
                    witness=_opt_text(p.get("w"), "witness", MAX_WITNESS_CHARS),
                )
            )
    return Token(mint=mint, unit=unit, proofs=collector.result(), memo=memo, version=4)


# --------------------------------------------------------------------------- public API


def parse_token(text: str, *, max_bytes: int = 8192, max_proofs: int = 64) -> Token:
    """Decode a ``cashuB``/``cashuA`` token (optionally ``cashu:``-prefixed), strictly."""
    if not isinstance(text, str):
        _fail("token must be a string")
    if len(text) > 4 * max_bytes:  # cheap bound before touching the text
        _fail("token is too large", "too_large")
    text = text.strip()
    if not text:
        _fail("token is empty", "empty")
    if len(text) > max_bytes:
        _fail("token is too large", "too_large")
    if text[:6].lower() == "cashu:":
        text = text[6:]
    if len(text) < 6 or text[:5] != "cashu":
        _fail("not a cashu token")
    version = text[5]
    if version not in "AB":
        _fail("unsupported token version", "unsupported_version")
    raw = _b64decode(text[6:])
    if version == "B":
        return _parse_v4(raw, max_proofs)
    return _parse_v3(raw, max_proofs)


def short_keyset_id(keyset_id: str) -> str:
    """The id form used in V4 tokens: v2 ids shortened to 8 bytes, v1 ids unchanged."""
    if keyset_id.startswith("01") and len(keyset_id) == 66:
        return keyset_id[:16]
    return keyset_id


def resolve_keyset_id(short_or_full: str, known_ids: Iterable[str]) -> str | None:
    """Map a token's keyset id to one of ``known_ids`` (the mint's full ids).

    Exact matches win; otherwise a 16-hex id matches the unique known v2 id it prefixes.
    Returns None when the id is unknown or ambiguous.
    """
    candidate = short_or_full.lower()
    matches: list[str] = []
    for known in known_ids:
        if known.lower() == candidate:
            return known
        if len(candidate) == 16 and len(known) == 66 and known.lower().startswith(candidate):
            matches.append(known)
    return matches[0] if len(set(matches)) == 1 else None


def encode_token_v4(token: Token, *, short_ids: bool = True) -> str:
    """Serialize as ``cashuB`` (unpadded base64url CBOR), grouping proofs by keyset.

    With ``short_ids`` (default, like nutshell) v2 keyset ids are written as 8 bytes.
    A DLEQ is only written when it carries ``r`` (without it the receiver cannot use it).
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for proof in token.proofs:
        entry: dict[str, Any] = {
            "a": proof.amount,
            "s": proof.secret,
            "c": bytes.fromhex(proof.C),
        }
        if proof.dleq is not None and proof.dleq.r is not None:
            entry["d"] = {
                "e": bytes.fromhex(proof.dleq.e),
                "s": bytes.fromhex(proof.dleq.s),
                "r": bytes.fromhex(proof.dleq.r),
            }
        if proof.witness is not None:
            entry["w"] = proof.witness
        kid = short_keyset_id(proof.keyset_id) if short_ids else proof.keyset_id
        groups.setdefault(kid, []).append(entry)
    doc: dict[str, Any] = {
        "t": [{"i": bytes.fromhex(kid), "p": ps} for kid, ps in groups.items()],
    }
    if token.memo is not None:
        doc["d"] = token.memo
    doc["m"] = token.mint
    doc["u"] = token.unit
    return "cashuB" + _b64encode(cbor2.dumps(doc))


def encode_token_v3(token: Token) -> str:
    """Serialize as ``cashuA`` (unpadded base64url JSON) with the ids as stored."""
    proofs: list[dict[str, Any]] = []
    for proof in token.proofs:
        entry: dict[str, Any] = {
            "amount": proof.amount,
            "id": proof.keyset_id,
            "secret": proof.secret,
            "C": proof.C,
        }
        if proof.dleq is not None and proof.dleq.r is not None:
            entry["dleq"] = {"e": proof.dleq.e, "s": proof.dleq.s, "r": proof.dleq.r}
        if proof.witness is not None:
            entry["witness"] = proof.witness
        proofs.append(entry)
    doc: dict[str, Any] = {"token": [{"mint": token.mint, "proofs": proofs}], "unit": token.unit}
    if token.memo is not None:
        doc["memo"] = token.memo
    return "cashuA" + _b64encode(json.dumps(doc, separators=(",", ":")).encode("utf-8"))
