"""NUT-18 payment requests: spec vectors, round trips, strict decoding."""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paygress.cashu.nut18 import (
    Nut10Option,
    PaymentRequest,
    decode_payment_request,
    encode_payment_request,
)
from tests.unit.cashu.vectors import SPEC_CREQ_BASIC, SPEC_CREQ_COMPLETE, SPEC_CREQ_MINIMAL


def creq(doc: Any) -> str:
    return "creqA" + base64.urlsafe_b64encode(cbor2.dumps(doc)).decode().rstrip("=")


def test_spec_basic() -> None:
    assert decode_payment_request(SPEC_CREQ_BASIC) == PaymentRequest(
        amount=10,
        unit="sat",
        mints=("https://8333.space:3338",),
        description=None,
        id="b7a90176",
        single_use=None,
    )


def test_spec_complete_ignores_transport_and_reads_nut10() -> None:
    assert decode_payment_request(SPEC_CREQ_COMPLETE) == PaymentRequest(
        amount=1000,
        unit="sat",
        mints=("https://mint.example.com",),
        description="Product purchase",
        id="4840f51e",
        single_use=True,
        nut10=Nut10Option(
            "P2PK",
            "03baf0c3ac220366c2c397bf930579c4163435584f573b10910987c544c59e61f1",
            (("purpose", "offline"),),
        ),
    )


def test_a_p2pk_lock_roundtrips() -> None:
    lock = Nut10Option("P2PK", "02" + "ab" * 32)
    pr = PaymentRequest(3, "sat", ("https://mint.a",), None, None, None, lock)
    assert decode_payment_request(encode_payment_request(pr)) == pr


def test_spec_minimal_roundtrips_exactly() -> None:
    pr = decode_payment_request(SPEC_CREQ_MINIMAL)
    assert pr == PaymentRequest(None, "sat", ("https://mint.example.com",), None, "7f4a2b39", None)
    assert encode_payment_request(pr) == SPEC_CREQ_MINIMAL.rstrip("=")


def test_nut24_shape() -> None:
    pr = PaymentRequest(21, "sat", ("https://mint.a", "https://mint.b"), None, None, None)
    encoded = encode_payment_request(pr)
    assert encoded.startswith("creqA") and "=" not in encoded
    raw = cbor2.loads(base64.urlsafe_b64decode(encoded[5:] + "=" * (-len(encoded[5:]) % 4)))
    assert raw == {"a": 21, "u": "sat", "m": ["https://mint.a", "https://mint.b"]}
    assert "t" not in raw  # in-band (NUT-24): no transport


def test_empty_request() -> None:
    pr = PaymentRequest(None, None, (), None, None, None)
    assert decode_payment_request(encode_payment_request(pr)) == pr


pr_strategy = st.builds(
    PaymentRequest,
    amount=st.none() | st.integers(min_value=1, max_value=2**64 - 1),
    unit=st.none() | st.text(max_size=10),
    mints=st.lists(st.text(min_size=1, max_size=30), max_size=3).map(tuple),
    description=st.none() | st.text(max_size=40),
    id=st.none() | st.text(max_size=10),
    single_use=st.none() | st.booleans(),
)


@settings(max_examples=100, deadline=None)
@given(pr_strategy)
def test_roundtrip(pr: PaymentRequest) -> None:
    assert decode_payment_request(encode_payment_request(pr)) == pr


@pytest.mark.parametrize(
    "text",
    [
        "",
        "creqB" + "AAAA",
        "creqA",
        "creqA!!!",
        "creqAa",
        "creqA" + "A" * 20_000,
        creq([1]),
        creq({"a": "10"}),
        creq({"a": 0}),
        creq({"a": True}),
        creq({"u": 1}),
        creq({"s": 1}),
        creq({"m": "https://mint"}),
        creq({"m": [1]}),
        creq({"m": [""]}),
        creq({"d": b"x"}),
        creq({"i": 5}),
        creq({"a": 1}) + "AAAA",  # trailing bytes
    ],
)
def test_rejections(text: str) -> None:
    with pytest.raises(ValueError):
        decode_payment_request(text)


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=200)
    | st.binary(max_size=200).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="))
)
def test_fuzz_only_value_error(text: str) -> None:
    for candidate in (text, "creqA" + text):
        with contextlib.suppress(ValueError):
            decode_payment_request(candidate)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["a", "u", "s", "m", "d", "i", "t", "nut10"]),
        st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.lists(st.integers()),
    )
)
def test_fuzz_structures(doc: dict[str, Any]) -> None:
    with contextlib.suppress(ValueError):
        decode_payment_request(creq(doc))
