"""Assembly: config → store, wallet, gate → gRPC servers on a Unix socket (and optional TCP)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import signal
import socket
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from paygress import admin, grpc_adapter
from paygress.cashu.mint_client import MintClient
from paygress.cashu.nut13 import Seed
from paygress.config import Config
from paygress.core.gate import Gate, GateSettings
from paygress.core.pod_access import PodAccess, PodPaths
from paygress.core.pricing import Pricing
from paygress.event_loop import running_loop_name
from paygress.http_adapter import ForwardAuth, metrics_app, start_site
from paygress.metrics import PrometheusMetrics
from paygress.pods import KubePods
from paygress.store.sqlite import SqliteStore
from paygress.v1 import admin_pb2
from paygress.wallet import OperatorWallet

log = logging.getLogger("paygress.server")

AUTHZ_SERVICE = "envoy.service.auth.v3.Authorization"
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["WalletAdmin"].full_name


def seed_id(mnemonic: str) -> str:
    """A public name for a seed, to stop one database from being used with another seed."""
    return hashlib.sha256(b"paygress/seed-id/" + mnemonic.encode()).hexdigest()[:16]


@dataclass
class Running:
    """A started Paygress: what tests and the CLI need to reach and stop it."""

    gate: Gate
    wallet: OperatorWallet
    store: SqliteStore
    health: HealthServicer
    servers: list[grpc.aio.Server]
    socket_path: Path
    tcp_port: int | None
    config: Config
    metrics: PrometheusMetrics
    _flusher: asyncio.Task[None]
    http_port: int | None = None
    metrics_port: int | None = None
    _runners: list[web.AppRunner] = field(default_factory=list)
    pods: KubePods | None = None
    _stopped: bool = False

    async def stop(self, drain_seconds: float | None = None) -> None:
        """NOT_SERVING, a drain grace period, then stop and persist everything."""
        if self._stopped:
            return
        self._stopped = True
        drain = self.config.drain_seconds if drain_seconds is None else drain_seconds
        await self.health.enter_graceful_shutdown()
        if drain > 0:
            log.info("draining for %.1fs", drain)
            await asyncio.sleep(drain)
        await asyncio.gather(*(s.stop(grace=min(drain, 5.0) or None) for s in self.servers))
        for runner in self._runners:
            await runner.cleanup()
        self._flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._flusher
        await self.gate.drain()
        await self.gate.flush()
        await self.wallet.aclose()
        if self.pods is not None:
            await self.pods.aclose()
        await self.store.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        log.info("stopped")


async def start(config: Config, mnemonic: str) -> Running:
    """Opens the state, binds the sockets and starts serving. Raises on any setup error,
    after releasing whatever it had opened."""
    seed = Seed.from_mnemonic(mnemonic)
    async with contextlib.AsyncExitStack() as undo:
        store = SqliteStore(config.database_path)
        undo.push_async_callback(store.close)
        await store.open(seed_id(mnemonic))
        metrics = PrometheusMetrics()
        metrics.dry_run.set(1 if config.dry_run else 0)

        def mint_client(url: str) -> MintClient:
            return MintClient(
                url, timeout=config.mint_timeout_seconds, transport=metrics.mint_transport(url)
            )

        wallet = OperatorWallet(store, seed, config.mints, config.unit, client_factory=mint_client)
        undo.push_async_callback(wallet.aclose)
        pods: KubePods | None = None
        pod_access: PodAccess | None = None
        if any(r.tier is not None for r in config.routes):
            pods = await KubePods.connect(config.kubernetes, on_event=metrics.pod_event)
            undo.push_async_callback(pods.aclose)
            await pods.start()
            metrics.gauge("paygress_pods_active", "Paid pods known to this instance.", pods.count)
            pod_access = PodAccess(
                pods,
                PodPaths(config.kubernetes.offers_path, config.kubernetes.status_path),
                config.unit,
                config.mints,
                config.tiers,
                time.time,
            )
        gate = Gate(
            Pricing(config.routes),
            GateSettings(
                unit=config.unit,
                mints=config.mints,
                max_token_bytes=config.limits.max_token_bytes,
                max_proofs=config.limits.max_proofs,
                retry_after_seconds=config.retry_after_seconds,
                dry_run=config.dry_run,
            ),
            wallet,
            store,
            metrics=metrics,
            pods=pod_access,
        )
        await gate.start()
        metrics.gauge(
            "paygress_grants_live", "Grants with something left, in memory.", gate.book.__len__
        )
        health = HealthServicer()
        socket_path = Path(config.listen.socket)
        _prepare_socket_path(socket_path)

        unix_server = grpc.aio.server()
        grpc_adapter.add_to_server(gate, unix_server)
        admin.add_to_server(wallet, unix_server)
        health_pb2_grpc.add_HealthServicer_to_server(health, unix_server)
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflection.enable_server_reflection(
            [AUTHZ_SERVICE, ADMIN_SERVICE, health_name, reflection.SERVICE_NAME], unix_server
        )
        old_umask = os.umask(0o777 & ~config.listen.socket_mode)
        try:
            unix_server.add_insecure_port(f"unix:{socket_path}")
            await unix_server.start()
        finally:
            os.umask(old_umask)
        undo.push_async_callback(unix_server.stop, None)
        undo.callback(socket_path.unlink, missing_ok=True)
        os.chmod(socket_path, config.listen.socket_mode)
        servers = [unix_server]

        tcp_port: int | None = None
        if config.listen.tcp:
            tcp_server = grpc.aio.server()
            grpc_adapter.add_to_server(gate, tcp_server)
            health_pb2_grpc.add_HealthServicer_to_server(health, tcp_server)
            reflection.enable_server_reflection(
                [AUTHZ_SERVICE, health_name, reflection.SERVICE_NAME], tcp_server
            )
            tcp_port = tcp_server.add_insecure_port(config.listen.tcp)
            if not tcp_port:
                raise OSError(f"cannot listen on {config.listen.tcp}")
            await tcp_server.start()
            undo.push_async_callback(tcp_server.stop, None)
            servers.append(tcp_server)

        runners: list[web.AppRunner] = []
        http_port = metrics_port = None
        if config.listen.http:
            runner, http_port = await start_site(ForwardAuth(gate).app(), config.listen.http)
            undo.push_async_callback(runner.cleanup)
            runners.append(runner)
        if config.metrics_listen:
            runner, metrics_port = await start_site(metrics_app(metrics), config.metrics_listen)
            undo.push_async_callback(runner.cleanup)
            runners.append(runner)
        undo.pop_all()  # started: from here on, Running.stop() owns the cleanup

    # Everything made so far (modules, config, the loaded grants) lives as long as the process:
    # keep it out of the cyclic garbage collector's way, which would otherwise walk it again
    # and again as requests allocate.
    gc.collect()
    gc.freeze()
    flusher = asyncio.create_task(_flush_forever(gate, config.flush_interval_seconds))
    asyncio.create_task(_recover(wallet))  # noqa: RUF006 - best effort, logs its outcome
    for service in ("", AUTHZ_SERVICE):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "serving",
        extra={
            "socket": str(socket_path),
            "tcp_port": tcp_port,
            "http_port": http_port,
            "metrics_port": metrics_port,
            "dry_run": config.dry_run,
            "event_loop": running_loop_name(),
            "routes": len(config.routes),
            "mints": list(config.mints),
            "grants_loaded": len(gate.book),
        },
    )
    return Running(
        gate,
        wallet,
        store,
        health,
        servers,
        socket_path,
        tcp_port,
        config,
        metrics,
        flusher,
        http_port,
        metrics_port,
        runners,
        pods=pods,
    )


class StartupError(RuntimeError):
    """Paygress could not start; the message says why (the cause is chained)."""


async def serve(config: Config, mnemonic: str) -> None:
    """Runs until SIGTERM or SIGINT, then drains and stops."""
    try:
        running = await start(config, mnemonic)
    except Exception as exc:
        raise StartupError(f"{type(exc).__name__}: {exc}") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received; NOT_SERVING and draining")
    await running.stop()


def _prepare_socket_path(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise RuntimeError(f"{path} exists and is not a socket; refusing to replace it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale socket of an earlier run
            return
    raise RuntimeError(f"{path} is in use by a running server")


async def _flush_forever(gate: Gate, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await gate.flush()
        except Exception:
            log.exception("could not persist grant usage; will retry")


async def _recover(wallet: OperatorWallet) -> None:
    try:
        done = await wallet.recover_pending()
        if done:
            log.info("recovered %d interrupted swaps", done)
    except Exception:
        log.exception("recovery of interrupted swaps failed; will retry at next start")
