"""NUT-10/11 P2PK secrets: parsing the conditions, signing for them."""

import json

import pytest
from coincurve import PrivateKey

from paygress.cashu.nut11 import P2PKLock, parse_p2pk, sign_p2pk, verify_p2pk_signature, witness

# The example secret of NUT-11.
SPEC_SECRET = (
    '["P2PK",{"nonce":"859d4935c4907062a6297cf4e663e2835d90d97ecdd510745d32f6816323a41f",'
    '"data":"0249098aa8b9d2fbec49ff8598feb17b592b986e62319a4fa488a3dc36387157a7",'
    '"tags":[["sigflag","SIG_INPUTS"]]}]'
)
KEY = "0249098aa8b9d2fbec49ff8598feb17b592b986e62319a4fa488a3dc36387157a7"
OTHER = "02" + "11" * 32


def secret(data: str = KEY, tags: list[list[str]] | None = None) -> str:
    body: dict[str, object] = {"nonce": "ab" * 16, "data": data}
    if tags is not None:
        body["tags"] = tags
    return json.dumps(["P2PK", body])


def test_the_spec_example() -> None:
    assert parse_p2pk(SPEC_SECRET) == P2PKLock((KEY,), 1, False, None, ())


@pytest.mark.parametrize("plain", ["ab" * 32, '["HTLC",{"data":"x"}]', "[not json", "[1, 2]"])
def test_plain_and_other_secrets_are_not_locks(plain: str) -> None:
    assert parse_p2pk(plain) is None


@pytest.mark.parametrize(
    "bad",
    [
        secret("nokey"),
        secret(tags=[["locktime", "soon"]]),
        secret(tags=[["pubkeys", "xyz"]]),
        secret(tags="notalist"),  # type: ignore[arg-type]
        secret(tags=[[]]),
    ],
)
def test_malformed_locks_are_errors(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_p2pk(bad)


def test_who_may_spend_and_when() -> None:
    now = 1_000_000.0
    mine = parse_p2pk(secret(tags=[["locktime", str(int(now) + 86400)], ["refund", OTHER]]))
    assert mine is not None and mine.refund == (OTHER,)
    assert mine.spendable_only_by(KEY, now=now, margin=600)
    assert not mine.spendable_only_by(KEY, now=now, margin=90_000), "the refund key comes first"
    assert not mine.spendable_only_by(OTHER, now=now, margin=0)
    shared = parse_p2pk(secret(tags=[["pubkeys", OTHER]]))
    assert shared is not None and not shared.spendable_only_by(KEY, now=now, margin=0)
    multisig = parse_p2pk(secret(tags=[["n_sigs", "2"], ["pubkeys", OTHER]]))
    assert multisig is not None and multisig.n_sigs == 2
    sig_all = parse_p2pk(secret(tags=[["sigflag", "SIG_ALL"]]))
    assert sig_all is not None and sig_all.sig_all
    assert not sig_all.spendable_only_by(KEY, now=now, margin=0)


def test_a_signature_verifies_for_its_key_and_secret_only() -> None:
    key = PrivateKey()
    pub = key.public_key.format().hex()
    s = secret(pub)
    signature = sign_p2pk(s, key)
    assert verify_p2pk_signature(s, pub, signature)
    assert not verify_p2pk_signature(s + " ", pub, signature)
    assert not verify_p2pk_signature(s, OTHER, signature)
    assert not verify_p2pk_signature(s, pub, "zz")
    assert json.loads(witness(signature)) == {"signatures": [signature]}
