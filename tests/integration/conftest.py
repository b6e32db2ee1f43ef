"""Fixtures that start real peers on loopback (see tests/peers/).

Session-scoped (started once, on first use): ``mint``, ``second_mint`` (a different mint, for
"not allow-listed" tests), ``wallet`` (nutshell wallet), ``upstream`` (HTTP echo).
Function-scoped: ``tmp`` (a short temp dir, fit for Unix socket paths) and ``peers`` (an
``AsyncExitStack``: ``await peers.enter_async_context(EnvoyProxy(...))`` starts a peer that is
stopped when the test ends).

Every test under tests/integration is marked ``integration``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.peers.mint import NutshellMint
from tests.peers.upstream import EchoUpstream
from tests.peers.wallet import CashuWallet


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def mint(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NutshellMint]:
    """A nutshell mint (FakeWallet, input fee 100 ppk) for the whole session."""
    async with NutshellMint(tmp_path_factory.mktemp("mint"), name="mint") as peer:
        yield peer


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def second_mint(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NutshellMint]:
    """Another mint with other keys: tokens from it must not be accepted / contacted."""
    async with NutshellMint(tmp_path_factory.mktemp("second_mint"), name="second_mint") as peer:
        yield peer


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def wallet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[CashuWallet]:
    """A nutshell wallet that mints tokens at any of the mints above."""
    client = CashuWallet(tmp_path_factory.mktemp("wallet"))
    await client.start()
    try:
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def upstream() -> AsyncIterator[EchoUpstream]:
    """The paid service: echoes method, path and headers as JSON. Call ``reset()`` to zero
    its counters in a test."""
    server = EchoUpstream()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def peers() -> AsyncIterator[contextlib.AsyncExitStack]:
    """Start per-test peers with ``await peers.enter_async_context(...)``; they are stopped
    (in reverse order) when the test ends, pass or fail."""
    async with contextlib.AsyncExitStack() as stack:
        yield stack
