"""Token parsing/encoding: spec + nutshell vectors, strict validation, fuzzing."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
from dataclasses import replace
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paygress.cashu.crypto import hash_to_curve
from paygress.cashu.models import DLEQ, Proof, Token
from paygress.cashu.token import (
    TokenError,
    encode_token_v3,
    encode_token_v4,
    parse_token,
    resolve_keyset_id,
    short_keyset_id,
)
from tests.unit.cashu.vectors import (
    NUTSHELL_KEYSET_ID,
    NUTSHELL_SIGNATURES,
    NUTSHELL_TOKEN_V3_DLEQ,
    NUTSHELL_TOKEN_V3_NODLEQ,
    NUTSHELL_TOKEN_V4_DLEQ,
    NUTSHELL_TOKEN_V4_NODLEQ,
    NUTSHELL_YS,
    SPEC_V3_TOKEN,
    SPEC_V4_MULTI,
    SPEC_V4_SINGLE,
)

C1 = "038618543ffb6b8695df4ad4babcde92a34a96bdcd97dcee0d7ccf98d472126792"
C2 = "02bc9097997d81afb2cc7346b5e4345a9346bd2a506eb7958598a72f0cf85163ea"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def v4(doc: object) -> str:
    return "cashuB" + b64(cbor2.dumps(doc))


def v3(doc: object) -> str:
    return "cashuA" + b64(json.dumps(doc).encode())


def v4_doc() -> dict[str, Any]:
    return {
        "t": [
            {
                "i": bytes.fromhex("00ad268c4d1f5826"),
                "p": [
                    {"a": 1, "s": "secret-1", "c": bytes.fromhex(C1)},
                    {
                        "a": 4,
                        "s": "secret-2",
                        "c": bytes.fromhex(C2),
                        "d": {"e": b"\x01" * 32, "s": b"\x02" * 32, "r": b"\x03" * 32},
                        "w": '{"signatures":[]}',
                    },
                ],
            }
        ],
        "d": "memo",
        "m": "https://mint.example",
        "u": "sat",
    }


def v3_doc() -> dict[str, Any]:
    return {
        "token": [
            {
                "mint": "https://mint.example",
                "proofs": [
                    {"id": "00ad268c4d1f5826", "amount": 1, "secret": "secret-1", "C": C1},
                    {
                        "id": "00AD268C4D1F5826",
                        "amount": 4,
                        "secret": "secret-2",
                        "C": C2.upper(),
                        "dleq": {"e": "01" * 32, "s": "02" * 32, "r": "03" * 32},
                        "witness": "w",
                    },
                ],
            }
        ],
        "memo": None,
    }


# --------------------------------------------------------------------------- vectors


def test_spec_v3() -> None:
    token = parse_token(SPEC_V3_TOKEN)
    assert (token.version, token.mint, token.unit, token.memo) == (
        3,
        "https://8333.space:3338",
        "sat",
        "Thank you.",
    )
    assert [p.amount for p in token.proofs] == [2, 8] and token.amount == 10
    assert token.proofs[0].keyset_id == "009a1f293253e41e"
    assert encode_token_v3(token) == SPEC_V3_TOKEN


def test_spec_v4_single() -> None:
    token = parse_token(SPEC_V4_SINGLE)
    assert (token.version, token.mint, token.unit, token.memo, token.amount) == (
        4,
        "http://localhost:3338",
        "sat",
        "Thank you",
        1,
    )
    proof = token.proofs[0]
    assert proof.keyset_id == "00ad268c4d1f5826"
    assert proof.secret == "9a6dbb847bd232ba76db0df197216b29d3b8cc14553cd27827fc1cc942fedb4e"
    assert proof.C == C1
    assert encode_token_v4(token) == SPEC_V4_SINGLE.rstrip("=")


def test_spec_v4_multi() -> None:
    token = parse_token(SPEC_V4_MULTI)
    assert [(p.keyset_id, p.amount) for p in token.proofs] == [
        ("00ffd48b8f5ecf80", 1),
        ("00ad268c4d1f5826", 2),
        ("00ad268c4d1f5826", 1),
    ]
    assert token.memo is None
    assert encode_token_v4(token) == SPEC_V4_MULTI.rstrip("=")


@pytest.mark.parametrize("text", [NUTSHELL_TOKEN_V4_DLEQ, NUTSHELL_TOKEN_V4_NODLEQ])
def test_nutshell_v4(text: str) -> None:
    token = parse_token(text)
    assert token.mint == "http://mint.local:3338" and token.memo == "memo here"
    assert token.amount == 11
    # nutshell writes the 8-byte short id of the v2 keyset into V4 tokens
    assert {p.keyset_id for p in token.proofs} == {NUTSHELL_KEYSET_ID[:16]}
    assert [p.y() for p in token.proofs] == [NUTSHELL_YS[a] for a in (1, 2, 8)]
    with_dleq = text == NUTSHELL_TOKEN_V4_DLEQ
    for proof, sig in zip(token.proofs, NUTSHELL_SIGNATURES, strict=True):
        expected = DLEQ(e=sig[3], s=sig[4], r=sig[5]) if with_dleq else None
        assert proof.dleq == expected
    assert encode_token_v4(token) == text  # byte-identical re-encoding


@pytest.mark.parametrize("text", [NUTSHELL_TOKEN_V3_DLEQ, NUTSHELL_TOKEN_V3_NODLEQ])
def test_nutshell_v3(text: str) -> None:
    token = parse_token(text)
    assert token.version == 3 and token.unit == "sat" and token.memo is None
    assert {p.keyset_id for p in token.proofs} == {NUTSHELL_KEYSET_ID}  # full id in V3
    assert [p.y() for p in token.proofs] == [NUTSHELL_YS[a] for a in (1, 2, 8)]
    assert (token.proofs[0].dleq is not None) == (text == NUTSHELL_TOKEN_V3_DLEQ)


def test_v3_nutshell_tokens_convert_to_nutshell_v4() -> None:
    token = replace(parse_token(NUTSHELL_TOKEN_V3_DLEQ), memo="memo here")
    assert encode_token_v4(token) == NUTSHELL_TOKEN_V4_DLEQ


# --------------------------------------------------------------------------- accepted forms


def test_v3_normalises_hex_and_defaults_unit() -> None:
    token = parse_token(v3(v3_doc()))
    assert token.unit == "sat" and token.memo is None
    assert token.proofs[1].keyset_id == "00ad268c4d1f5826"
    assert token.proofs[1].C == C2
    assert token.proofs[1].dleq == DLEQ("01" * 32, "02" * 32, "03" * 32)
    assert token.proofs[1].witness == "w"


def test_v3_same_mint_in_two_entries_is_fine() -> None:
    doc = v3_doc()
    doc["token"].append({"mint": "https://mint.example", "proofs": []})
    assert parse_token(v3(doc)).amount == 5


def test_v3_dleq_without_r_and_null_fields() -> None:
    doc = v3_doc()
    doc["token"][0]["proofs"][1]["dleq"] = {"e": "01" * 32, "s": "02" * 32}
    doc["token"][0]["proofs"][0].update({"dleq": None, "witness": None})
    doc["unit"] = "usd"
    token = parse_token(v3(doc))
    assert token.proofs[1].dleq == DLEQ("01" * 32, "02" * 32, None)
    assert token.unit == "usd"


def test_v4_fields() -> None:
    token = parse_token(v4(v4_doc()))
    assert token.proofs[1].dleq == DLEQ("01" * 32, "02" * 32, "03" * 32)
    assert token.proofs[1].witness == '{"signatures":[]}'
    assert token.memo == "memo"


def pad(text: str) -> str:
    return text + "=" * (-(len(text) - 6) % 4)


@pytest.mark.parametrize(
    "transform",
    [
        pad,  # explicit padding
        lambda t: "  \n" + t + "\t ",
        lambda t: "cashu:" + t,
        lambda t: pad(t).replace("-", "+").replace("_", "/"),  # standard alphabet
    ],
)
def test_encoding_variants(transform: Any) -> None:
    for text in (v4(v4_doc()), v3(v3_doc())):
        assert parse_token(transform(text)).amount == 5


def test_full_length_v2_id_in_v4() -> None:
    doc = v4_doc()
    doc["t"][0]["i"] = bytes.fromhex(NUTSHELL_KEYSET_ID)
    token = parse_token(v4(doc))
    assert token.proofs[0].keyset_id == NUTSHELL_KEYSET_ID
    assert encode_token_v4(token, short_ids=False) == v4(doc)
    assert parse_token(encode_token_v4(token)).proofs[0].keyset_id == NUTSHELL_KEYSET_ID[:16]


# --------------------------------------------------------------------------- round trips


def make_token(n: int = 3, keyset_id: str = NUTSHELL_KEYSET_ID) -> Token:
    proofs = tuple(
        Proof(
            keyset_id=keyset_id,
            amount=2**i,
            secret=f"secret-{i}",
            C=hash_to_curve(bytes([i])).format().hex(),
            dleq=DLEQ("aa" * 32, "bb" * 32, "cc" * 32) if i % 2 else None,
            witness="wit" if i == 0 else None,
        )
        for i in range(n)
    )
    return Token(mint="https://m.example", unit="sat", proofs=proofs, memo="hi", version=4)


def test_roundtrip_v4_and_v3() -> None:
    token = make_token()
    back4 = parse_token(encode_token_v4(token, short_ids=False))
    assert back4 == token
    back3 = parse_token(encode_token_v3(token))
    assert back3 == replace(token, version=3)
    short = parse_token(encode_token_v4(token))
    assert [replace(p, keyset_id=NUTSHELL_KEYSET_ID) for p in short.proofs] == list(token.proofs)


def test_encoders_drop_dleq_without_r() -> None:
    token = make_token(2)
    token = replace(token, proofs=(replace(token.proofs[1], dleq=DLEQ("aa" * 32, "bb" * 32)),))
    assert parse_token(encode_token_v4(token)).proofs[0].dleq is None
    assert parse_token(encode_token_v3(token)).proofs[0].dleq is None


TEXT_CHARS = st.characters(exclude_categories=["Cs"])  # no lone surrogates

proof_strategy = st.builds(
    Proof,
    keyset_id=st.sampled_from(["00ad268c4d1f5826", NUTSHELL_KEYSET_ID]),
    amount=st.integers(min_value=1, max_value=2**63 - 1),
    secret=st.text(TEXT_CHARS, min_size=1, max_size=50),  # no lone surrogates
    C=st.binary(min_size=1, max_size=8).map(lambda b: hash_to_curve(b).format().hex()),
    dleq=st.none() | st.builds(DLEQ, st.just("11" * 32), st.just("22" * 32), st.just("33" * 32)),
    witness=st.none() | st.text(TEXT_CHARS, max_size=20),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(proof_strategy, min_size=1, max_size=8, unique_by=lambda p: p.secret),
    st.none() | st.text(TEXT_CHARS, max_size=20),
    st.sampled_from(["sat", "usd", "msat"]),
)
def test_roundtrip_property(proofs: list[Proof], memo: str | None, unit: str) -> None:
    token = Token("https://m.example/x", unit, tuple(proofs), memo, 4)
    back4 = parse_token(encode_token_v4(token, short_ids=False), max_bytes=100_000)
    # V4 groups proofs by keyset, so only the order may change
    assert replace(back4, proofs=token.proofs) == token
    assert sorted(back4.proofs, key=lambda p: p.secret) == sorted(proofs, key=lambda p: p.secret)
    assert parse_token(encode_token_v3(token), max_bytes=100_000) == replace(token, version=3)


# --------------------------------------------------------------------------- rejections


def reason_of(text: str, **kwargs: Any) -> str:
    with pytest.raises(TokenError) as info:
        parse_token(text, **kwargs)
    # the message never echoes token contents
    body = text.strip()[6:]
    if len(body) >= 8:
        assert body[:8] not in str(info.value)
    assert "secret-" not in str(info.value)
    return info.value.reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("hello", "malformed"),
        ("cashu", "malformed"),
        ("cashuB", "malformed"),
        ("casshuAeyJ0b2tlbiI6W119", "malformed"),
        ("cashuCeyJ0b2tlbiI6W119", "unsupported_version"),
        ("cashuBnot*base64", "malformed"),
        ("cashuBa", "malformed"),  # impossible base64 length
        ("cashuBYQ=a", "malformed"),  # padding in the middle
        ("cashuBéé", "malformed"),
        ("cashuA" + b64(b"not json"), "malformed"),
        ("cashuA" + b64(b"[]"), "malformed"),
        ("cashuA" + b64(b'{"token": []}'), "empty"),
        ("cashuA" + b64(b'{"token": [{"mint": "https://a", "proofs": []}]}'), "empty"),
        ("cashuA" + b64(b'{"token": [{"mint": NaN}]}'), "malformed"),
        ("cashuA" + b64(b"\xff\xfe"), "malformed"),
        ("cashuA" + b64(b"[" * 5000 + b"]" * 5000), "malformed"),
        ("cashuB" + b64(cbor2.dumps([1, 2])), "malformed"),
        ("cashuB" + b64(cbor2.dumps(v4_doc()) + b"\x00"), "malformed"),  # trailing bytes
        ("cashuB" + b64(b"\xa1"), "malformed"),  # truncated CBOR
        ("cashuB" + b64(b"\x81" * 100 + b"\x00"), "malformed"),  # too deep
    ],
)
def test_rejections(text: str, reason: str) -> None:
    assert reason_of(text, max_bytes=100_000) == reason


def test_size_limits() -> None:
    text = v4(v4_doc())
    assert reason_of(text, max_bytes=len(text) - 1) == "too_large"
    assert reason_of("x" * 10**6) == "too_large"
    assert reason_of(text, max_proofs=1) == "too_many_proofs"
    assert parse_token(text, max_proofs=2).amount == 5


def test_multiple_mints() -> None:
    doc = v3_doc()
    doc["token"].append(
        {"mint": "https://other.example", "proofs": [doc["token"][0]["proofs"].pop()]}
    )
    assert reason_of(v3(doc)) == "multiple_mints"


def test_duplicate_proofs() -> None:
    doc = v4_doc()
    doc["t"].append(copy.deepcopy(doc["t"][0]))
    assert reason_of(v4(doc)) == "duplicate_proofs"


def test_duplicate_cbor_keys() -> None:
    raw = cbor2.dumps(v4_doc())
    # {"u": "sat"} appears last; append another "u" by patching the map header (4 -> 5 items)
    patched = bytes([raw[0] + 1]) + raw[1:] + cbor2.dumps("u")[0:] + cbor2.dumps("usd")
    assert reason_of("cashuB" + b64(patched)) == "malformed"


V4_MUTATIONS: list[tuple[str, Any]] = [
    ("m", None),
    ("m", 5),
    ("m", ""),
    ("m", "ftp://mint"),
    ("m", "https://mint example"),
    ("m", "https://" + "a" * 600),
    ("u", None),
    ("u", ""),
    ("u", b"sat"),
    ("u", "x" * 65),
    ("d", 3),
    ("t", None),
    ("t", {}),
    ("t", [[]]),
    ("t.i", None),
    ("t.i", "00ad268c4d1f5826"),
    ("t.i", b"\x00" * 7),
    ("t.i", b"\x00" * 16),
    ("t.p", None),
    ("t.p", [1]),
    ("p.a", None),
    ("p.a", 0),
    ("p.a", -1),
    ("p.a", 2**63),
    ("p.a", True),
    ("p.a", 1.0),
    ("p.a", "1"),
    ("p.s", None),
    ("p.s", ""),
    ("p.s", "x" * 1025),
    ("p.s", b"secret"),
    ("p.c", None),
    ("p.c", C1),
    ("p.c", b"\x02" + b"\x00" * 32),  # not on curve
    ("p.c", b"\x04" + b"\x00" * 32),
    ("p.c", bytes.fromhex(C1)[:32]),
    ("p.d", []),
    ("p.d", {"e": b"\x01" * 32}),
    ("p.d", {"e": b"\x01" * 32, "s": b"\x02" * 31, "r": b"\x03" * 32}),
    ("p.d", {"e": b"\x01" * 32, "s": b"\x02" * 32, "r": "03" * 32}),
    ("p.w", 7),
    ("p.w", "x" * 5000),
]


def mutate_v4(path: str, value: Any) -> dict[str, Any]:
    doc = v4_doc()
    head, _, tail = path.partition(".")
    target: dict[str, Any]
    if head == "t" and tail:
        target = doc["t"][0]
    elif head == "p":
        target = doc["t"][0]["p"][1]
    else:
        target, tail = doc, head
    if value is None:
        target.pop(tail, None)
    else:
        target[tail] = value
    return doc


@pytest.mark.parametrize(("path", "value"), V4_MUTATIONS)
def test_v4_field_validation(path: str, value: Any) -> None:
    if path == "d":
        assert reason_of(v4(mutate_v4(path, value))) == "malformed"
        return
    assert reason_of(v4(mutate_v4(path, value))) in ("malformed", "empty")


V3_MUTATIONS: list[tuple[str, Any]] = [
    ("unit", 5),
    ("unit", ""),
    ("memo", 1),
    ("token", {}),
    ("token", [1]),
    ("mint", None),
    ("mint", 1),
    ("proofs", None),
    ("proofs", {}),
    ("proof", 1),
    ("id", None),
    ("id", "xyz"),
    ("id", "009a1f29"),
    ("id", "I2yN+iRYfkzT"),
    ("id", 5),
    ("amount", "1"),
    ("amount", 0),
    ("amount", False),
    ("amount", 2**64),
    ("amount", 1.5),
    ("secret", ""),
    ("secret", ["x"]),
    ("secret", "\ud800"),  # lone surrogate survives JSON but is not UTF-8
    ("C", "02" + "00" * 32),
    ("C", "zz"),
    ("C", 2),
    ("dleq", "x"),
    ("dleq", {"e": "01" * 32, "s": "zz" * 32}),
    ("dleq", {"e": "01" * 32, "s": "02" * 32, "r": 3}),
    ("witness", {"signatures": []}),
]


@pytest.mark.parametrize(("field", "value"), V3_MUTATIONS)
def test_v3_field_validation(field: str, value: Any) -> None:
    doc = v3_doc()
    if field in ("unit", "memo", "token"):
        doc[field] = value
    elif field in ("mint", "proofs"):
        entry = doc["token"][0]
        if value is None:
            entry.pop(field)
        else:
            entry[field] = value
    elif field == "proof":
        doc["token"][0]["proofs"][0] = value
    else:
        proof = doc["token"][0]["proofs"][0]
        if value is None:
            proof.pop(field)
        else:
            proof[field] = value
    text = "cashuA" + b64(json.dumps(doc).encode())
    assert reason_of(text) == "malformed"


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_text(text: str) -> None:
    for candidate in (text, "cashuA" + text, "cashuB" + text):
        with contextlib.suppress(TokenError):
            parse_token(candidate)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["cashuA", "cashuB"]))
def test_fuzz_bytes(data: bytes, prefix: str) -> None:
    with contextlib.suppress(TokenError):
        parse_token(prefix + b64(data))


cbor_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.binary(max_size=40)
    | st.text(max_size=20)
    | st.sampled_from(["m", "u", "t", "i", "p", "a", "s", "c", "d", "w", "e", "r"])
)
cbor_value = st.recursive(
    cbor_leaf,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["m", "u", "t", "i", "p", "a", "s", "c", "d", "w", "e", "r", "x"])
            | st.integers(),
            children,
            max_size=6,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(cbor_value)
def test_fuzz_cbor_structures(doc: Any) -> None:
    with contextlib.suppress(TokenError):
        parse_token("cashuB" + b64(cbor2.dumps(doc)))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(
        [
            "m",
            "u",
            "d",
            "t",
            "t.i",
            "t.p",
            "p.a",
            "p.s",
            "p.c",
            "p.d",
            "p.w",
        ]
    ),
    cbor_value,
)
def test_fuzz_v4_field_values(path: str, value: Any) -> None:
    with contextlib.suppress(TokenError):
        parse_token(v4(mutate_v4(path, value)))


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=5),
        max_leaves=30,
    )
)
def test_fuzz_json_structures(doc: Any) -> None:
    for candidate in (doc, {"token": [{"mint": "https://a", "proofs": [doc]}]}):
        with contextlib.suppress(TokenError):
            parse_token("cashuA" + b64(json.dumps(candidate).encode()))


def test_tagged_cbor_values_are_rejected_not_crashing() -> None:
    for tagged in (
        cbor2.CBORTag(1, 10**30),  # datetime out of range
        cbor2.CBORTag(2, b"\x01" * 50),  # bignum
        cbor2.CBORTag(4, [1]),  # malformed decimal fraction
        cbor2.CBORTag(35, "("),  # invalid regex
        cbor2.CBORTag(258, [[1]]),  # set of unhashable
        cbor2.CBORTag(28, cbor2.CBORTag(29, 0)),  # shared refs
        cbor2.CBORTag(55799, {"m": 1}),
    ):
        doc = v4_doc()
        doc["t"][0]["p"][0]["a"] = tagged
        assert reason_of(v4(doc)) == "malformed"


# --------------------------------------------------------------------------- keyset ids


def test_short_keyset_id() -> None:
    assert short_keyset_id(NUTSHELL_KEYSET_ID) == NUTSHELL_KEYSET_ID[:16]
    assert short_keyset_id("009a1f293253e41e") == "009a1f293253e41e"


def test_resolve_keyset_id() -> None:
    other = "01" + "ab" * 32
    known = ["009a1f293253e41e", NUTSHELL_KEYSET_ID, other]
    assert resolve_keyset_id(NUTSHELL_KEYSET_ID[:16], known) == NUTSHELL_KEYSET_ID
    assert resolve_keyset_id(NUTSHELL_KEYSET_ID, known) == NUTSHELL_KEYSET_ID
    assert resolve_keyset_id("009a1f293253e41e", known) == "009a1f293253e41e"
    assert resolve_keyset_id("009A1F293253E41E", known) == "009a1f293253e41e"
    assert resolve_keyset_id("01" + "cd" * 7, known) is None
    clash = NUTSHELL_KEYSET_ID[:16] + "00" * 25
    assert resolve_keyset_id(NUTSHELL_KEYSET_ID[:16], [*known, clash]) is None  # ambiguous
    assert resolve_keyset_id(NUTSHELL_KEYSET_ID[:16], iter(known)) == NUTSHELL_KEYSET_ID


def test_token_error_is_value_error() -> None:
    err = TokenError("malformed", "bad")
    assert isinstance(err, ValueError) and err.reason == "malformed" and str(err) == "bad"
