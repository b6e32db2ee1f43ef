"""Paygress itself: ``.venv/bin/paygress serve --config <file>`` with ``PAYGRESS_MNEMONIC`` set.

    paygress = PaygressProcess({"listen": {"socket": str(sock)}, ...}, mnemonic, workdir)
    await paygress.start()          # socket exists and grpc.health.v1 says SERVING
    paygress.config["..."] = ...    # edit, then
    await paygress.restart()        # the config file is rewritten on every start
    code = await paygress.stop()    # SIGTERM, wait (SIGKILL after stop_timeout); exit code

If the config has no ``listen.socket``, ``<workdir>/paygress.sock`` is used (and
``<workdir>/admin.sock`` for ``listen.admin_socket``); no ``state_dir``,
``<workdir>/state``. The environment is minimal (no inherited ``PAYGRESS_*``). ``command``
replaces the ``paygress`` executable (the argv gets ``serve --config <file>`` appended), e.g.
``[sys.executable, "-m", "paygress.cli"]`` or a stand-in in the harness' own tests.
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import httpx
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .procs import VENV, ManagedProcess, base_env, wait_for_unix_socket

PAYGRESS_BIN = VENV / "bin" / "paygress"

# A swap budget no test run reaches: tests are one honest client making many first payments
# (with tokens the wallet makes without DLEQ proofs). Tests of the budget set their own.
UNTHROTTLED = {
    "per_mint_per_minute": 100_000,
    "per_mint_burst": 10_000,
    "per_client_per_minute": 100_000,
    "per_client_burst": 10_000,
}


class PaygressProcess(ManagedProcess):
    name = "paygress"
    startup_timeout = 20.0
    stop_timeout = 10.0

    def __init__(
        self,
        config: Mapping[str, Any],
        mnemonic: str,
        workdir: str | Path | None = None,
        *,
        command: Sequence[str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(workdir, name=name)
        self.config: dict[str, Any] = copy.deepcopy(dict(config))
        listen = self.config.setdefault("listen", {})
        listen.setdefault("socket", str(self.workdir / "paygress.sock"))
        listen.setdefault("admin_socket", str(self.workdir / "admin.sock"))
        # The default state_dir (/var/lib/paygress) is outside the temp dir.
        self.config.setdefault("state_dir", str(self.workdir / "state"))
        self.mnemonic = mnemonic
        self.executable = list(command) if command is not None else [str(PAYGRESS_BIN)]
        self.extra_env = dict(extra_env or {})
        self.config_path = self.workdir / f"{self.name}.yaml"

    @property
    def socket_path(self) -> Path:
        return Path(self.config["listen"]["socket"])

    @property
    def admin_socket_path(self) -> Path:
        """The wallet admin's socket (`paygress wallet --socket`)."""
        return Path(self.config["listen"]["admin_socket"])

    @property
    def grpc_target(self) -> str:
        return f"unix:{self.socket_path}"

    @property
    def worker_sockets(self) -> list[Path]:
        """With `workers: N` (N > 1), each worker's own socket (`paygress-<i>.sock`)."""
        workers = int(self.config.get("workers", 1))
        if workers == 1:
            return [self.socket_path]
        path = self.socket_path
        return [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(workers)]

    def prepare(self) -> None:
        with self.config_path.open("w", encoding="utf-8") as fh:
            yaml.safe_dump(self.config, fh, sort_keys=False)

    def command(self) -> list[str]:
        return [*self.executable, "serve", "--config", str(self.config_path)]

    def environment(self) -> dict[str, str]:
        env = base_env(self.workdir, {"PAYGRESS_MNEMONIC": self.mnemonic})
        env.update(self.extra_env)
        return env

    async def health(
        self,
        service: str = "",
        timeout: float = 1.0,  # noqa: ASYNC109
        socket: Path | None = None,
    ) -> str:
        """grpc.health.v1 status name ("SERVING", "NOT_SERVING", ...) of the socket (or the
        given worker socket)."""
        target = f"unix:{socket}" if socket is not None else self.grpc_target
        async with grpc.aio.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
            status: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            return status

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        for socket in self.worker_sockets:
            await wait_for_unix_socket(socket, timeout=self.startup_timeout, proc=self)
            last = "no answer"
            while time.monotonic() < deadline:
                self.check_alive()
                try:
                    last = await self.health(socket=socket)
                except grpc.aio.AioRpcError as exc:
                    last = f"{exc.code().name}: {exc.details()}"
                if last == "SERVING":
                    break
                await asyncio.sleep(0.05)
            else:
                raise TimeoutError(f"gRPC health of {socket} never SERVING (last: {last})")


async def checks_at(http: httpx.AsyncClient, metrics_url: str) -> int:
    """Decisions a Paygress process made so far (paygress_checks_total, all labels), whichever
    port asked: read from its /metrics at `metrics_url`."""
    text = (await http.get(metrics_url)).text
    found = re.findall(r"^paygress_checks_total\{[^}]*\} ([0-9.e+]+)$", text, re.M)
    return int(sum(float(v) for v in found))
