"""Label selectors (k8s.io/apimachinery/pkg/labels), the equality-based kind Paygress sends:
``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, joined by commas. Set-based terms (``in``,
``notin``, ``<``, ``>``) are refused as not implemented, never silently mismatched."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import bad_request, not_implemented
from .validation import is_qualified_name, is_valid_label_value

_TERM = re.compile(r"\s*(!?)\s*([^\s!=<>,()]+)\s*(?:(==|!=|=)\s*([^\s!=<>,()]*))?\s*")


@dataclass(frozen=True)
class Requirement:
    """``key <op> value``; op one of ``=``, ``!=``, ``exists``, ``!``."""

    key: str
    op: str
    value: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!":
            return self.key not in labels
        equal = labels.get(self.key) == self.value
        return equal if self.op == "=" else not equal


def parse_label_selector(text: str) -> list[Requirement]:
    """The requirements of a selector; an empty one selects everything. 400 as a real server
    answers a malformed selector."""
    requirements: list[Requirement] = []
    if not text.strip():
        return requirements
    for term in text.split(","):
        if re.search(r"\s(in|notin)\s*\(|[<>()]", term):
            raise not_implemented(f"set-based label selectors ({term.strip()!r})")
        match = _TERM.fullmatch(term)
        if match is None:
            raise bad_request(f"unable to parse requirement: {term.strip()!r}")
        negated, key, op, value = match.groups()
        _check(key, value)
        if negated:
            if op:
                raise bad_request(f"found '{op}', expected: ',' or 'end of string'")
            requirements.append(Requirement(key, "!"))
        elif op:
            requirements.append(Requirement(key, "!=" if op == "!=" else "=", value))
        else:
            requirements.append(Requirement(key, "exists"))
    return requirements


def _check(key: str, value: str | None) -> None:
    errors = is_qualified_name(key)
    if errors:
        raise bad_request(f'unable to parse requirement: key: Invalid value: "{key}": {errors[0]}')
    errors = is_valid_label_value(value or "")
    if errors:
        raise bad_request(
            f"unable to parse requirement: values[0][{key}]: Invalid value: "
            f"{json.dumps(value)}: {errors[0]}"
        )


def labels_match(requirements: Sequence[Requirement], labels: Mapping[str, str] | None) -> bool:
    have = labels or {}
    return all(r.matches(have) for r in requirements)
