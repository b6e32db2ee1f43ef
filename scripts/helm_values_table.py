"""The values table of the Helm chart's README, generated from values.yaml's comments.

A value is documented by a comment block right above its key that starts with ``# --`` (the
helm-docs convention); the block's further ``#`` lines continue the description. The table lists
every documented key with its default, between the README's markers:

    python -m scripts.helm_values_table          # rewrite deploy/helm/paygress/README.md
    python -m scripts.helm_values_table --check  # exit 1 when the README is out of date

tests/deploy/test_values_table.py runs the check in CI, so the table cannot drift.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent.parent / "deploy" / "helm" / "paygress"
START = "<!-- values-table:start (python -m scripts.helm_values_table) -->"
END = "<!-- values-table:end -->"
MAX_DEFAULT = 48
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):(\s|$)")


@dataclass(frozen=True)
class Row:
    key: str  # dotted path
    default: Any
    description: str


def rows(text: str) -> list[Row]:
    """Every key of a values.yaml text that has a ``# --`` description, in file order."""
    values = yaml.safe_load(text) or {}
    found: list[Row] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    pending_indent = 0
    for line in text.splitlines():
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if stripped.startswith("# --"):
            pending, pending_indent = [stripped[4:].strip()], indent
            continue
        if stripped.startswith("#"):
            if pending is not None and indent == pending_indent:
                pending.append(stripped[1:].strip())
            continue
        match = _KEY.match(stripped)
        if not match:
            pending = None  # a blank line or a list item ends a description
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [key for _, key in stack] + [match.group(1)]
        if pending is not None:
            description = " ".join(" ".join(pending).split())
            found.append(Row(".".join(path), _lookup(values, path), description))
        pending = None
        stack.append((indent, match.group(1)))
    return found


def _lookup(values: Any, path: list[str]) -> Any:
    for key in path:
        values = values[key]
    return values


def _default(value: Any) -> str:
    text = json.dumps(value, separators=(", ", ": "))
    if len(text) > MAX_DEFAULT:
        text = "{...}" if isinstance(value, dict) else "[...]"
        text += " (values.yaml)"
    return f"`{text}`"


def table(found: list[Row]) -> str:
    lines = ["| value | default | description |", "|---|---|---|"]
    for row in found:
        description = row.description.replace("|", "\\|")
        lines.append(f"| `{row.key}` | {_default(row.default)} | {description} |")
    return "\n".join(lines)


def updated(readme: str, generated: str) -> str:
    """The README with the text between the markers replaced."""
    head, start, rest = readme.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"the README lacks the markers {START} ... {END}")
    return f"{head}{START}\n{generated}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether it is current")
    args = parser.parse_args(argv)
    readme_path = CHART / "README.md"
    readme = readme_path.read_text(encoding="utf-8")
    generated = table(rows((CHART / "values.yaml").read_text(encoding="utf-8")))
    new = updated(readme, generated)
    if args.check:
        if new != readme:
            print(f"{readme_path} is out of date: python -m scripts.helm_values_table")
            return 1
        return 0
    readme_path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
