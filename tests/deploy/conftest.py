"""Markers of the deployment tests (Dockerfile, Helm chart, Istio manifests)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: builds and installs the wheel like the Dockerfile (seconds, not ms)"
    )
