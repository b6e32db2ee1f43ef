"""Assembly: config → store, wallet, gate → gRPC servers on Unix sockets (and optional TCP).

One lifecycle: `start()` opens each resource and pushes its teardown onto one
`AsyncExitStack` at once, so a failed start releases exactly what was opened and a stop runs
every teardown step even when an earlier one fails. `Running.stop()` = NOT_SERVING, drain,
then close the stack (servers stop, background tasks end, redemptions under way finish within
a bound, usage is flushed, then the wallet, pods and store close).
"""

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
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from paygress import admin, grpc_adapter
from paygress.cashu.mint_client import MintClient
from paygress.cashu.nut13 import Seed
from paygress.config import Config, load_store_password
from paygress.core.budget import BudgetSettings, SwapBudget
from paygress.core.gate import Gate, GateSettings
from paygress.core.pod_access import DurablePaidEnds, PodAccess, PodPaths
from paygress.core.ports import StoreUnavailable
from paygress.core.session_access import SessionAccess, SessionSettings
from paygress.event_loop import running_loop_name
from paygress.http_adapter import ForwardAuth, Handler, metrics_app, start_site
from paygress.metrics import PrometheusMetrics
from paygress.pods import KubePods
from paygress.sessions import SessionSigner
from paygress.store.redis import RedisStore
from paygress.store.redis_db import Connection
from paygress.store.sqlite import SqliteStore
from paygress.v1 import admin_pb2
from paygress.wallet import OperatorWallet
from paygress.wallet.locks import OfflineSettings

log = logging.getLogger("paygress.server")

