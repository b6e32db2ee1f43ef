"""NUT-13 deterministic secrets: spec vectors (v1/BIP32) and nutshell values (v2/HMAC)."""

from __future__ import annotations

import pytest
from mnemonic import Mnemonic

from paygress.cashu.nut13 import Seed
from tests.unit.cashu.vectors import (
    NUT13_MNEMONIC,
    NUT13_NUTSHELL,
    NUT13_SPEC_V1,
    NUT13_V1_KEYSET,
    NUT13_V2_KEYSET,
)


@pytest.fixture(scope="module")
def seed() -> Seed:
    return Seed.from_mnemonic(NUT13_MNEMONIC)


@pytest.mark.parametrize("counter", range(5))
def test_spec_v1_vectors(seed: Seed, counter: int) -> None:
    secret, r = seed.derive(NUT13_V1_KEYSET, counter)
    assert (secret, r.hex()) == NUT13_SPEC_V1[counter]


@pytest.mark.parametrize(("keyset_id", "counter"), sorted(NUT13_NUTSHELL))
def test_nutshell_vectors(seed: Seed, keyset_id: str, counter: int) -> None:
    secret, r = seed.derive(keyset_id, counter)
    assert (secret, r.hex()) == NUT13_NUTSHELL[(keyset_id, counter)]


def test_derive_is_cached_and_stable(seed: Seed) -> None:
    assert seed.derive(NUT13_V1_KEYSET, 3) == seed.derive(NUT13_V1_KEYSET, 3)
    assert seed.derive(NUT13_V2_KEYSET, 3) != seed.derive(NUT13_V2_KEYSET, 4)
    secret, r = seed.derive(NUT13_V2_KEYSET, 2**40)
    assert len(secret) == 64 and len(r) == 32


def test_mnemonic_normalisation() -> None:
    messy = "  " + NUT13_MNEMONIC.upper().replace(" ", "   \n") + "\t"
    assert Seed.from_mnemonic(messy).derive(NUT13_V1_KEYSET, 0) == tuple(
        [NUT13_SPEC_V1[0][0], bytes.fromhex(NUT13_SPEC_V1[0][1])]
    )


def test_passphrase_changes_seed() -> None:
    plain = Seed.from_mnemonic(NUT13_MNEMONIC)
    salted = Seed.from_mnemonic(NUT13_MNEMONIC, passphrase="x")
    assert plain.derive(NUT13_V2_KEYSET, 0) != salted.derive(NUT13_V2_KEYSET, 0)


@pytest.mark.parametrize(
    "words",
    [
        "",
        "hello world",
        NUT13_MNEMONIC.replace("humble", "zebra"),  # bad checksum
        NUT13_MNEMONIC.replace("humble", "notaword"),
        NUT13_MNEMONIC + " extra",
    ],
)
def test_invalid_mnemonic(words: str) -> None:
    with pytest.raises(ValueError, match="invalid BIP39 mnemonic"):
        Seed.from_mnemonic(words)


def test_generate_mnemonic() -> None:
    words = Seed.generate_mnemonic()
    assert len(words.split()) == 12
    assert Mnemonic("english").check(words)
    assert words != Seed.generate_mnemonic()
    Seed.from_mnemonic(words)


@pytest.mark.parametrize(
    ("keyset_id", "counter"),
    [
        ("009A1F293253E41E", 0),  # uppercase: callers must normalise
        ("009a1f29", 0),
        ("01adc013fa9d8517", 0),  # short v2 id: must be expanded first
        ("02" + "00" * 32, 0),
        ("I2yN+iRYfkzT", 0),  # pre-0.15 base64 id
        (NUT13_V1_KEYSET, -1),
        (NUT13_V1_KEYSET, 2**31),
        (NUT13_V2_KEYSET, 2**64),
        (NUT13_V2_KEYSET, True),
    ],
)
def test_derive_rejects(seed: Seed, keyset_id: str, counter: int) -> None:
    with pytest.raises(ValueError):
        seed.derive(keyset_id, counter)


def test_repr_hides_seed(seed: Seed) -> None:
    assert "hidden" in repr(seed)
    with pytest.raises(ValueError):
        Seed(b"short")


def test_purpose_keys_are_stable_per_seed_and_distinct_per_purpose() -> None:
    seed = Seed(bytes(range(64)))
    again = Seed(bytes(range(64)))
    assert seed.purpose_key("pod-owner") == again.purpose_key("pod-owner")
    assert len(seed.purpose_key("pod-owner")) == 32
    assert seed.purpose_key("pod-owner") != seed.purpose_key("session")
    assert Seed(bytes(64)).purpose_key("pod-owner") != seed.purpose_key("pod-owner")
