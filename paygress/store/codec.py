"""How grants and proofs are written down: plain JSON, shared by every store backend."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from paygress.cashu.models import DLEQ, Proof
from paygress.core.model import Grant
from paygress.core.pricing import Mode


def grant_to_json(grant: Grant) -> str:
    data = asdict(grant)
    data["mode"] = grant.mode.value
    return json.dumps(data)


def grant_from_json(text: str) -> Grant:
    data = json.loads(text)
    data["mode"] = Mode(data["mode"])
    return Grant(**data)


def dleq_to_json(dleq: DLEQ | None) -> str | None:
    return json.dumps({"e": dleq.e, "s": dleq.s, "r": dleq.r}) if dleq else None


def dleq_from_json(text: str | None) -> DLEQ | None:
    if not text:
        return None
    d = json.loads(text)
    return DLEQ(e=d["e"], s=d["s"], r=d.get("r"))


def proof_to_dict(p: Proof) -> dict[str, Any]:
    """A proof with everything needed to spend it again (secret, C, DLEQ, witness)."""
    return {
        "id": p.keyset_id,
        "amount": p.amount,
        "secret": p.secret,
        "C": p.C,
        "dleq": dleq_to_json(p.dleq),
        "witness": p.witness,
    }


def proof_from_dict(d: dict[str, Any]) -> Proof:
    return Proof(
        keyset_id=d["id"],
        amount=int(d["amount"]),
        secret=d["secret"],
        C=d["C"],
        dleq=dleq_from_json(d.get("dleq")),
        witness=d.get("witness"),
    )


def proofs_to_json(proofs: tuple[Proof, ...] | list[Proof]) -> str:
    return json.dumps([proof_to_dict(p) for p in proofs])


def proofs_from_json(text: str) -> tuple[Proof, ...]:
    return tuple(proof_from_dict(d) for d in json.loads(text))
