"""An in-memory Cashu mint behind ``httpx.MockTransport`` (real BDHKE + NUT-12 DLEQ).

Mimics nutshell 0.21 answers: errors are HTTP 400 ``{"detail", "code"}``. Usable from other
test packages: ``MintClient(url, transport=FakeMint().transport())``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx
from coincurve import PrivateKey, PublicKey

from paygress.cashu.crypto import SECP256K1_N, hash_e, hash_to_curve, parse_point
from paygress.cashu.nut11 import parse_p2pk, verify_p2pk_signature

DLEQ_NONCE_DST = b"Cashu_DLEQ_R_v1"


def keyset_id_v2(pubkeys: dict[int, str], unit: str, input_fee_ppk: int = 0) -> str:
    """NUT-02 v2 keyset id (as nutshell ``derive_keyset_id_v2`` without final_expiry)."""
    data = ",".join(f"{a}:{pubkeys[a]}" for a in sorted(pubkeys)).encode()
    data += f"|unit:{unit}".encode()
    if input_fee_ppk > 0:
        data += f"|input_fee_ppk:{input_fee_ppk}".encode()
    return "01" + hashlib.sha256(data).hexdigest()


def mint_sign(a: bytes, B_: str) -> tuple[str, str, str]:
    """Mint-side ``C_ = a*B_`` plus a NUT-12 DLEQ with the deterministic nonce.

    Returns ``(C_, e, s)`` as hex.
    """
    b_pt = parse_point(B_)
    c_pt = b_pt.multiply(a)
    a_pub = PublicKey.from_valid_secret(a)
    base = (
        DLEQ_NONCE_DST
        + a_pub.format(compressed=False)
        + b_pt.format(compressed=False)
        + c_pt.format(compressed=False)
    )
    for ctr in range(256):
        nonce = hmac.new(a, base + bytes([ctr]), hashlib.sha256).digest()
        if 0 < int.from_bytes(nonce, "big") < SECP256K1_N:
            break
    r1 = PublicKey.from_valid_secret(nonce)
    r2 = b_pt.multiply(nonce)
    e = hash_e(r1, r2, a_pub, c_pt)
    s = (int.from_bytes(nonce, "big") + int.from_bytes(e, "big") * int.from_bytes(a, "big")) % (
        SECP256K1_N
    )
    return c_pt.format().hex(), e.hex(), s.to_bytes(32, "big").hex()


class FakeMint:
    """A single-keyset mint. Tweak ``fail_next`` to inject raw responses."""

    def __init__(
        self,
        *,
        unit: str = "sat",
        input_fee_ppk: int = 0,
        max_order: int = 16,
        include_dleq: bool = True,
        tag: str = "fake",
    ) -> None:
        self.unit = unit
        self.input_fee_ppk = input_fee_ppk
        self.include_dleq = include_dleq
        self.privkeys = {
            2**i: hashlib.sha256(f"{tag}-{i}".encode()).digest() for i in range(max_order)
        }
        self.pubkeys = {
            a: PrivateKey(k).public_key.format().hex() for a, k in self.privkeys.items()
        }
        self.keyset_id = keyset_id_v2(self.pubkeys, unit, input_fee_ppk)
        self.spent: set[str] = set()
        self.pending: set[str] = set()
        self.signed: dict[str, dict[str, Any]] = {}  # B_ -> signature JSON
        self.requests: list[tuple[str, str, Any]] = []
        self.fail_next: httpx.Response | None = None

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # -- helpers usable by tests ------------------------------------------------

    def sign_output(self, amount: int, B_: str) -> dict[str, Any]:
        c_, e, s = mint_sign(self.privkeys[amount], B_)
        sig: dict[str, Any] = {"id": self.keyset_id, "amount": amount, "C_": c_}
        if self.include_dleq:
            sig["dleq"] = {"e": e, "s": s}
        return sig

    def make_proof_json(self, amount: int, secret: str) -> dict[str, Any]:
        """A valid proof issued directly (no blinding), as a wallet would hold it."""
        y = hash_to_curve(secret.encode())
        c = y.multiply(self.privkeys[amount]).format().hex()
        return {"id": self.keyset_id, "amount": amount, "secret": secret, "C": c}

    # -- HTTP ---------------------------------------------------------------------

    @staticmethod
    def _error(detail: str, code: int) -> httpx.Response:
        return httpx.Response(400, json={"detail": detail, "code": code})

    def handle(self, request: httpx.Request) -> httpx.Response:
        body: Any = json.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, body))
        if self.fail_next is not None:
            response, self.fail_next = self.fail_next, None
            return response
        path = request.url.path
        if request.method == "GET" and path == "/v1/keysets":
            return httpx.Response(200, json={"keysets": [self._keyset_json()]})
        if request.method == "GET" and path.startswith("/v1/keys/"):
            if path.removeprefix("/v1/keys/") != self.keyset_id:
                return self._error("keyset not found", 12001)
            ks = self._keyset_json() | {"keys": {str(a): k for a, k in self.pubkeys.items()}}
            return httpx.Response(200, json={"keysets": [ks]})
        if request.method == "POST" and path == "/v1/swap":
            return self._swap(body)
        if request.method == "POST" and path == "/v1/restore":
            outs = [o for o in body["outputs"] if o["B_"] in self.signed]
            sigs = [self.signed[o["B_"]] for o in outs]
            return httpx.Response(200, json={"outputs": outs, "signatures": sigs})
        if request.method == "POST" and path == "/v1/checkstate":
            states = [
                {
                    "Y": y,
                    "state": "SPENT"
                    if y in self.spent
                    else "PENDING"
                    if y in self.pending
                    else "UNSPENT",
                    "witness": None,
                }
                for y in body["Ys"]
            ]
            return httpx.Response(200, json={"states": states})
        return httpx.Response(404, json={"detail": "Not Found"})

    def _spending_condition(self, proof: dict[str, Any]) -> httpx.Response | None:
        """NUT-11 P2PK (SIG_INPUTS, one key): a signature of the secret by the locked key."""
        lock = parse_p2pk(proof["secret"])
        if lock is None:
            return None
        try:
            signatures = json.loads(proof.get("witness") or "{}").get("signatures", [])
        except ValueError:
            signatures = []
        if not any(verify_p2pk_signature(proof["secret"], lock.pubkeys[0], s) for s in signatures):
            return self._error("no valid signature for the locked proof", 0)
        return None

    def _keyset_json(self) -> dict[str, Any]:
        return {
            "id": self.keyset_id,
            "unit": self.unit,
            "active": True,
            "input_fee_ppk": self.input_fee_ppk,
            "final_expiry": None,
        }

    def _swap(self, body: dict[str, Any]) -> httpx.Response:
        inputs, outputs = body["inputs"], body["outputs"]
        ys = []
        for p in inputs:
            if p["id"] != self.keyset_id:
                return self._error(f"keyset {p['id']} unknown", 0)
            refusal = self._spending_condition(p)
            if refusal is not None:
                return refusal
            y = hash_to_curve(p["secret"].encode())
            c = parse_point(p["C"])
            if c.format() != y.multiply(self.privkeys[p["amount"]]).format():
                return self._error("proofs could not be verified", 10001)
            ys.append(y.format().hex())
        if any(y in self.spent for y in ys):
            return self._error("proofs already spent", 11001)
        if any(y in self.pending for y in ys):
            return self._error("proofs are pending", 11002)
        if any(o["B_"] in self.signed for o in outputs):
            return self._error("outputs already signed", 11003)
        fee = (len(inputs) * self.input_fee_ppk + 999) // 1000
        total_in = sum(p["amount"] for p in inputs)
        total_out = sum(o["amount"] for o in outputs)
        if total_in - fee != total_out:
            return self._error(
                f"Inputs ({total_in}) - fees ({fee}) vs outputs ({total_out}) are not balanced.",
                11005,
            )
        self.spent.update(ys)
        sigs = []
        for o in outputs:
            sig = self.sign_output(o["amount"], o["B_"])
            self.signed[o["B_"]] = sig
            sigs.append(sig)
        return httpx.Response(200, json={"signatures": sigs})
