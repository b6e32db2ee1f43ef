"""The README's links, environment list and check-config example agree with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from paygress.cli import main
from paygress.config import ENV_OVERRIDES

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def slugs(markdown: str) -> set[str]:
    """GitHub's anchors for the headings: lowercase, punctuation dropped, spaces to hyphens,
    a repeated one numbered."""
    seen: dict[str, int] = {}
    found = set()
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)  # comments in code are no headings
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def test_every_anchor_link_has_its_heading() -> None:
    anchors = set(re.findall(r"\]\(#([^)]+)\)", README))
    assert {"wiring-envoy", "run-it-by-hand", "the-paygress-command"} <= anchors
    assert anchors - slugs(README) == set()


def test_every_file_link_exists() -> None:
    targets = {t for t in re.findall(r"\]\(([^)#:]+)\)", README) if not t.startswith("http")}
    assert "deploy/local/paygress.yaml" in targets
    assert {t for t in targets if not (REPO / t).exists()} == set()


def test_the_environment_paragraph_names_every_override() -> None:
    (paragraph,) = re.findall(r"\*\*Environment\*\* overrides the file.*?\n\n", README, re.S)
    assert set(re.findall(r"`(PAYGRESS_[A-Z_]+)", paragraph)) == set(ENV_OVERRIDES)


def test_the_check_config_example_is_what_it_prints(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    command = "$ .venv/bin/paygress check-config --config deploy/local/paygress.yaml\n"
    example = README.split(command, 1)[1].split("```", 1)[0]
    for var in [*ENV_OVERRIDES, "PAYGRESS_CONFIG"]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(REPO)
    assert main(["check-config", "--config", "deploy/local/paygress.yaml"]) == 0
    captured = capsys.readouterr()
    assert captured.out == example
    assert captured.err == ""
