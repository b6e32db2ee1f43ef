"""Async HTTP client for one Cashu mint (NUT-01/02/03/07/09), with strict response checks.

Error mapping: connect errors, timeouts, 5xx, 429 and non-JSON bodies raise
:class:`MintUnavailable`; 4xx (nutshell: 400 ``{"detail", "code"}``) raises
:class:`MintRejected`; well-formed HTTP with a wrong payload raises :class:`MintProtocolError`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import httpx

from paygress.cashu.crypto import parse_point
from paygress.cashu.errors import MintProtocolError, MintRejected, MintUnavailable
from paygress.cashu.models import DLEQ, BlindedMessage, BlindSignature, KeysetInfo, Proof

__all__ = [
    "PROOF_STATES",
    "MintClient",
    "MintProtocolError",
    "MintRejected",
    "MintUnavailable",
]

PROOF_STATES = frozenset({"UNSPENT", "PENDING", "SPENT"})
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
_MAX_DETAIL_CHARS = 200
_HEX_RE = re.compile(r"[0-9a-f]+")
_SCALAR_RE = re.compile(r"[0-9a-fA-F]{64}")


# --------------------------------------------------------------------------- validation


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field(obj: object, key: str, what: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise MintProtocolError(f"{what}: missing field {key!r}")
    return obj[key]


def _amount(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**64:
        raise MintProtocolError(f"{what}: invalid amount")
    return value


def _keyset_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not _HEX_RE.fullmatch(value) or len(value) > 66:
        raise MintProtocolError(f"{what}: invalid keyset id")
    return value


def _point(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise MintProtocolError(f"{what}: invalid point")
    try:
        parse_point(value)
    except ValueError:
        raise MintProtocolError(f"{what}: invalid point") from None
    return value.lower()


def _list(data: object, key: str, what: str) -> list[Any]:
    value = _field(data, key, what)
    if not isinstance(value, list):
        raise MintProtocolError(f"{what}: {key!r} is not a list")
    return value


def _parse_signature(obj: object) -> BlindSignature:
    what = "blind signature"
    dleq_obj = obj.get("dleq") if isinstance(obj, dict) else None
    dleq: DLEQ | None = None
    if dleq_obj is not None:
        e, s = _field(dleq_obj, "e", what), _field(dleq_obj, "s", what)
        if not all(isinstance(v, str) and _SCALAR_RE.fullmatch(v) for v in (e, s)):
            raise MintProtocolError(f"{what}: invalid DLEQ")
        dleq = DLEQ(e=e.lower(), s=s.lower())
    return BlindSignature(
        amount=_amount(_field(obj, "amount", what), what),
        keyset_id=_keyset_id(_field(obj, "id", what), what),
        C_=_point(_field(obj, "C_", what), what),
        dleq=dleq,
    )


def _parse_blinded(obj: object) -> BlindedMessage:
    what = "blinded message"
    return BlindedMessage(
        amount=_amount(_field(obj, "amount", what), what),
        keyset_id=_keyset_id(_field(obj, "id", what), what),
        B_=_point(_field(obj, "B_", what), what),
    )


def _output_json(m: BlindedMessage) -> dict[str, Any]:
    return {"amount": m.amount, "id": m.keyset_id, "B_": m.B_}


def _input_json(p: Proof) -> dict[str, Any]:
    # NUT-12: the DLEQ (it holds r) must not go to the mint; nutshell strips it too.
    entry: dict[str, Any] = {"id": p.keyset_id, "amount": p.amount, "secret": p.secret, "C": p.C}
    if p.witness is not None:
        entry["witness"] = p.witness
    return entry


def _check_matches(outputs: Sequence[BlindedMessage], sigs: Sequence[BlindSignature]) -> None:
    if len(sigs) != len(outputs):
        raise MintProtocolError(f"mint returned {len(sigs)} signatures for {len(outputs)} outputs")
    for index, (out, sig) in enumerate(zip(outputs, sigs, strict=True)):
        if sig.amount != out.amount or sig.keyset_id != out.keyset_id:
            raise MintProtocolError(f"signature {index} does not match its output")


# --------------------------------------------------------------------------- client


class MintClient:
    """One mint, one pooled ``httpx.AsyncClient``. Use ``aclose()`` or ``async with``.

    ``timeout`` bounds each call as a whole (connect, send, and an answer however slowly it
    trickles in), not only each phase as httpx's own timeouts do.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("mint URL must start with http:// or https://")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            base_url=self.url,
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            headers={"Accept": "application/json"},
        )

    async def __aenter__(self) -> MintClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the underlying connection pool."""
        await self._client.aclose()

    async def _request(self, method: str, path: str, payload: object = None) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                async with self._client.stream(method, path, json=payload) as resp:
                    body = bytearray()
                    async for chunk in resp.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_RESPONSE_BYTES:
                            raise MintProtocolError(f"{path}: response too large")
                    status = resp.status_code
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # No connection, so nothing was sent: the mint did nothing.
            raise MintUnavailable(f"{self.url}{path}: {type(exc).__name__}", sent=False) from exc
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise MintUnavailable(f"{self.url}{path}: timeout") from exc
        except httpx.HTTPError as exc:
            raise MintUnavailable(f"{self.url}{path}: {type(exc).__name__}") from exc
        if status == 429:
            # A rate limiter answers before the request is handled: nothing was done.
            raise MintUnavailable(f"{self.url}{path}: HTTP 429 (rate limited)", sent=False)
        if status >= 500:
            raise MintUnavailable(f"{self.url}{path}: HTTP {status}")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            data = _NOT_JSON
        if 400 <= status < 500:
            raise _rejection(data, status)
        if not 200 <= status < 300:
            raise MintUnavailable(f"{self.url}{path}: unexpected HTTP {status}")
        if data is _NOT_JSON:
            raise MintUnavailable(f"{self.url}{path}: response is not JSON")
        return data

    async def _post(self, path: str, payload: object, expect: str) -> Any:
        data = await self._request("POST", path, payload)
        _raise_embedded_error(data, expect)
        return data

    async def _get(self, path: str, expect: str) -> Any:
        data = await self._request("GET", path)
        _raise_embedded_error(data, expect)
        return data

    async def keysets(self) -> list[KeysetInfo]:
        """``GET /v1/keysets``. Entries with non-hex (pre-0.15 base64) ids are skipped."""
        data = await self._get("/v1/keysets", "keysets")
        result: list[KeysetInfo] = []
        for entry in _list(data, "keysets", "keysets"):
            kid = _field(entry, "id", "keyset")
            if not isinstance(kid, str) or not _HEX_RE.fullmatch(kid):
                continue
            unit, active = _field(entry, "unit", "keyset"), _field(entry, "active", "keyset")
            fee = entry.get("input_fee_ppk")
            fee = 0 if fee is None else fee  # NUT-02: absent means no fee
            if not isinstance(unit, str) or not isinstance(active, bool):
                raise MintProtocolError("keyset: invalid unit or active flag")
            if not _is_int(fee) or fee < 0:
                raise MintProtocolError("keyset: invalid input_fee_ppk")
            result.append(KeysetInfo(id=kid, unit=unit, active=active, input_fee_ppk=fee))
        return result

    async def keys(self, keyset_id: str) -> dict[int, str]:
        """``GET /v1/keys/{id}``: amount -> compressed public key hex (each validated)."""
        if not _HEX_RE.fullmatch(keyset_id) or len(keyset_id) > 66:
            raise ValueError("keyset id must be lowercase hex")
        data = await self._get(f"/v1/keys/{keyset_id}", "keysets")
        entries = _list(data, "keysets", "keys")
        matching = [ks for ks in entries if isinstance(ks, dict) and ks.get("id") == keyset_id]
        if len(matching) != 1:
            raise MintProtocolError("keys: response does not contain the requested keyset")
        raw_keys = _field(matching[0], "keys", "keys")
        if not isinstance(raw_keys, dict) or not raw_keys:
            raise MintProtocolError("keys: 'keys' is not a non-empty map")
        keys: dict[int, str] = {}
        for amount_str, pub in raw_keys.items():
            if not (
                isinstance(amount_str, str)
                and 0 < len(amount_str) <= 20
                and amount_str.isascii()
                and amount_str.isdigit()
            ):
                raise MintProtocolError("keys: invalid amount")
            keys[_amount(int(amount_str), "keys")] = _point(pub, "keys")
        return keys

    async def swap(
        self, inputs: Sequence[Proof], outputs: Sequence[BlindedMessage]
    ) -> list[BlindSignature]:
        """NUT-03 ``POST /v1/swap``; signatures come back in output order."""
        for p in inputs:
            if p.keyset_id.startswith("01") and len(p.keyset_id) != 66:
                raise ValueError("input has a short keyset id; expand it with resolve_keyset_id")
        payload = {
            "inputs": [_input_json(p) for p in inputs],
            "outputs": [_output_json(m) for m in outputs],
        }
        data = await self._post("/v1/swap", payload, "signatures")
        sigs = [_parse_signature(s) for s in _list(data, "signatures", "swap")]
        _check_matches(outputs, sigs)
        return sigs

    async def restore(
        self, outputs: Sequence[BlindedMessage]
    ) -> tuple[list[BlindedMessage], list[BlindSignature]]:
        """NUT-09 ``POST /v1/restore``: the subset of ``outputs`` the mint has signed before."""
        payload = {"outputs": [_output_json(m) for m in outputs]}
        data = await self._post("/v1/restore", payload, "outputs")
        key = "signatures" if isinstance(data, dict) and "signatures" in data else "promises"
        got_outputs = [_parse_blinded(o) for o in _list(data, "outputs", "restore")]
        sigs = [_parse_signature(s) for s in _list(data, key, "restore")]
        requested = {m.B_: m for m in outputs}
        for out in got_outputs:
            if requested.get(out.B_) != out:
                raise MintProtocolError("restore: mint returned an output that was not requested")
        # The amounts of restored signatures are the mint's to tell (wallets send dummy
        # amounts); the DLEQ against that amount's key proves them when unblinding.
        if len(sigs) != len(got_outputs) or any(
            s.keyset_id != o.keyset_id for o, s in zip(got_outputs, sigs, strict=False)
        ):
            raise MintProtocolError("restore: signatures do not match the outputs")
        return got_outputs, sigs

    async def check_state(self, ys: Sequence[str]) -> list[str]:
        """NUT-07 ``POST /v1/checkstate``: ``UNSPENT``/``PENDING``/``SPENT`` per Y, in order."""
        data = await self._post("/v1/checkstate", {"Ys": list(ys)}, "states")
        by_y: dict[str, str] = {}
        for entry in _list(data, "states", "checkstate"):
            y, state = _field(entry, "Y", "state"), _field(entry, "state", "state")
            if not isinstance(y, str) or state not in PROOF_STATES:
                raise MintProtocolError("checkstate: invalid entry")
            by_y[y.lower()] = state
        try:
            return [by_y[y.lower()] for y in ys]
        except KeyError:
            raise MintProtocolError("checkstate: a requested Y is missing") from None


class _NotJson:
    pass


_NOT_JSON = _NotJson()


def _rejection(data: object, status: int) -> MintRejected:
    if isinstance(data, dict) and "detail" in data:
        detail = data["detail"]
        text = detail if isinstance(detail, str) else "request validation failed"
        code = data.get("code")
        return MintRejected(text[:_MAX_DETAIL_CHARS], code if _is_int(code) else None, status)
    return MintRejected(f"HTTP {status}", None, status)


def _raise_embedded_error(data: object, expect: str) -> None:
    """Some mints answer errors with 200 ``{"detail", "code"}``; treat those as rejections."""
    if not isinstance(data, dict):
        raise MintProtocolError("response is not a JSON object")
    if expect not in data and "detail" in data:
        raise _rejection(data, 200)
