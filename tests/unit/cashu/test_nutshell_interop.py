"""Our encodings decoded by the reference implementation (nutshell 0.21), if installed.

Runs nutshell's own Python from ``.venv-mint`` in a subprocess; skipped when it is absent.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from paygress.cashu.crypto import blind_message, unblind_signature
from paygress.cashu.models import DLEQ, Proof, Token
from paygress.cashu.nut18 import PaymentRequest, encode_payment_request
from paygress.cashu.token import encode_token_v3, encode_token_v4
from tests.unit.cashu.fakemint import FakeMint

NUTSHELL_PY = Path(__file__).resolve().parents[3] / ".venv-mint" / "bin" / "python"

SCRIPT = r"""
import json, sys
from cashu.core.base import TokenV3, TokenV4
from cashu.core.nuts.nut18 import deserialize
from cashu.core.crypto import b_dhke
from cashu.core.crypto.secp import PrivateKey, PublicKey
args = json.loads(sys.stdin.read())
out = {}
for name in ("v4_short", "v4_full"):
    t = TokenV4.deserialize(args[name])
    out[name] = {"mint": t.mint, "unit": t.unit, "memo": t.memo, "amount": t.amount,
                 "keysets": t.keysets, "proofs": [p.to_dict(include_dleq=p.dleq is not None)
                                                  for p in t.proofs]}
t3 = TokenV3.deserialize(args["v3"])
out["v3"] = {"mint": t3.mint, "unit": t3.unit, "amount": t3.amount,
             "proofs": [p.to_dict() for p in t3.proofs]}
pr = deserialize(args["creq"])
out["creq"] = pr.model_dump(exclude_none=True)
ok = []
for p in t3.proofs:
    if p.dleq:
        ok.append(b_dhke.carol_verify_dleq(
            secret_msg=p.secret, r=PrivateKey(bytes.fromhex(p.dleq.r)),
            C=PublicKey(bytes.fromhex(p.C)), e=PrivateKey(bytes.fromhex(p.dleq.e)),
            s=PrivateKey(bytes.fromhex(p.dleq.s)),
            A=PublicKey(bytes.fromhex(args["keys"][str(p.amount)]))))
out["dleq_ok"] = ok
print(json.dumps(out))
"""


@pytest.mark.skipif(not NUTSHELL_PY.exists(), reason="nutshell venv (.venv-mint) not installed")
def test_nutshell_decodes_our_encodings() -> None:
    mint = FakeMint()
    proofs = []
    for i, amount in enumerate((1, 4)):
        secret, r = f"interop-{i}", bytes([i + 1]) * 32
        sig = mint.sign_output(amount, blind_message(secret.encode(), r))
        c = unblind_signature(sig["C_"], r, mint.pubkeys[amount])
        dleq = DLEQ(sig["dleq"]["e"], sig["dleq"]["s"], r.hex())
        proofs.append(Proof(mint.keyset_id, amount, secret, c, dleq, "w" if i else None))
    token = Token("http://mint.local:3338", "sat", tuple(proofs), "hello", 4)
    creq = PaymentRequest(5, "sat", ("http://mint.local:3338",), "d", "id1", True)
    args = {
        "v4_short": encode_token_v4(token),
        "v4_full": encode_token_v4(token, short_ids=False),
        "v3": encode_token_v3(token),
        "creq": encode_payment_request(creq),
        "keys": {str(a): k for a, k in mint.pubkeys.items()},
    }
    result = subprocess.run(
        [str(NUTSHELL_PY), "-c", SCRIPT],
        input=json.dumps(args),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = json.loads(result.stdout)
    for name, kid in (("v4_short", mint.keyset_id[:16]), ("v4_full", mint.keyset_id)):
        got = out[name]
        assert (got["mint"], got["unit"], got["memo"], got["amount"]) == (
            "http://mint.local:3338",
            "sat",
            "hello",
            5,
        )
        assert got["keysets"] == [kid]
        expected = [(p.secret, p.C, p.dleq.r if p.dleq else None) for p in proofs]
        assert [(p["secret"], p["C"], p["dleq"]["r"]) for p in got["proofs"]] == expected
        assert got["proofs"][1]["witness"] == "w"
    assert out["v3"]["amount"] == 5 and out["v3"]["proofs"][0]["id"] == mint.keyset_id
    assert out["creq"] == {
        "i": "id1",
        "a": 5,
        "u": "sat",
        "s": True,
        "m": ["http://mint.local:3338"],
        "d": "d",
    }
    assert out["dleq_ok"] == [True, True]
