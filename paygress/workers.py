"""Several worker processes on one node (`workers: N`), each a whole Paygress on the shared
Redis store, under one supervisor that starts them, restarts one that dies, and passes
SIGTERM (and a second SIGTERM) on to all of them.

How the work is spread, and why:
- Envoy keeps one or two HTTP/2 connections to an ext_authz cluster and multiplexes every
  check on them, so a shared listening socket (SO_REUSEPORT balances *connections*) would send
  nearly all checks to one worker. Each worker therefore has **its own Unix socket**
  (`paygress.sock` → `paygress-0.sock`, `paygress-1.sock`, …) and Envoy's cluster lists them
  all as endpoints: Envoy balances *requests*.
- The TCP gRPC port (`listen.tcp`) and the forward-auth port (`listen.http`) are shared by
  all workers with SO_REUSEPORT: the kernel spreads the connections of NGINX, Traefik or
  Istio, which open many.
- The metrics port is per worker (`port + index`): a scrape must reach one worker, each once.
- The wallet admin socket is served by worker 0 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from paygress.config import Config

log = logging.getLogger("paygress.workers")

# A worker that dies within this long of its start is not restarted (a broken config or an
# unreachable store would only die again): the supervisor stops the others and fails.
MIN_LIFE_SECONDS = 10.0


def worker_config(config: Config, index: int) -> Config:
    """What worker `index` of `config.workers` listens on."""
    if config.workers == 1:
        return config
    listen = config.listen
    socket = Path(listen.socket)
    metrics = config.metrics
    if metrics.listen:
        host, _, port = metrics.listen.rpartition(":")
        if int(port):
            metrics = dataclasses.replace(metrics, listen=f"{host}:{int(port) + index}")
    return dataclasses.replace(
        config,
        listen=dataclasses.replace(
            listen,
            socket=str(socket.with_name(f"{socket.stem}-{index}{socket.suffix}")),
            admin_socket=listen.admin_socket if index == 0 else "",
        ),
        metrics=metrics,
    )


def worker_sockets(config: Config) -> list[Path]:
    """The Unix socket of each worker, for the proxy's cluster."""
    return [Path(worker_config(config, i).listen.socket) for i in range(config.workers)]


class Supervisor:
    """Runs `argv + ["--worker", i]` for each worker until SIGTERM; returns the exit code."""

    def __init__(self, argv: Sequence[str], workers: int) -> None:
        self.argv = list(argv)
        self.workers = workers
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal(sig: int) -> None:
            self._stopping = True
            stop.set()
            for proc in self._procs.values():
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        watchers = [asyncio.create_task(self._keep(i, stop)) for i in range(self.workers)]
        codes = await asyncio.gather(*watchers)
        return max(codes)

    async def _keep(self, index: int, stop: asyncio.Event) -> int:
        """Runs worker `index`, restarting it when it dies (not when told to stop)."""
        while True:
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *self.argv, "--worker", str(index), preexec_fn=_die_with_parent
            )
            self._procs[index] = proc
            code = await proc.wait()
            if self._stopping:
                return code if code > 0 else 0
            if time.monotonic() - started < MIN_LIFE_SECONDS:
                log.error("worker %d exited with %d right after its start; stopping", index, code)
                self._stopping = True
                stop.set()
                for other in self._procs.values():
                    with contextlib.suppress(ProcessLookupError):
                        other.send_signal(signal.SIGTERM)
                return 1
            log.error("worker %d exited with %d; starting it again", index, code)


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """A worker is killed with its supervisor (kill -9 of the supervisor leaves none)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
