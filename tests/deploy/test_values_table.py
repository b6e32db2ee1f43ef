"""The chart README's values table is generated from values.yaml (scripts/helm_values_table.py)
and must be current; every value must be documented (on itself or on a parent)."""

from __future__ import annotations

from typing import Any

import yaml

from scripts.helm_values_table import END, START, rows, table, updated
from tests.deploy.paths import CHART

VALUES = (CHART / "values.yaml").read_text(encoding="utf-8")


def test_the_readme_table_is_generated_from_values_yaml() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    assert updated(readme, table(rows(VALUES))) == readme, (
        "deploy/helm/paygress/README.md is out of date: python -m scripts.helm_values_table"
    )


def leaves(values: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out += leaves(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def test_every_value_is_documented_by_itself_or_a_parent() -> None:
    documented = {row.key for row in rows(VALUES)}

    def covered(path: str) -> bool:
        parts = path.split(".")
        return any(".".join(parts[:n]) in documented for n in range(1, len(parts) + 1))

    assert [leaf for leaf in leaves(yaml.safe_load(VALUES)) if not covered(leaf)] == []


def test_rows_follow_nesting_descriptions_and_defaults() -> None:
    text = (
        "# -- The mode.\n"
        "#   two lines\n"
        "mode: a\n"
        "# a plain comment: not a description\n"
        "plain: 1\n"
        "outer:\n"
        "  # -- Inner | piped.\n"
        "  inner: [1, 2]\n"
        "  list:\n"
        "    - name: x\n"
        "      # -- not a key of the values: inside a list item\n"
        "  # -- Back at outer's level.\n"
        "  other: {}\n"
    )
    found = rows(text)
    assert [(r.key, r.default, r.description) for r in found[:2]] == [
        ("mode", "a", "The mode. two lines"),
        ("outer.inner", [1, 2], "Inner | piped."),
    ]
    assert found[2].key == "outer.other"
    rendered = table(found)
    assert "| `outer.inner` | `[1, 2]` | Inner \\| piped. |" in rendered
    readme = f"intro\n{START}\nold\n{END}\nrest\n"
    assert updated(readme, "new") == f"intro\n{START}\nnew\n{END}\nrest\n"
