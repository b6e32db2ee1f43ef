"""The house rules, checked: the core decides and speaks no protocol and touches no storage;
the wallet keeps its money through the Ledger port only; nothing imports upwards."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "paygress"
IO_LIBRARIES = {"sqlite3", "grpc", "aiohttp", "kubernetes_asyncio", "httpx", "redis"}


def imports_of(path: Path) -> set[str]:
    """Every module a file imports (top-level and inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules(sub: str) -> list[Path]:
    return sorted((PACKAGE / sub).rglob("*.py"))


@pytest.mark.parametrize("path", modules("core"), ids=lambda p: p.name)
def test_the_core_imports_no_io_library_and_nothing_above_it(path: Path) -> None:
    names = imports_of(path)
    assert not {n for n in names if n.split(".")[0] in IO_LIBRARIES}
    allowed = ("paygress.core", "paygress.cashu")
    assert all(n.startswith(allowed) for n in names if n.startswith("paygress"))


@pytest.mark.parametrize("path", modules("wallet"), ids=lambda p: p.name)
def test_the_wallet_reaches_its_ledger_through_the_port_only(path: Path) -> None:
    names = imports_of(path)
    assert not {n for n in names if n.startswith("paygress.store") or n == "sqlite3"}
    assert not {n for n in names if n.startswith(("paygress.server", "paygress.grpc_adapter"))}


@pytest.mark.parametrize("path", modules("cashu"), ids=lambda p: p.name)
def test_the_cashu_protocol_code_stands_alone(path: Path) -> None:
    assert not {n for n in imports_of(path) if n.startswith("paygress") and ".cashu" not in n}


def test_envoys_protobuf_types_are_spoken_by_one_module() -> None:
    speaking = {
        p.name
        for p in PACKAGE.rglob("*.py")
        if "v1" not in p.parts and any(n.startswith("envoy.") for n in imports_of(p))
    }
    assert speaking == {"grpc_adapter.py"}


def test_jwts_are_spoken_by_one_module() -> None:
    """Sessions are signed and read in paygress/sessions.py only; the core sees claims."""
    speaking = {
        p.name
        for p in PACKAGE.rglob("*.py")
        if "v1" not in p.parts and any(n.startswith("cryptography") for n in imports_of(p))
    }
    assert speaking == {"sessions.py"}
