"""Fixtures for every test."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def tmp() -> Iterator[Path]:
    """A fresh temp dir with a short path (Unix socket paths must stay under 108 bytes,
    which pytest's tmp_path does not guarantee); removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
