"""Markers and fixtures of the deployment tests (Dockerfile, Helm chart, Istio manifests)."""

from __future__ import annotations

import pytest

from tests.deploy.chart_render import Helm, find_helm


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: builds and installs the wheel like the Dockerfile (seconds, not ms)"
    )


@pytest.fixture(scope="module")
def helm() -> Helm:
    """Helm (a binary on PATH, or helm-python-sdk's engine); the test is skipped without."""
    found = find_helm()
    if found is None:
        pytest.skip("no helm binary on PATH and no helm-python-sdk installed")
    return found
