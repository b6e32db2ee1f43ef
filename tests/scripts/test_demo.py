"""`make demo` (scripts/demo.py): its colours only on a terminal, and the whole walk, for real."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import demo

REPO = Path(__file__).resolve().parents[2]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stdout", "env", "coloured"),
    [
        (io.StringIO(), {}, False),
        (Terminal(), {}, True),
        (Terminal(), {"NO_COLOR": "1"}, False),
        (Terminal(), {"TERM": "dumb"}, False),
    ],
)
def test_colours_only_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, stdout: io.StringIO, env: dict[str, str], coloured: bool
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "stdout", stdout)
    demo.step("Starting")
    assert ("\x1b[1m" in stdout.getvalue()) is coloured
    assert "==> Starting" in stdout.getvalue()


@pytest.mark.integration
def test_the_demo_walks_from_402_to_paid_200_in_plain_text() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scripts.demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "\x1b" not in out  # a pipe gets no escape codes
    assert re.search(r"==> curl http://127\.0\.0\.1:\d+/api/hello   \(priced route", out)
    assert "HTTP 402" in out
    # The fee, explained: the 402 asks for the price plus the mint's fee, the wallet ends with
    # the price of what was bought.
    assert "it asks for 3 sat: the price of 2 plus the mint's input fee of 1" in out
    assert "Minting a 7 sat token" in out
    assert "x-paygress-paid: 6" in out
    assert "x-cashu forwarded upstream: False" in out
    assert "HTTP 200 remaining=1 \n  HTTP 200 remaining=0 \n  HTTP 402 remaining=- exhausted" in out
    assert re.search(r"http://127\.0\.0\.1:\d+  6 sat spendable  0 sat pending", out)
    assert "the client paid 7 sat; the mint kept its fee of 1" in out
    assert "Done: every process stopped" in out
