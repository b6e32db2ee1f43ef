"""The stores under test: SQLite in-process, Redis against a real redis-server (started once)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from paygress.store.redis import RedisStore
from paygress.store.redis_db import Connection
from paygress.store.sqlite import SqliteStore
from tests.peers.redis import RedisServer

Store = SqliteStore | RedisStore


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def redis_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RedisServer]:
    async with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


def redis_store(
    server: RedisServer,
    prefix: str | None = None,
    *,
    probe_seconds: float = 1.0,
    **options: Any,
) -> RedisStore:
    """A store on its own keys (a fresh prefix), so tests share one server safely. The timeout
    is long: a shared CI machine may take a while to fsync."""
    connection = Connection(
        server.url,
        prefix=prefix or f"t-{secrets.token_hex(6)}",
        timeout=5.0,
        probe_seconds=probe_seconds,
    )
    return RedisStore(connection, **options)


@pytest_asyncio.fixture(params=["sqlite", "redis"], loop_scope="session")
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer
) -> AsyncIterator[Store]:
    s: Store = (
        SqliteStore(tmp_path / "state" / "p.db")
        if request.param == "sqlite"
        else redis_store(redis_server)
    )
    await s.open("seed-a")
    yield s
    await s.close()
