"""The lock (constraints.txt) and pyproject.toml's requirements, read with ``packaging``."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy.paths import REPO

LOCK = REPO / "constraints.txt"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Pin:
    name: str
    version: Version
    marker: Marker | None

    def applies(self) -> bool:
        return self.marker is None or self.marker.evaluate()


def lock() -> dict[str, Pin]:
    pins: dict[str, Pin] = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith((" ", "#")):
            continue
        requirement = Requirement(line)
        (spec,) = requirement.specifier
        assert spec.operator == "==", line
        name = canonicalize_name(requirement.name)
        pins[name] = Pin(name, Version(spec.version), requirement.marker)
    return pins


def requirements(group: str) -> list[Requirement]:
    if group == "runtime":
        found = PYPROJECT["project"]["dependencies"]
    elif group == "build":
        found = PYPROJECT["build-system"]["requires"]
    else:
        found = PYPROJECT["project"]["optional-dependencies"][group]
    return [Requirement(r) for r in found]
