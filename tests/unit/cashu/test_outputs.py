"""Wallet math: splitting, fees, deterministic outputs, unblinding, coin selection."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paygress.cashu.crypto import blind_message, hash_to_curve, verify_proof_dleq
from paygress.cashu.errors import MintProtocolError
from paygress.cashu.models import DLEQ, BlindSignature, Proof
from paygress.cashu.nut13 import Seed
from paygress.cashu.outputs import (
    input_fee,
    prepare_outputs,
    select_proofs,
    split_amount,
    unblind,
)
from tests.unit.cashu.fakemint import FakeMint
from tests.unit.cashu.vectors import NUT13_MNEMONIC, NUT13_NUTSHELL, NUT13_V2_KEYSET

POWERS = [2**i for i in range(64)]


@pytest.fixture(scope="module")
def seed() -> Seed:
    return Seed.from_mnemonic(NUT13_MNEMONIC)


# --------------------------------------------------------------------------- split / fee


@pytest.mark.parametrize(
    ("amount", "expected"),
    [(0, []), (1, [1]), (13, [1, 4, 8]), (64, [64]), (2**64 - 1, POWERS)],
)
def test_split_powers(amount: int, expected: list[int]) -> None:
    assert split_amount(amount, POWERS) == expected


def test_split_limited_denominations() -> None:
    assert split_amount(20, [1, 2, 4, 8]) == [4, 8, 8]
    assert split_amount(7, [5, 1]) == [1, 1, 5]
    with pytest.raises(ValueError):
        split_amount(3, [2, 4])
    with pytest.raises(ValueError):
        split_amount(-1, POWERS)
    with pytest.raises(ValueError):
        split_amount(1, [])


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_split_property(amount: int) -> None:
    parts = split_amount(amount, POWERS)
    assert sum(parts) == amount and parts == sorted(parts)
    assert len(parts) == bin(amount).count("1")


def proof(amount: int, keyset_id: str = "00ad268c4d1f5826", i: int = 0) -> Proof:
    return Proof(keyset_id, amount, f"s{amount}-{i}", "02" + "11" * 32)


def test_input_fee() -> None:
    fees = {"a": 100, "b": 1000, "c": 0}
    assert input_fee([], fees) == 0
    assert input_fee([proof(1, "a")], fees) == 1  # ceil(100/1000)
    assert input_fee([proof(1, "a", i) for i in range(10)], fees) == 1
    assert input_fee([proof(1, "a", i) for i in range(11)], fees) == 2
    assert input_fee([proof(1, "b"), proof(2, "c")], fees) == 1
    assert input_fee([proof(1, "c")], fees) == 0
    with pytest.raises(ValueError, match="keyset"):
        input_fee([proof(1, "zz")], fees)


# --------------------------------------------------------------------------- outputs


def test_prepare_outputs_match_nut13(seed: Seed) -> None:
    outs = prepare_outputs(seed, NUT13_V2_KEYSET, 0, [1, 2])
    assert [o.counter for o in outs] == [0, 1]
    for out in outs:
        secret, r = NUT13_NUTSHELL[(NUT13_V2_KEYSET, out.counter)]
        assert (out.secret, out.r.hex()) == (secret, r)
        assert blind_message(secret.encode(), bytes.fromhex(r)) == out.B_
        assert out.message().B_ == out.B_ and out.message().amount == out.amount
    assert (
        prepare_outputs(seed, NUT13_V2_KEYSET, 7, [4])[0].secret
        == (NUT13_NUTSHELL[(NUT13_V2_KEYSET, 7)][0])
    )
    assert outs[0].secret not in repr(outs[0]) and outs[0].r.hex() not in repr(outs[0])
    with pytest.raises(ValueError):
        prepare_outputs(seed, NUT13_V2_KEYSET, 0, [0])
    assert prepare_outputs(seed, NUT13_V2_KEYSET, 0, []) == []


@pytest.fixture(scope="module")
def mint() -> FakeMint:
    return FakeMint()


def sign_all(mint: FakeMint, outs: list) -> list[BlindSignature]:  # type: ignore[type-arg]
    sigs = []
    for o in outs:
        raw = mint.sign_output(o.amount, o.B_)
        dleq = DLEQ(raw["dleq"]["e"], raw["dleq"]["s"]) if "dleq" in raw else None
        sigs.append(BlindSignature(o.amount, raw["id"], raw["C_"], dleq))
    return sigs


def test_unblind_valid(seed: Seed, mint: FakeMint) -> None:
    outs = prepare_outputs(seed, mint.keyset_id, 0, [1, 4, 8])
    proofs = unblind(outs, sign_all(mint, outs), mint.pubkeys, require_dleq=True)
    for p, o in zip(proofs, outs, strict=True):
        assert (p.amount, p.keyset_id, p.secret) == (o.amount, o.keyset_id, o.secret)
        y = hash_to_curve(o.secret.encode())
        assert y.multiply(mint.privkeys[p.amount]).format().hex() == p.C
        assert p.dleq is not None and p.dleq.r == o.r.hex()
        assert verify_proof_dleq(p, mint.pubkeys[p.amount])


def test_unblind_without_dleq(seed: Seed) -> None:
    mint = FakeMint(include_dleq=False)
    outs = prepare_outputs(seed, mint.keyset_id, 0, [2])
    sigs = sign_all(mint, outs)
    assert unblind(outs, sigs, mint.pubkeys)[0].dleq is None
    with pytest.raises(MintProtocolError, match="no DLEQ"):
        unblind(outs, sigs, mint.pubkeys, require_dleq=True)


def test_unblind_errors(seed: Seed, mint: FakeMint) -> None:
    outs = prepare_outputs(seed, mint.keyset_id, 0, [1, 2])
    sigs = sign_all(mint, outs)
    with pytest.raises(MintProtocolError, match="signatures"):
        unblind(outs, sigs[:1], mint.pubkeys)
    with pytest.raises(MintProtocolError, match="does not match"):
        unblind(outs, [replace(sigs[0], amount=2), sigs[1]], mint.pubkeys)
    with pytest.raises(MintProtocolError, match="does not match"):
        unblind(outs, [replace(sigs[0], keyset_id="00" * 8), sigs[1]], mint.pubkeys)
    with pytest.raises(MintProtocolError, match="no mint key"):
        unblind(outs, sigs, {1: mint.pubkeys[1]})
    # DLEQ that does not match (mint used another key than advertised)
    with pytest.raises(MintProtocolError, match="DLEQ"):
        unblind(outs, sigs, {1: mint.pubkeys[2], 2: mint.pubkeys[2]})
    swapped = DLEQ(sigs[0].dleq.s, sigs[0].dleq.e)  # type: ignore[union-attr]
    with pytest.raises(MintProtocolError, match="DLEQ"):
        unblind(outs, [replace(sigs[0], dleq=swapped), sigs[1]], mint.pubkeys)
    # C_ that cannot be unblinded (point at infinity)
    r_k = mint.pubkeys[1]
    bad = replace(sigs[0], C_=r_k, dleq=None)
    keys = dict(mint.pubkeys)
    out0 = replace(outs[0], r=(1).to_bytes(32, "big"))
    with pytest.raises(MintProtocolError, match="unblinded"):
        unblind([out0], [bad], keys)


# --------------------------------------------------------------------------- selection


def proofs_of(amounts: list[int]) -> list[Proof]:
    return [proof(a, i=i) for i, a in enumerate(amounts)]


def total(ps: list[Proof] | None) -> int:
    assert ps is not None
    return sum(p.amount for p in ps)


def test_select_exact_and_overshoot() -> None:
    wallet = proofs_of([1, 2, 4, 8, 16])
    assert total(select_proofs(wallet, 13)) == 13
    assert select_proofs(wallet, 0) == []
    assert select_proofs(wallet, 32) is None
    assert total(select_proofs(wallet, 31)) == 31
    assert total(select_proofs(proofs_of([8, 8]), 5)) == 8
    assert len(select_proofs(proofs_of([8, 8]), 5) or []) == 1
    # exact subset not found greedily: 3+3 = 6 from [4, 3, 3]
    assert sorted(p.amount for p in select_proofs(proofs_of([4, 3, 3]), 6) or []) == [3, 3]
    # single bigger proof beats many small ones
    assert [p.amount for p in select_proofs(proofs_of([5, 5, 7]), 6) or []] == [7]


def test_select_identical_proofs_are_distinct() -> None:
    same = [proof(2, i=0), proof(2, i=0), proof(2, i=0)]
    got = select_proofs(same, 3)
    assert got is not None and len(got) == 2


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([1, 2, 4, 8, 16, 32, 64, 3, 5, 100]), max_size=25),
    st.integers(min_value=1, max_value=400),
)
def test_select_property(amounts: list[int], amount: int) -> None:
    wallet = proofs_of(amounts)
    got = select_proofs(wallet, amount)
    if sum(amounts) < amount:
        assert got is None
        return
    assert got is not None and total(got) >= amount
    ids = [id(p) for p in got]
    assert len(set(ids)) == len(ids) and all(any(p is w for w in wallet) for p in got)
    pow2 = [a for a in amounts if a & (a - 1) == 0]
    if sum(pow2) >= amount and all(a & (a - 1) == 0 for a in amounts):
        # with power-of-two coins an exact subset exists iff the greedy finds one
        remaining = amount
        for a in sorted(pow2, reverse=True):
            if a <= remaining:
                remaining -= a
        if remaining == 0:
            assert total(got) == amount
