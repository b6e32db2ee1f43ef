"""One Redis (7 or later) shared by every process of one seed: connection, keys, scripts, health.

Every key of a store starts with `{prefix}:` — the braces are a Redis Cluster hash tag, so all
of one gateway's keys live in one hash slot and every Lua script (each runs atomically) may
touch any of them; the keys a script touches are passed to it. `meta` names the seed the
keys belong to: a process with another seed refuses to start, like SQLite's database.

Failures to reach Redis (refused, reset, timed out, loading) become StoreUnavailable (503 +
Retry-After); two in a row (a call's or the probe's: one slow answer on a busy machine is not
an outage) mark the store unavailable until a call or the probe succeeds again. Calls
are never retried by the client library: a call whose answer was lost may have been done, and
every script is written so that doing it again is harmless or refused, never doubled.

Durability is Redis's own: Paygress needs `appendonly yes` with `appendfsync always` (an
answered write is on disk) and `maxmemory-policy noeviction` (keys are never dropped), and
checks them at start where the server lets it read its config (`check_persistence`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from paygress.core.ledger import LedgerError
from paygress.core.ports import StoreUnavailable

log = logging.getLogger("paygress.store")

T = TypeVar("T")
SCHEMA_VERSION = "1"
# What Redis must be configured with, and why.
REQUIRED = {
    "appendonly": ("yes", "an answered write must survive a restart of Redis"),
    "appendfsync": ("always", "an answered write must be on disk (everysec may lose 1 s)"),
    "maxmemory-policy": ("noeviction", "Redis must never drop a key to make room"),
}

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class Connection:
    """How to reach one gateway's keys: `{prefix}:…` on the Redis at `url`."""

    url: str
    prefix: str = "paygress"
    password: str | None = None
    timeout: float = 1.0  # one call, all in
    tls_ca_file: str | None = None  # rediss:// only
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    probe_seconds: float = 1.0  # a PING this often keeps `available` current


class RedisDatabase:
    """The client, the key names of one gateway, and whether Redis is reachable now."""

    def __init__(self, connection: Connection) -> None:
        options: dict[str, Any] = {
            "password": connection.password,
            "socket_timeout": connection.timeout,
            "socket_connect_timeout": connection.timeout,
            "retry": Retry(NoBackoff(), 0),
            "decode_responses": True,
        }
        if connection.url.startswith("rediss://"):
            options.update(
                ssl_ca_certs=connection.tls_ca_file,
                ssl_certfile=connection.tls_cert_file,
                ssl_keyfile=connection.tls_key_file,
            )
        self.client: aioredis.Redis = aioredis.Redis.from_url(connection.url, **options)
        self.tag = "{" + connection.prefix + "}"
        self.probe_seconds = connection.probe_seconds
        self.available = True
        self._failures = 0  # calls that failed in a row
        self._probe: asyncio.Task[None] | None = None

    def key(self, *parts: str) -> str:
        """A key of this gateway: `{prefix}:part:part`."""
        return ":".join((self.tag, *parts))

    def script(self, source: str) -> AsyncScript:
        return self.client.register_script(source)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """`fn()` against Redis; StoreUnavailable when Redis cannot be reached."""
        try:
            result = await fn()
        except _UNREACHABLE as exc:
            self._failed(exc)
            raise StoreUnavailable() from exc
        except ResponseError as exc:
            if "LOADING" in str(exc) or "MASTERDOWN" in str(exc) or "READONLY" in str(exc):
                self._failed(exc)
                raise StoreUnavailable() from exc
            raise
        if not self.available:
            log.info("redis reachable again")
        self.available, self._failures = True, 0
        return result

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        if self._failures >= 2 and self.available:
            log.warning("redis unreachable: %s", exc)
            self.available = False

    async def command(self, *args: str | int | float) -> Any:
        """One Redis command (e.g. "HGET", key, field); its answer as redis-py decodes it."""
        return await self.call(lambda: self.client.execute_command(*args))  # type: ignore[no-untyped-call]

    async def atomic(self, *commands: tuple[str | int | float, ...]) -> list[Any]:
        """Several commands in one MULTI/EXEC (a consistent read); their answers, in order."""

        async def run() -> list[Any]:
            async with self.client.pipeline(transaction=True) as tx:
                for command in commands:
                    tx.execute_command(*command)
                found: list[Any] = await tx.execute()
            return found

        return await self.call(run)

    async def open(self, seed_id: str, *, check_persistence: bool = True) -> None:
        """Checks that the keys belong to `seed_id` (claiming them when new) and, with
        `check_persistence`, that Redis keeps what it answered; starts the probe."""
        meta = self.key("meta")
        await self.command("HSETNX", meta, "seed_id", seed_id)
        await self.command("HSETNX", meta, "schema_version", SCHEMA_VERSION)
        found = await self.command("HMGET", meta, "seed_id", "schema_version")
        if found[0] != seed_id:
            raise LedgerError(
                f"the Redis keys {self.tag} belong to another wallet seed; refusing to mix "
                "ecash. Use the mnemonic they were made with, or another store.prefix."
            )
        if int(found[1]) > int(SCHEMA_VERSION):
            raise LedgerError(f"the Redis keys {self.tag}: schema {found[1]} is newer")
        await self.check_config(strict=check_persistence)
        self._probe = asyncio.create_task(self._probe_forever(), name="paygress:redis-probe")

    async def check_config(self, *, strict: bool) -> list[str]:
        """What Redis's config lacks of REQUIRED (empty when all is well). Raises LedgerError
        if `strict` and something is set otherwise; a server that hides its config (CONFIG
        disabled, as managed services do) is trusted, with a warning."""
        try:
            found: dict[str, str] = {}
            for name in REQUIRED:
                answer = await self.command("CONFIG", "GET", name)
                if isinstance(answer, list):  # redis-py < 5.2 leaves it as [name, value]
                    answer = dict(zip(answer[::2], answer[1::2], strict=True))
                found.update(answer)
        except ResponseError as exc:
            log.warning(
                "cannot read Redis's config (%s): make sure it runs with %s",
                exc,
                ", ".join(f"{k} {v}" for k, (v, _) in REQUIRED.items()),
            )
            return []
        wrong = [
            f"{name} is {found.get(name)!r}, needs {value!r}: {why}"
            for name, (value, why) in REQUIRED.items()
            if found.get(name) != value
        ]
        if wrong and strict:
            raise LedgerError(
                "Redis does not keep what it answered: "
                + "; ".join(wrong)
                + " (or set store.check_persistence: false if you accept that)"
            )
        for problem in wrong:
            log.warning("redis: %s", problem)
        return wrong

    async def _probe_forever(self) -> None:
        """Keeps `available` current when no request asks (a PING per `probe_seconds`)."""
        while True:
            await asyncio.sleep(self.probe_seconds)
            with contextlib.suppress(StoreUnavailable):
                await self.command("PING")

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self.client.aclose()
