"""Redis (``/usr/bin/redis-server``, Debian's package) on a free loopback port and a Unix socket.

    redis = await RedisServer(workdir).start()   # AOF on, fsync always, noeviction
    redis.url                                    # redis://127.0.0.1:<port>/0
    redis.socket_url                             # unix://<workdir>/redis.sock
    await redis.stop(); await redis.start()      # same port and data dir: data survive

Configured as Paygress requires (``appendonly yes``, ``appendfsync always``,
``maxmemory-policy noeviction``); ``settings`` adds or overrides directives (e.g.
``{"appendonly": "no"}`` to show that Paygress refuses such a Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Mapping
from pathlib import Path

from .procs import LOOPBACK, ManagedProcess, free_port, wait_for_port

REDIS_BIN = Path(shutil.which("redis-server") or "/usr/bin/redis-server")

REQUIRED = {"appendonly": "yes", "appendfsync": "always", "maxmemory-policy": "noeviction"}


class RedisServer(ManagedProcess):
    name = "redis"
    startup_timeout = 15.0

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        password: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(workdir, name=name)
        self.port = port if port is not None else free_port()
        self.settings = {**REQUIRED, **(settings or {})}
        self.password = password
        self.socket = self.workdir / "redis.sock"

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def socket_url(self) -> str:
        return f"unix://{self.socket}"

    def command(self) -> list[str]:
        argv = [
            str(REDIS_BIN),
            "--port",
            str(self.port),
            "--bind",
            LOOPBACK,
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        for name, value in self.settings.items():
            argv += [f"--{name}", value]
        if self.password:
            argv += ["--requirepass", self.password]
        return argv

    async def wait_ready(self) -> None:
        await wait_for_port(LOOPBACK, self.port, timeout=self.startup_timeout, proc=self)
        # Listening is not loading: wait until it answers PING (after replaying the AOF).
        for _ in range(200):
            if await self.ping():
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("redis never answered PING")

    async def ping(self) -> bool:
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(LOOPBACK, self.port), 1.0
            )
            auth = f"AUTH {self.password}\r\n".encode() if self.password else b""
            writer.write(auth + b"PING\r\n")
            await writer.drain()
            if self.password:
                await asyncio.wait_for(reader.readline(), 1.0)
            line = await asyncio.wait_for(reader.readline(), 1.0)
            writer.close()
            return line.startswith(b"+PONG")
        return False
