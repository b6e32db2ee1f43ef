"""Helm for the tests: the ``helm`` binary when it is on PATH, else Helm's own Go engine through
the ``helm-python-sdk`` wheel (``helm_python``, no binary needed), else nothing (tests skip).

Both render offline (``helm template``: no cluster), validate values against
values.schema.json first, and lint like ``helm lint --strict``.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RELEASE = "paygress"
NAMESPACE = "paygress"
KUBE_VERSION = "1.30.0"


@dataclass(frozen=True)
class LintResult:
    errors: list[str]  # errors and warnings (strict)
    infos: list[str]


class Helm:
    """The interface the chart tests use."""

    name = "none"

    def template(self, chart: Path, values_file: Path | None) -> str:
        raise NotImplementedError

    def lint(self, chart: Path, values_file: Path | None) -> LintResult:
        raise NotImplementedError


class HelmBinary(Helm):
    name = "helm binary"

    def __init__(self, path: str) -> None:
        self.path = path

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.path, *args], capture_output=True, text=True, timeout=60, check=False
        )

    def template(self, chart: Path, values_file: Path | None) -> str:
        args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE]
        args += ["--kube-version", KUBE_VERSION]
        if values_file:
            args += ["--values", str(values_file)]
        done = self._run(*args)
        if done.returncode:
            raise RenderError(done.stderr.strip())
        return done.stdout

    def lint(self, chart: Path, values_file: Path | None) -> LintResult:
        args = ["lint", str(chart), "--strict", "--namespace", NAMESPACE]
        args += ["--kube-version", KUBE_VERSION]
        if values_file:
            args += ["--values", str(values_file)]
        done = self._run(*args)
        lines = (done.stdout + done.stderr).splitlines()
        errors = [line for line in lines if line.startswith(("[ERROR]", "[WARNING]"))]
        if done.returncode and not errors:
            errors = lines or [f"helm lint exited {done.returncode}"]
        infos = [line for line in lines if line.startswith("[INFO]")]
        return LintResult(errors, infos)


class HelmSdk(Helm):
    name = "helm-python-sdk"

    def __init__(self, module: Any) -> None:
        self.helm = module

    def template(self, chart: Path, values_file: Path | None) -> str:
        values = _load_values(values_file)
        try:
            with self.helm.Chart.load(str(chart)) as loaded:
                loaded.validate_schema(values)
                rendered: dict[str, str] = loaded.render(
                    values, name=RELEASE, namespace=NAMESPACE, is_install=True
                )
        except self.helm.HelmError as exc:
            raise RenderError(str(exc)) from exc
        docs = [
            f"---\n# Source: {name}\n{text}"
            for name, text in sorted(rendered.items())
            if name.endswith((".yaml", ".yml")) and text.strip()
        ]
        return "\n".join(docs)

    def lint(self, chart: Path, values_file: Path | None) -> LintResult:
        report: dict[str, Any] = self.helm.lint(
            str(chart),
            _load_values(values_file),
            strict=True,
            namespace=NAMESPACE,
            kube_version=f"v{KUBE_VERSION}",
        )
        messages = report.get("messages") or []
        errors = [f"{m['path']}: {m['error']}" for m in messages if m.get("severity", 0) >= 2]
        errors += [str(e) for e in report.get("errors") or []]
        infos = [f"{m['path']}: {m['error']}" for m in messages if m.get("severity", 0) < 2]
        return LintResult(errors, infos)


class RenderError(Exception):
    """Helm refused to render (schema violation, `required`, `fail`, template error)."""


def _load_values(values_file: Path | None) -> dict[str, Any] | None:
    if values_file is None:
        return None
    loaded = yaml.safe_load(values_file.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else {}


def find_helm() -> Helm | None:
    """The helm binary, else the helm-python-sdk, else None."""
    binary = shutil.which("helm")
    if binary:
        return HelmBinary(binary)
    try:
        module = importlib.import_module("helm_python")
    except ImportError:
        return None
    return HelmSdk(module)


def documents(rendered: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a rendered chart."""
    return [doc for doc in yaml.safe_load_all(rendered) if doc]
