"""MintClient against an in-memory mint (httpx.MockTransport): happy paths and every error."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from paygress.cashu.errors import (
    CODE_OUTPUTS_ALREADY_SIGNED,
    CODE_PROOFS_ALREADY_SPENT,
    MintProtocolError,
    MintRejected,
    MintUnavailable,
)
from paygress.cashu.mint_client import MAX_RESPONSE_BYTES, MintClient
from paygress.cashu.models import BlindedMessage, KeysetInfo, Proof
from paygress.cashu.nut13 import Seed
from paygress.cashu.outputs import prepare_outputs, unblind
from tests.unit.cashu.fakemint import FakeMint
from tests.unit.cashu.vectors import NUT13_MNEMONIC

URL = "https://mint.test"
SEED = Seed.from_mnemonic(NUT13_MNEMONIC)


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> MintClient:
    return MintClient(URL, transport=httpx.MockTransport(handler))


def fixed(status: int, body: Any = None, *, content: bytes | None = None) -> MintClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if content is not None:
            return httpx.Response(status, content=content)
        return httpx.Response(status, json=body)

    return client_for(handler)


def wallet_proofs(mint: FakeMint, amounts: list[int]) -> list[Proof]:
    out = []
    for i, a in enumerate(amounts):
        raw = mint.make_proof_json(a, f"input-secret-{i}-{a}")
        out.append(Proof(raw["id"], a, raw["secret"], raw["C"]))
    return out


# --------------------------------------------------------------------------- happy paths


async def test_keysets_and_keys() -> None:
    mint = FakeMint(input_fee_ppk=100)
    async with MintClient(URL + "/", transport=mint.transport()) as client:
        assert client.url == URL
        assert await client.keysets() == [KeysetInfo(mint.keyset_id, "sat", True, 100)]
        keys = await client.keys(mint.keyset_id)
        assert keys == mint.pubkeys


async def test_swap_end_to_end_with_unblind() -> None:
    mint = FakeMint(input_fee_ppk=100)
    client = MintClient(URL, transport=mint.transport())
    inputs = wallet_proofs(mint, [8, 4])
    outs = prepare_outputs(SEED, mint.keyset_id, 0, [1, 2, 8])  # 12 - fee 1 = 11
    sigs = await client.swap(inputs, [o.message() for o in outs])
    proofs = unblind(outs, sigs, await client.keys(mint.keyset_id), require_dleq=True)
    assert sum(p.amount for p in proofs) == 11
    # request body: NUT-03 JSON, no DLEQ/r sent to the mint
    method, path, body = mint.requests[0]
    assert (method, path) == ("POST", "/v1/swap")
    assert set(body) == {"inputs", "outputs"}
    assert set(body["inputs"][0]) == {"id", "amount", "secret", "C"}
    assert body["outputs"][0] == {"amount": 1, "id": mint.keyset_id, "B_": outs[0].B_}
    # states
    ys = [p.y() for p in inputs] + [p.y() for p in proofs]
    assert await client.check_state(ys) == ["SPENT", "SPENT", "UNSPENT", "UNSPENT", "UNSPENT"]
    # double spend is reported with NUT code 11001
    with pytest.raises(MintRejected) as info:
        await client.swap(
            inputs, [o.message() for o in prepare_outputs(SEED, mint.keyset_id, 9, [8, 2, 1])]
        )
    assert info.value.is_spent and info.value.code == CODE_PROOFS_ALREADY_SPENT
    assert info.value.status == 400 and info.value.detail == "proofs already spent"
    # restore returns only the outputs the mint signed before
    more = prepare_outputs(SEED, mint.keyset_id, 0, [1, 2, 8, 4])
    got_outs, got_sigs = await client.restore([o.message() for o in more])
    assert got_outs == [o.message() for o in more[:3]]
    assert unblind(more[:3], got_sigs, mint.pubkeys) == proofs
    await client.aclose()


async def test_witness_is_sent_and_outputs_already_signed() -> None:
    mint = FakeMint()
    client = MintClient(URL, transport=mint.transport())
    (p,) = wallet_proofs(mint, [2])
    outs = prepare_outputs(SEED, mint.keyset_id, 0, [2])
    await client.swap([Proof(p.keyset_id, 2, p.secret, p.C, witness="{}")], [outs[0].message()])
    assert mint.requests[-1][2]["inputs"][0]["witness"] == "{}"
    (p2,) = wallet_proofs(mint, [4])
    with pytest.raises(MintRejected) as info:
        await client.swap([p2], [outs[0].message(), outs[0].message()])
    assert info.value.outputs_already_signed
    assert info.value.code == CODE_OUTPUTS_ALREADY_SIGNED
    await client.aclose()


async def test_pending_and_invalid_proof_codes() -> None:
    mint = FakeMint()
    client = MintClient(URL, transport=mint.transport())
    (p,) = wallet_proofs(mint, [2])
    outs = [o.message() for o in prepare_outputs(SEED, mint.keyset_id, 0, [2])]
    mint.pending.add(p.y())
    with pytest.raises(MintRejected) as info:
        await client.swap([p], outs)
    assert info.value.is_pending and not info.value.is_spent
    assert await client.check_state([p.y()]) == ["PENDING"]
    forged = Proof(p.keyset_id, 2, "other-secret", p.C)
    with pytest.raises(MintRejected) as info:
        await client.swap([forged], outs)
    assert info.value.is_invalid_proof
    await client.aclose()


async def test_swap_rejects_short_keyset_id_locally() -> None:
    mint = FakeMint()
    client = MintClient(URL, transport=mint.transport())
    (p,) = wallet_proofs(mint, [2])
    short = Proof(p.keyset_id[:16], 2, p.secret, p.C)
    with pytest.raises(ValueError, match="short keyset id"):
        await client.swap([short], [])
    assert mint.requests == []
    with pytest.raises(ValueError):
        await client.keys("../v1/swap")
    with pytest.raises(ValueError):
        MintClient("mint.test")
    await client.aclose()


# --------------------------------------------------------------------------- transport errors


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("slow"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("eof"),
        httpx.ReadError("reset"),
    ],
)
async def test_network_errors_are_unavailable(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    client = client_for(handler)
    with pytest.raises(MintUnavailable):
        await client.keysets()
    await client.aclose()


async def test_real_connect_error() -> None:
    client = MintClient("http://127.0.0.1:9", timeout=0.5)
    with pytest.raises(MintUnavailable):
        await client.keysets()
    await client.aclose()


@pytest.mark.parametrize(
    ("status", "body", "content"),
    [
        (500, {"detail": "boom"}, None),
        (502, None, b"<html>bad gateway</html>"),
        (503, None, b""),
        (429, {"detail": "Rate limit exceeded"}, None),
        (200, None, b"<html>ok</html>"),
        (200, None, b""),
        (302, None, b""),
    ],
)
async def test_unavailable_statuses(status: int, body: Any, content: bytes | None) -> None:
    client = fixed(status, body, content=content)
    with pytest.raises(MintUnavailable):
        await client.keysets()
    await client.aclose()


# --------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    ("status", "body", "content", "code", "detail"),
    [
        (
            400,
            {"detail": "proofs already spent", "code": 11001},
            None,
            11001,
            "proofs already spent",
        ),
        (400, {"detail": "keyset abc unknown", "code": 0}, None, 0, "keyset abc unknown"),
        (400, {"detail": "x" * 1000, "code": "11001"}, None, None, "x" * 200),
        (400, {"detail": "y", "code": True}, None, None, "y"),
        (
            422,
            {"detail": [{"loc": ["body"], "msg": "field required"}]},
            None,
            None,
            "request validation failed",
        ),
        (404, None, b"Not Found", None, "HTTP 404"),
        (400, [1, 2], None, None, "HTTP 400"),
        # some mints answer errors with 200 {"detail", "code"}
        (200, {"detail": "keyset not found", "code": 12001}, None, 12001, "keyset not found"),
    ],
)
async def test_rejections(
    status: int, body: Any, content: bytes | None, code: int | None, detail: str
) -> None:
    client = fixed(status, body, content=content)
    with pytest.raises(MintRejected) as info:
        await client.keysets()
    assert info.value.code == code and info.value.detail == detail
    assert not info.value.is_spent or code == 11001
    await client.aclose()


# --------------------------------------------------------------------------- protocol errors


GOOD_B = "02a9acc1e48c25eeeb9289b5031cc57da9fe72f3fe2861d264bdc074209b107ba2"
OUT = BlindedMessage(1, "00ad268c4d1f5826", GOOD_B)


def sig(**over: Any) -> dict[str, Any]:
    return {"id": "00ad268c4d1f5826", "amount": 1, "C_": GOOD_B} | over


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"keysets": {}},
        {"keysets": [{"id": "00ad268c4d1f5826", "unit": "sat"}]},
        {"keysets": [{"id": "00ad268c4d1f5826", "unit": 1, "active": True}]},
        {"keysets": [{"id": "00ad268c4d1f5826", "unit": "sat", "active": "yes"}]},
        {
            "keysets": [
                {"id": "00ad268c4d1f5826", "unit": "sat", "active": True, "input_fee_ppk": -1}
            ]
        },
        {
            "keysets": [
                {"id": "00ad268c4d1f5826", "unit": "sat", "active": True, "input_fee_ppk": 1.5}
            ]
        },
        {"keysets": [1]},
    ],
)
async def test_keysets_protocol_errors(body: Any) -> None:
    client = fixed(200, body)
    with pytest.raises(MintProtocolError):
        await client.keysets()
    await client.aclose()


async def test_keysets_skips_legacy_ids_and_defaults_fee() -> None:
    client = fixed(
        200,
        {
            "keysets": [
                {"id": "I2yN+iRYfkzT", "unit": "sat", "active": False},
                {"id": "00ad268c4d1f5826", "unit": "sat", "active": True, "input_fee_ppk": None},
                {"id": "00ffd48b8f5ecf80", "unit": "usd", "active": False},
            ]
        },
    )
    assert await client.keysets() == [
        KeysetInfo("00ad268c4d1f5826", "sat", True, 0),
        KeysetInfo("00ffd48b8f5ecf80", "usd", False, 0),
    ]
    await client.aclose()


KID = "00ad268c4d1f5826"


@pytest.mark.parametrize(
    "body",
    [
        {"keysets": []},
        {"keysets": [{"id": "00ffd48b8f5ecf80", "keys": {"1": GOOD_B}}]},
        {"keysets": [{"id": KID}]},
        {"keysets": [{"id": KID, "keys": {}}]},
        {"keysets": [{"id": KID, "keys": []}]},
        {"keysets": [{"id": KID, "keys": {"1": "02" + "00" * 32}}]},
        {"keysets": [{"id": KID, "keys": {"1": 5}}]},
        {"keysets": [{"id": KID, "keys": {"0": GOOD_B}}]},
        {"keysets": [{"id": KID, "keys": {"-1": GOOD_B}}]},
        {"keysets": [{"id": KID, "keys": {"one": GOOD_B}}]},
        {"keysets": [{"id": KID, "keys": {"9" * 5000: GOOD_B}}]},
        {"keysets": [{"id": KID, "keys": {"1": GOOD_B}}, {"id": KID, "keys": {"1": GOOD_B}}]},
    ],
)
async def test_keys_protocol_errors(body: Any) -> None:
    client = fixed(200, body)
    with pytest.raises(MintProtocolError):
        await client.keys(KID)
    await client.aclose()


@pytest.mark.parametrize(
    "body",
    [
        {"signatures": []},
        {"signatures": [sig(), sig()]},
        {"signatures": [sig(amount=2)]},
        {"signatures": [sig(amount=0)]},
        {"signatures": [sig(amount=True)]},
        {"signatures": [sig(id="00ffd48b8f5ecf80")]},
        {"signatures": [sig(id="not-hex")]},
        {"signatures": [sig(C_="02" + "00" * 32)]},
        {"signatures": [sig(dleq={"e": "zz", "s": "00" * 32})]},
        {"signatures": [sig(dleq={"e": "00" * 32})]},
        {"signatures": [{"id": KID, "amount": 1}]},
        {"signatures": [1]},
        {"signatures": "nope"},
        {"other": []},
    ],
)
async def test_swap_protocol_errors(body: Any) -> None:
    client = fixed(200, body)
    with pytest.raises(MintProtocolError):
        await client.swap([], [OUT])
    await client.aclose()


async def test_swap_accepts_dleq_and_uppercase() -> None:
    client = fixed(
        200, {"signatures": [sig(C_=GOOD_B.upper(), dleq={"e": "AB" * 32, "s": "cd" * 32})]}
    )
    (got,) = await client.swap([], [OUT])
    assert got.C_ == GOOD_B and got.dleq is not None and got.dleq.e == "ab" * 32
    await client.aclose()


@pytest.mark.parametrize(
    "body",
    [
        {"outputs": [{"amount": 1, "id": KID, "B_": GOOD_B}], "signatures": []},
        {"outputs": [{"amount": 2, "id": KID, "B_": GOOD_B}], "signatures": [sig(amount=2)]},
        {
            "outputs": [{"amount": 1, "id": KID, "B_": "03" + GOOD_B[2:]}],
            "signatures": [sig()],
        },
        {"outputs": "x", "signatures": []},
    ],
)
async def test_restore_protocol_errors(body: Any) -> None:
    client = fixed(200, body)
    with pytest.raises(MintProtocolError):
        await client.restore([OUT])
    await client.aclose()


async def test_restore_legacy_promises_key() -> None:
    client = fixed(200, {"outputs": [{"amount": 1, "id": KID, "B_": GOOD_B}], "promises": [sig()]})
    outs, sigs = await client.restore([OUT])
    assert outs == [OUT] and sigs[0].C_ == GOOD_B
    await client.aclose()


Y1, Y2 = GOOD_B, "03" + GOOD_B[2:]


@pytest.mark.parametrize(
    "body",
    [
        {"states": [{"Y": Y1, "state": "UNSPENT"}]},  # Y2 missing
        {"states": [{"Y": Y1, "state": "GONE"}, {"Y": Y2, "state": "SPENT"}]},
        {"states": [{"Y": 1, "state": "SPENT"}, {"Y": Y2, "state": "SPENT"}]},
        {"states": [{"state": "SPENT"}]},
        {"states": {}},
    ],
)
async def test_check_state_protocol_errors(body: Any) -> None:
    client = fixed(200, body)
    with pytest.raises(MintProtocolError):
        await client.check_state([Y1, Y2])
    await client.aclose()


async def test_check_state_reorders_by_y() -> None:
    client = fixed(
        200,
        {
            "states": [
                {"Y": Y2, "state": "PENDING", "witness": None},
                {"Y": Y1.upper(), "state": "SPENT", "witness": "{}"},
            ]
        },
    )
    assert await client.check_state([Y1, Y2]) == ["SPENT", "PENDING"]
    await client.aclose()


async def test_response_too_large() -> None:
    client = fixed(200, content=b"[" + b" " * MAX_RESPONSE_BYTES + b"]")
    with pytest.raises(MintProtocolError, match="too large"):
        await client.keysets()
    await client.aclose()


async def test_deeply_nested_json_is_unavailable_not_crash() -> None:
    client = fixed(200, content=b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises((MintUnavailable, MintProtocolError)):
        await client.keysets()
    await client.aclose()


async def test_timeout_is_passed_to_httpx() -> None:
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(request.extensions["timeout"])
        seen["accept"] = request.headers["accept"]
        seen["body"] = json.loads(request.content or b"null")
        return httpx.Response(200, json={"keysets": []})

    client = MintClient(URL, timeout=1.5, transport=httpx.MockTransport(handler))
    assert await client.keysets() == []
    assert seen["read"] == 1.5 and seen["connect"] == 1.5
    assert seen["accept"] == "application/json" and seen["body"] is None
    await client.aclose()


async def test_a_trickling_answer_is_cut_at_the_overall_deadline() -> None:
    """httpx's timeouts bound each read; a mint that sends a byte now and then would hold a
    request for ever. The client's timeout bounds the whole call."""

    class Trickle(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for _ in range(100):
                await asyncio.sleep(0.1)
                yield b" "

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Trickle())

    client = MintClient(URL, timeout=0.5, transport=httpx.MockTransport(handler))
    started = time.monotonic()
    with pytest.raises(MintUnavailable, match="timeout"):
        await client.keysets()
    assert time.monotonic() - started < 1.5
    await client.aclose()
