"""Where the deployment artefacts live."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
CHART = REPO / "deploy" / "helm" / "paygress"
TEMPLATES = CHART / "templates"
ISTIO = REPO / "deploy" / "istio"
EXAMPLES = sorted((CHART / "examples").glob("values-*.yaml"))
