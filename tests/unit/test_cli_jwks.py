"""`paygress jwks`: the JWK Set a proxy verifies sessions with, from the seed alone."""

from __future__ import annotations

import json

import pytest

from paygress.cashu.nut13 import Seed
from paygress.cli import main
from paygress.sessions import SessionSigner, jwks

MNEMONIC = "legal winner thank year wave sausage worth useful legal winner thank yellow"


def test_jwks_prints_one_compact_line_with_the_signing_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYGRESS_MNEMONIC", MNEMONIC)
    assert main(["jwks"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and " " not in out  # fits Envoy's inline_string as it is
    printed = json.loads(out)
    seed = Seed.from_mnemonic(MNEMONIC)
    assert printed == jwks(seed)
    assert [k["kid"] for k in printed["keys"]] == [SessionSigner.from_seed(seed).kid]


def test_jwks_lists_every_generation_asked_for_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYGRESS_MNEMONIC", MNEMONIC)
    assert main(["jwks", "--generation", "1", "--generation", "0", "--generation", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == jwks(Seed.from_mnemonic(MNEMONIC), (1, 0))
    assert main(["jwks", "--generation", "-1"]) == 2
    monkeypatch.delenv("PAYGRESS_MNEMONIC")
    assert main(["jwks"]) == 2
    assert "no wallet mnemonic" in capsys.readouterr().err