AUTHZ_SERVICE = "envoy.service.auth.v3.Authorization"
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["WalletAdmin"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


Store = SqliteStore | RedisStore


def open_store(config: Config) -> Store:
    """The configured store, not yet opened: SQLite in `state_dir`, or the shared Redis."""
    if config.store.backend == "sqlite":
        return SqliteStore(config.database_path)
    settings = config.store
    assert settings.url is not None
    return RedisStore(
        Connection(
            settings.url,
            prefix=settings.prefix,
            password=load_store_password(),
            timeout=settings.timeout_seconds,
            tls_ca_file=settings.tls_ca_file,
            tls_cert_file=settings.tls_cert_file,
            tls_key_file=settings.tls_key_file,
        ),
        check_persistence=settings.check_persistence,
        # A live process gives its leases back at every flush; one silent for three flushes
        # (or 5 s) is not waited for.
        lease_seconds=max(5.0, 3 * config.flush_interval_seconds),
        claim_seconds=claim_seconds(config),
    )


def claim_seconds(config: Config) -> float:
    """How long a swap record stays claimed by the process that sends or finds it out: its
    calls to the mint (state, restore, swap) each end within `mint_timeout_seconds`."""
    return max(5.0, 4 * config.mint_timeout_seconds)


def seed_id(mnemonic: str) -> str:
    """A public name for a seed, to stop one database from being used with another seed."""
    return hashlib.sha256(b"paygress/seed-id/" + mnemonic.encode()).hexdigest()[:16]


class BackgroundTasks:
    """The server's long-running tasks: named, logged when they fail, cancelled at stop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"paygress:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Running:
    """A started Paygress: what tests and the CLI need to reach and stop it.

    `async with await start(config, mnemonic) as running: ...` stops it on exit (without a
    drain); `await running.stop()` drains for `drain_seconds` first. Stopping twice is harmless.
    """

    def __init__(
        self,
        *,
        config: Config,
        gate: Gate,
        wallet: OperatorWallet,
        store: Store,
        metrics: PrometheusMetrics,
        health: HealthServicer,
        servers: list[grpc.aio.Server],
        socket_path: Path,
        admin_socket_path: Path | None,
        tcp_port: int | None,
        http_port: int | None,
        metrics_port: int | None,
        pods: KubePods | None,
        tasks: BackgroundTasks,
        resources: contextlib.AsyncExitStack,
        grace: StopGrace,
    ) -> None:
        self.config = config
        self.gate = gate
        self.wallet = wallet
        self.store = store
        self.metrics = metrics
        self.health = health
        self.servers = servers
        self.socket_path = socket_path
        self.admin_socket_path = admin_socket_path
        self.tcp_port = tcp_port
        self.http_port = http_port
        self.metrics_port = metrics_port
        self.pods = pods
        self.tasks = tasks
        self._resources = resources
        self._grace = grace
        self._hurry = asyncio.Event()
        self._stopping: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(drain_seconds=0)

    def hurry(self) -> None:
        """Cuts a drain under way short (a second SIGTERM): stop at once."""
        self._hurry.set()

    async def stop(self, drain_seconds: float | None = None) -> None:
        """NOT_SERVING, a drain grace period, then every teardown step (each runs even if an
        earlier one fails, and the first failure is raised). Concurrent and repeated calls
        share one stop."""
        if self._stopping is None:
            drain = self.config.drain_seconds if drain_seconds is None else drain_seconds
            self._stopping = asyncio.ensure_future(self._stop(drain))
            await asyncio.shield(self._stopping)  # the first caller learns of a failure
        else:
            await asyncio.wait([self._stopping])

    async def _stop(self, drain: float) -> None:
        try:
            await self.health.enter_graceful_shutdown()
            if drain > 0:
                log.info("draining for %.1fs", drain)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), timeout=drain)
                if not self._hurry.is_set():
                    self._grace.seconds = min(drain, 5.0)
        finally:
            await self._resources.aclose()
            log.info("stopped")


async def start(config: Config, mnemonic: str) -> Running:
    """Opens the state, binds the sockets and starts serving. Raises on any setup error,
    after releasing whatever it had opened."""
    seed = Seed.from_mnemonic(mnemonic)
    resources = contextlib.AsyncExitStack()
    async with contextlib.AsyncExitStack() as undo:
        undo.push_async_callback(resources.aclose)
        running = await _assemble(config, mnemonic, seed, resources)
        undo.pop_all()  # started: from here on, Running.stop() closes the resources
    # Everything made so far (modules, config, the loaded grants) lives as long as the process:
    # keep it out of the cyclic garbage collector's way, which would otherwise walk it again
    # and again as requests allocate.
    gc.collect()
    gc.freeze()
    for service in ("", AUTHZ_SERVICE):
        await running.health.set(service, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "serving",
        extra={
            "socket": str(running.socket_path),
            "admin_socket": running.admin_socket_path and str(running.admin_socket_path),
            "tcp_port": running.tcp_port,
            "http_port": running.http_port,
            "metrics_port": running.metrics_port,
            "dry_run": config.dry_run,
            "event_loop": running_loop_name(),
            "routes": len(config.routes),
            "mints": list(config.mints),
            "store": config.store.backend,
            "grants_loaded": len(running.gate.book),
        },
    )
    return running


async def _assemble(
    config: Config, mnemonic: str, seed: Seed, resources: contextlib.AsyncExitStack
) -> Running:
    """Builds everything, pushing each teardown onto `resources` as soon as its resource
    exists. The stack unwinds last-in first-out, so the build order is the reverse of the
    teardown order: servers stop first, then the background tasks, then the gate drains and
    flushes, then pods, wallet and store close."""
    store = open_store(config)
    resources.push_async_callback(store.close)
    await store.open(seed_id(mnemonic))
    metrics = PrometheusMetrics()
    metrics.dry_run.set(1 if config.dry_run else 0)
    wallet = _wallet(config, seed, store, metrics, resources)
    sessions = _sessions(config, seed)
    pods, pod_access = await _pods(config, metrics, resources, store, seed, sessions)
    gate = await _gate(config, wallet, store, pod_access, metrics, resources, sessions)
    tasks = BackgroundTasks()
    resources.push_async_callback(tasks.cancel_all)
    listening = await _listen(config, gate, wallet, metrics, resources)
    tasks.spawn("flush", _flush_forever(gate, config.flush_interval_seconds))
    tasks.spawn("mint-keysets", wallet.warm_up())
    tasks.spawn("open-swaps", _settle_open_swaps(wallet, config.payments.swap_retry_seconds))
    tasks.spawn("locked-queue", _settle_locked_forever(wallet, config.offline.interval_seconds))
    return Running(
        config=config,
        gate=gate,
        wallet=wallet,
        store=store,
        metrics=metrics,
        pods=pods,
        tasks=tasks,
        resources=resources,
        health=listening.health,
        servers=listening.servers,
        socket_path=listening.socket_path,
        admin_socket_path=listening.admin_socket_path,
        tcp_port=listening.tcp_port,
        http_port=listening.http_port,
        metrics_port=listening.metrics_port,
        grace=listening.grace,
    )


def _wallet(
    config: Config,
    seed: Seed,
    store: Store,
    metrics: PrometheusMetrics,
    resources: contextlib.AsyncExitStack,
) -> OperatorWallet:
    """The operator wallet on the store's ledger, its mint clients metered."""

    def mint_client(url: str) -> MintClient:
        return MintClient(
            url, timeout=config.mint_timeout_seconds, transport=metrics.mint_transport(url)
        )

    offline = config.offline
    wallet = OperatorWallet(
        store.ledger,
        seed,
        config.mints,
        config.unit,
        client_factory=mint_client,
        require_dleq=config.payments.require_dleq,
        keyset_refresh_seconds=config.payments.keyset_refresh_seconds,
        claim_seconds=claim_seconds(config),
        offline=OfflineSettings(
            accept_locked=offline.accept_locked,
            locktime_margin_seconds=offline.locktime_margin_seconds,
            max_queue=offline.max_queue,
            batch_proofs=offline.batch_proofs,
        ),
        events=metrics.locked_event,
    )
    resources.push_async_callback(wallet.aclose)
    metrics.gauge(
        "paygress_swaps_open", "Swaps whose outcome is not known yet.", wallet.open_swaps.size
    )
    metrics.gauge(
        "paygress_swaps_open_oldest_seconds",
        "Age of the oldest swap whose outcome is not known yet (0 when none).",
        wallet.open_swaps.age,
    )
    metrics.gauge(
        "paygress_locked_queue_proofs",
        "Proofs accepted offline (locked to the operator), waiting for their swap.",
        wallet.locked.size,
    )
    metrics.gauge(
        "paygress_locked_queue_oldest_seconds",
        "Age of the oldest proof accepted offline and not swapped yet (0 when none).",
        wallet.locked.age,
    )
    return wallet


async def _gate(
    config: Config,
    wallet: OperatorWallet,
    store: Store,
    pod_access: PodAccess | None,
    metrics: PrometheusMetrics,
    resources: contextlib.AsyncExitStack,
    sessions: SessionAccess | None = None,
) -> Gate:
    """The decision, with the grants of the store loaded; at stop, redemptions under way get
    `shutdown_timeout_seconds` and counted usage is flushed."""
    payments = config.payments
    budget = payments.unproven_swaps
    gate = Gate(
        config.pricing(),
        GateSettings(
            unit=config.unit,
            mints=config.mints,
            max_token_bytes=config.limits.max_token_bytes,
            max_proofs=config.limits.max_proofs,
            retry_after_seconds=config.retry_after_seconds,
            dry_run=config.dry_run,
            payment_timeout_seconds=payments.timeout_seconds,
            refusals_max=payments.refusals_max,
            refusals_seconds=payments.refusals_seconds,
            lease_max_requests=config.store.lease_requests,
            on_store_outage=config.store.on_outage,
            refresh_seconds=config.flush_interval_seconds,
        ),
        wallet,
        store.grants,
        metrics=metrics,
        pods=pod_access,
        budget=SwapBudget(
            BudgetSettings(
                per_mint_per_minute=budget.per_mint_per_minute,
                per_mint_burst=budget.per_mint_burst,
                per_client_per_minute=budget.per_client_per_minute,
                per_client_burst=budget.per_client_burst,
            ),
            time.monotonic,
        ),
        sessions=sessions,
    )
    await gate.start()
    resources.push_async_callback(gate.flush)
    resources.push_async_callback(gate.drain, config.shutdown_timeout_seconds)
    metrics.gauge(
        "paygress_grants_live", "Grants with something left, in memory.", gate.book.__len__
    )
    metrics.gauge(
        "paygress_store_available",
        "1 while the grant store and ledger can be reached (as calls and probes find).",
        lambda: float(store.grants.available),
    )
    metrics.gauge(
        "paygress_refusals_remembered",
        "Tokens and proofs refused for good, remembered so that replays cost no mint call.",
        gate.refusals.__len__,
    )
    metrics.gauge(
        "paygress_swap_budget_clients",
        "Client addresses with a bucket in the swap budget of unproven tokens.",
        gate.budget.__len__ if gate.budget is not None else (lambda: 0),
    )
    return gate


@dataclass(frozen=True, slots=True)
class Listening:
    """What `_listen` opened: the servers, and where they listen."""

    health: HealthServicer
    servers: list[grpc.aio.Server]
    socket_path: Path
    admin_socket_path: Path | None
    tcp_port: int | None
    http_port: int | None
    metrics_port: int | None
    grace: StopGrace


async def _listen(
    config: Config,
    gate: Gate,
    wallet: OperatorWallet,
    metrics: PrometheusMetrics,
    resources: contextlib.AsyncExitStack,
) -> Listening:
    """The gRPC servers (the proxy's socket, the admin socket, optional TCP) and the HTTP sites
    (forward-auth, metrics)."""
    health = HealthServicer()
    grace = StopGrace()
    # The proxy's socket decides requests; the wallet (withdrawals!) is on a socket of its own,
    # so that whatever may ask for decisions cannot take the money.
    proxy_services = [_authz(gate), _health(health)]
    socket_path = Path(config.listen.socket)
    unix, _ = await _grpc_server(
        resources,
        proxy_services,
        f"unix:{socket_path}",
        grace,
        socket_mode=config.listen.socket_mode,
    )
    servers = [unix]
    admin_socket_path: Path | None = None
    if config.listen.admin_socket:  # every process but workers 1..N-1 (paygress/workers.py)
        admin_socket_path = Path(config.listen.admin_socket)
        admin_server, _ = await _grpc_server(
            resources,
            [_admin(wallet), _health(health)],
            f"unix:{admin_socket_path}",
            grace,
            socket_mode=config.listen.admin_socket_mode,
        )
        servers.append(admin_server)
    # Worker processes share the TCP and forward-auth ports (SO_REUSEPORT: gRPC sets it
    # itself; aiohttp is told).
    shared = config.workers > 1
    tcp_port: int | None = None
    if config.listen.tcp:
        tcp, tcp_port = await _grpc_server(resources, proxy_services, config.listen.tcp, grace)
        servers.append(tcp)
    http_port = metrics_port = None
    if config.listen.http:
        forward_auth = ForwardAuth(gate, trusted_hops=config.listen.http_trusted_hops)
        http_port = await _http_site(
            resources, forward_auth.handle, config.listen.http, reuse_port=shared
        )
    if config.metrics_listen:
        metrics_port = await _http_site(resources, metrics_app(metrics), config.metrics_listen)
    return Listening(
        health, servers, socket_path, admin_socket_path, tcp_port, http_port, metrics_port, grace
    )


async def _pods(
    config: Config,
    metrics: PrometheusMetrics,
    resources: contextlib.AsyncExitStack,
    store: Store,
    seed: Seed,
    sessions: SessionAccess | None = None,
) -> tuple[KubePods | None, PodAccess | None]:
    """Pods for payment, when a route names a tier: the keeper follows the grant store's
    durable paid ends, and pod keys derive from the seed."""
    if not any(r.tier is not None for r in config.routes):
        return None, None
    pods = await KubePods.connect(
        config.kubernetes, on_event=metrics.pod_event, paid_end=DurablePaidEnds(store.grants)
    )
    resources.push_async_callback(pods.aclose)
    await pods.start()
    metrics.gauge("paygress_pods_active", "Paid pods known to this instance.", pods.count)
    access = PodAccess(
        pods,
        PodPaths(config.kubernetes.offers_path, config.kubernetes.status_path),
        config.unit,
        config.mints,
        config.tiers,
        time.time,
        owner_key=seed.purpose_key("pod-owner"),
        sessions=sessions,
    )
    return pods, access


def _sessions(config: Config, seed: Seed) -> SessionAccess | None:
    """Paid sessions signed with the seed's session key (paygress/sessions.py)."""
    s = config.sessions
    if not s.enabled:
        return None
    signer = SessionSigner.from_seed(
        seed, generation=s.key_generation, issuer=s.issuer, also_accept=s.accept_generations
    )
    # The proxy's JWKS (`paygress jwks`) must hold this kid.
    log.info("sessions signed with key %s (generation %d)", signer.kid, s.key_generation)
    settings = SessionSettings(
        header=s.header,
        cookie=s.cookie,
        pod_max_seconds=s.pod_max_seconds,
        expiry_margin_seconds=s.expiry_margin_seconds,
    )
    return SessionAccess(signer, settings)


# -- gRPC ------------------------------------------------------------------------------------

# A service: its full name (for reflection) and how to add it to a server.
Service = tuple[str, Callable[[grpc.aio.Server], None]]


def _authz(gate: Gate) -> Service:
    return AUTHZ_SERVICE, lambda server: grpc_adapter.add_to_server(gate, server)


def _admin(wallet: OperatorWallet) -> Service:
    return ADMIN_SERVICE, lambda server: admin.add_to_server(wallet, server)


def _health(health: HealthServicer) -> Service:
    return HEALTH_SERVICE, lambda server: health_pb2_grpc.add_HealthServicer_to_server(
        health, server
    )


class StopGrace:
    """How long stopping servers let RPCs under way finish: short after a drain, none when
    hurried (a second signal) or without a drain."""

    def __init__(self) -> None:
        self.seconds: float | None = None


async def _grpc_server(
    resources: contextlib.AsyncExitStack,
    services: Iterable[Service],
    address: str,
    grace: StopGrace,
    *,
    socket_mode: int | None = None,
) -> tuple[grpc.aio.Server, int]:
    """A started gRPC server with `services` and reflection, on a Unix socket (`unix:PATH`,
    created with `socket_mode`, a stale one replaced) or host:port; returns it and the bound
    port (0 for a socket). Its stop is pushed onto `resources`."""
    server = grpc.aio.server()
    names = []
    for name, add in services:
        add(server)
        names.append(name)
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
    if not address.startswith("unix:"):
        port = server.add_insecure_port(address)
        if not port:
            raise OSError(f"cannot listen on {address}")
        await server.start()
    else:
        assert socket_mode is not None
        path = Path(address.removeprefix("unix:"))
        _prepare_socket_path(path)
        old_umask = os.umask(0o777 & ~socket_mode)
        try:
            port = server.add_insecure_port(address)
            await server.start()
        finally:
            os.umask(old_umask)
        resources.callback(path.unlink, missing_ok=True)
        os.chmod(path, socket_mode)
    resources.push_async_callback(lambda: server.stop(grace=grace.seconds))
    return server, port


async def _http_site(
    resources: contextlib.AsyncExitStack,
    app: web.Application | Handler,
    address: str,
    *,
    reuse_port: bool = False,
) -> int:
    runner, port = await start_site(app, address, reuse_port=reuse_port)
    resources.push_async_callback(runner.cleanup)
    return port


class StartupError(RuntimeError):
    """Paygress could not start; the message says why (the cause is chained)."""


async def serve(config: Config, mnemonic: str) -> None:
    """Runs until SIGTERM or SIGINT, then drains and stops; a second signal cuts the drain."""
    try:
        running = await start(config, mnemonic)
    except Exception as exc:
        raise StartupError(f"{type(exc).__name__}: {exc}") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            log.warning("second signal: stopping without waiting for the drain")
            running.hurry()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
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
        except StoreUnavailable:
            log.warning("the store cannot be reached: leases are given back at a later flush")
        except Exception:
            log.exception("could not persist grant usage; will retry")


async def _settle_locked_forever(wallet: OperatorWallet, interval: float) -> None:
    """Swaps the proofs accepted offline, a batch at a time, every `interval` (at once again
    while batches come full; backing off to a minute while the mint fails)."""
    delay = interval
    while True:
        try:
            queued = await wallet.refresh_locked()
            settled = await wallet.settle_locked() if queued else 0
            delay = 0.0 if settled and settled < queued else interval
        except Exception as exc:
            log.warning("swapping locked proofs failed (%s); will retry", exc)
            delay = min(max(delay, interval) * 2, 60.0)
        await asyncio.sleep(delay)


async def _settle_open_swaps(wallet: OperatorWallet, interval: float) -> None:
    """Settles swaps interrupted by a crash or a lost answer, now and then every `interval`
    while some are open (backing off to a minute while the mint cannot tell)."""
    delay = interval
    while True:
        try:
            open_before = await wallet.refresh_open_swaps()
            if open_before:
                done = await wallet.recover_pending()
                if done:
                    log.info("settled %d interrupted swaps", done)
                delay = interval if done else min(delay * 2, 60.0)
            else:
                delay = interval
        except Exception:
            log.exception("settling open swaps failed; will retry")
            delay = min(delay * 2, 60.0)
        await asyncio.sleep(delay)
