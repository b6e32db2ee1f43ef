"""Reads Helm templates as YAML without Helm: Go-template actions are stripped.

``strip_actions`` turns a template into text that YAML can parse, so that a broken indentation
or a stray character outside the actions is caught even where no Helm is installed:

- comments (``{{/* ... */}}``, also with trim markers and across lines) go away;
- a line that holds nothing but actions (``{{- if ... }}``, ``{{- end }}``,
  ``{{- toYaml . | nindent 4 }}``, ...) is dropped: control actions render nothing there, and an
  output action alone on a line injects a whole block that only Helm can produce;
- any other action (inside a line: ``name: {{ include "x" . }}``) is replaced by a placeholder
  scalar when it outputs something, and removed when it is a control action or an assignment.

Both branches of an ``if``/``else`` are kept, so the result may hold a key twice; PyYAML accepts
that (the last one wins), and the branches themselves are still checked for syntax.
"""

from __future__ import annotations

import re

PLACEHOLDER = "TEMPLATED"

# An action: {{ ... }}, with optional trim markers, possibly spanning lines; strings inside it
# may contain "}}" only in theory, which these templates never do.
ACTION = re.compile(r"\{\{-?(?P<body>.*?)-?\}\}", re.DOTALL)
_CONTROL = re.compile(r"^(if|else|end|range|with|define|block|break|continue)\b")
_ASSIGN = re.compile(r"^\$[A-Za-z_0-9]*\s*:?=")


def is_output(body: str) -> bool:
    """True when the action writes text (an expression), not for control flow and comments."""
    body = body.strip()
    if body.startswith("/*"):
        return False
    return not (_CONTROL.match(body) or _ASSIGN.match(body))


def strip_actions(text: str) -> str:
    """Template text -> YAML text (see the module docstring)."""
    # Collapse every action onto one line first, so that line-based decisions see it whole.
    collapsed = ACTION.sub(lambda m: m.group(0).replace("\n", " "), text)
    lines: list[str] = []
    for line in collapsed.splitlines():
        if ACTION.search(line) and not ACTION.sub("", line).strip():
            continue
        lines.append(
            ACTION.sub(lambda m: PLACEHOLDER if is_output(m.group("body")) else "", line).rstrip()
        )
    return "\n".join(lines) + "\n"
