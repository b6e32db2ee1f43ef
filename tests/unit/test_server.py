"""paygress.server: start() / Running.stop() in-process over a real Unix socket (and TCP), and
`paygress serve` as a real subprocess for the SIGTERM drain.

Nothing here contacts a mint: the only priced requests carry no token, so they are answered
with a 402 without redemption.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from paygress import server
from paygress.cashu.nut13 import Seed
from paygress.config import Config, parse_config
from paygress.core.gate import Gate
from paygress.v1 import admin_pb2, admin_pb2_grpc
from tests.peers.paygress import PaygressProcess

MNEMONIC = Seed.generate_mnemonic()
MINT = "http://127.0.0.1:9"  # discard port: nothing is ever contacted here
AUTHZ = "envoy.service.auth.v3.Authorization"
HEALTH = "grpc.health.v1.Health"
ADMIN = "paygress.v1.WalletAdmin"
ROUTE = {"name": "api", "match": {"path_prefix": "/api/"}, "price": 4}


def raw_config(tmp: Path, **listen: Any) -> dict[str, Any]:
    return {
        "listen": {
            "socket": str(tmp / "pg.sock"),
            "admin_socket": str(tmp / "admin.sock"),
            **listen,
        },
        "state_dir": str(tmp / "state"),
        "mints": [MINT],
        "routes": [ROUTE],
    }


def make_config(tmp: Path, **listen: Any) -> Config:
    return parse_config(raw_config(tmp, **listen))


def with_tcp(config: Config, tcp: str = "127.0.0.1:0") -> Config:
    # parse_config insists on a port in 1..65535; start() itself accepts 0 (any free port).
    return replace(config, listen=replace(config.listen, tcp=tcp))


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def check_request(path: str, method: str = "GET", host: str = "svc.test") -> Any:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = method
    http.host = host
    http.path = path
    return request


async def authz_check(target: str, path: str) -> Any:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        return await stub.Check(check_request(path), timeout=5)


async def health_of(target: str, service: str = "") -> str:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return name


async def reflected_services(target: str) -> set[str]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names: set[str] = set()
        async for response in call:
            names.update(s.name for s in response.list_services_response.service)
        return names


def assert_payment_required(response: Any) -> None:
    assert response.status.code == code_pb2.PERMISSION_DENIED
    denied = response.denied_response
    assert denied.status.code == 402
    headers = {h.header.key: h.header.value for h in denied.headers}
    assert headers["x-cashu"].startswith("creqA")
    assert '"reason":"payment_required"' in denied.body


@pytest_asyncio.fixture
async def servers(tmp: Path) -> AsyncIterator[contextlib.AsyncExitStack]:
    """Servers a test starts with `await started(servers, config)` stop at its end (before
    `tmp` goes), unless the test stopped them itself (stopping twice is harmless)."""
    async with contextlib.AsyncExitStack() as stack:
        yield stack


async def started(servers: contextlib.AsyncExitStack, config: Config) -> server.Running:
    return await servers.enter_async_context(await server.start(config, MNEMONIC))


@pytest_asyncio.fixture
async def running(servers: contextlib.AsyncExitStack, tmp: Path) -> server.Running:
    return await started(servers, make_config(tmp))


def target(running: server.Running) -> str:
    return f"unix:{running.socket_path}"


# -- the socket file ---------------------------------------------------------------------------


async def test_socket_is_created_with_default_mode_0660(running: server.Running) -> None:
    assert is_socket(running.socket_path)
    assert mode_of(running.socket_path) == 0o660


async def test_socket_mode_is_configurable(servers: contextlib.AsyncExitStack, tmp: Path) -> None:
    running = await started(servers, make_config(tmp, socket_mode="0600"))
    assert mode_of(running.socket_path) == 0o600
    assert await health_of(target(running)) == "SERVING"


async def test_socket_parent_directory_is_created(
    servers: contextlib.AsyncExitStack, tmp: Path
) -> None:
    config = parse_config({**raw_config(tmp), "listen": {"socket": str(tmp / "run" / "p.sock")}})
    running = await started(servers, config)
    assert is_socket(tmp / "run" / "p.sock")
    assert await health_of(target(running)) == "SERVING"


async def test_stale_socket_of_a_dead_server_is_replaced(
    servers: contextlib.AsyncExitStack, tmp: Path
) -> None:
    path = tmp / "pg.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays; nothing listens on it any more
    assert is_socket(path)

    running = await started(servers, make_config(tmp))
    assert await health_of(target(running)) == "SERVING"
    assert mode_of(path) == 0o660


async def test_regular_file_at_socket_path_is_refused_and_kept(
    servers: contextlib.AsyncExitStack, tmp: Path
) -> None:
    path = tmp / "pg.sock"
    path.write_text("precious")
    with pytest.raises(RuntimeError, match="exists and is not a socket"):
        await started(servers, make_config(tmp))
    assert path.read_text() == "precious"


async def test_second_server_on_a_live_socket_fails_and_first_keeps_serving(
    servers: contextlib.AsyncExitStack, running: server.Running, tmp: Path
) -> None:
    other = replace(make_config(tmp), state_dir=str(tmp / "other-state"))
    with pytest.raises(RuntimeError, match="in use"):
        await started(servers, other)
    assert is_socket(running.socket_path)
    assert await health_of(target(running)) == "SERVING"
    assert_payment_required(await authz_check(target(running), "/api/x"))


# -- services on the socket --------------------------------------------------------------------


@pytest.mark.parametrize("service", ["", AUTHZ])
async def test_health_is_serving(running: server.Running, service: str) -> None:
    assert await health_of(target(running), service) == "SERVING"


async def test_health_of_an_unknown_service_is_not_found(running: server.Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await health_of(target(running), "no.such.Service")
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_services_of_each_socket(running: server.Running) -> None:
    names = await reflected_services(target(running))
    assert {AUTHZ, HEALTH} <= names and ADMIN not in names
    admin_names = await reflected_services(f"unix:{running.admin_socket_path}")
    assert {ADMIN, HEALTH} <= admin_names and AUTHZ not in admin_names


async def test_check_free_path_is_ok(running: server.Running) -> None:
    response = await authz_check(target(running), "/public/index.html")
    assert response.status.code == code_pb2.OK
    assert response.HasField("ok_response")


async def test_check_priced_path_is_402_with_payment_request(running: server.Running) -> None:
    assert_payment_required(await authz_check(target(running), "/api/things?x=1"))


async def test_wallet_admin_is_served_on_its_own_socket_only(running: server.Running) -> None:
    assert running.admin_socket_path is not None
    assert mode_of(running.admin_socket_path) == 0o600
    async with grpc.aio.insecure_channel(f"unix:{running.admin_socket_path}") as channel:
        stub: Any = admin_pb2_grpc.WalletAdminStub(channel)  # type: ignore[no-untyped-call]
        response = await stub.Balance(admin_pb2.BalanceRequest(), timeout=5)
    assert list(response.balances) == []
    # Whatever may ask the proxy's socket for decisions cannot reach the wallet there.
    async with grpc.aio.insecure_channel(target(running)) as channel:
        stub = admin_pb2_grpc.WalletAdminStub(channel)  # type: ignore[no-untyped-call]
        for call, request in (
            (stub.Balance, admin_pb2.BalanceRequest()),
            (stub.Withdraw, admin_pb2.WithdrawRequest(amount=1)),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(request, timeout=5)
            assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


# -- TCP ---------------------------------------------------------------------------------------


async def test_tcp_listener_serves_check_and_health_but_not_wallet_admin(
    servers: contextlib.AsyncExitStack, tmp: Path
) -> None:
    running = await started(servers, with_tcp(make_config(tmp)))
    assert running.tcp_port is not None and running.tcp_port > 0
    tcp = f"127.0.0.1:{running.tcp_port}"

    ok = await authz_check(tcp, "/public")
    assert ok.status.code == code_pb2.OK
    assert_payment_required(await authz_check(tcp, "/api/x"))
    assert await health_of(tcp, AUTHZ) == "SERVING"

    async with grpc.aio.insecure_channel(tcp) as channel:
        stub: Any = admin_pb2_grpc.WalletAdminStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Balance(admin_pb2.BalanceRequest(), timeout=5)
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Withdraw(admin_pb2.WithdrawRequest(amount=1), timeout=5)
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED

    names = await reflected_services(tcp)
    assert {AUTHZ, HEALTH} <= names
    assert ADMIN not in names


async def test_without_tcp_there_is_no_tcp_port(running: server.Running) -> None:
    assert running.tcp_port is None
    assert len(running.servers) == 2  # the proxy's socket and the admin socket


# -- stop --------------------------------------------------------------------------------------


async def test_stop_drains_not_serving_while_check_still_answers(
    servers: contextlib.AsyncExitStack, tmp: Path
) -> None:
    running = await started(servers, with_tcp(make_config(tmp)))
    tcp = f"127.0.0.1:{running.tcp_port}"
    began = time.monotonic()
    stopping = asyncio.create_task(running.stop(drain_seconds=0.5))
    try:
        await asyncio.sleep(0.05)
        assert not stopping.done()
        assert await health_of(target(running)) == "NOT_SERVING"
        assert await health_of(target(running), AUTHZ) == "NOT_SERVING"
        assert await health_of(tcp, AUTHZ) == "NOT_SERVING"
        assert_payment_required(await authz_check(target(running), "/api/x"))
        assert (await authz_check(tcp, "/free")).status.code == code_pb2.OK
        assert is_socket(running.socket_path)
    finally:
        await stopping
    assert time.monotonic() - began >= 0.5
    assert not running.socket_path.exists()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await health_of(target(running))
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_stop_without_drain_removes_socket_and_allows_restart(
    servers: contextlib.AsyncExitStack, tmp: Path
) -> None:
    first = await started(servers, make_config(tmp))
    await first.stop(drain_seconds=0)
    assert not first.socket_path.exists()
    second = await started(servers, make_config(tmp))  # same socket, same database
    assert await health_of(target(second)) == "SERVING"


async def test_stop_twice_is_harmless(servers: contextlib.AsyncExitStack, tmp: Path) -> None:
    running = await started(servers, make_config(tmp))
    await running.stop(drain_seconds=0)
    await running.stop(drain_seconds=0)


async def test_failed_start_releases_what_it_opened(
    servers: contextlib.AsyncExitStack, tmp: Path
) -> None:
    import socket as sock
    import threading

    with sock.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = dataclasses.replace(
            make_config(tmp),
            listen=dataclasses.replace(make_config(tmp).listen, http=f"127.0.0.1:{port}"),
        )
        threads = threading.active_count()
        with pytest.raises(OSError):
            await server.start(config, MNEMONIC)
    assert not os.path.lexists(config.listen.socket), "the socket file must be removed"  # noqa: ASYNC240
    assert threading.active_count() <= threads, "the database thread must be stopped"
    running = await started(servers, make_config(tmp))  # the database is free again
    assert await health_of(target(running)) == "SERVING"


# -- the real process --------------------------------------------------------------------------


def process_config(tmp: Path, **extra: Any) -> dict[str, Any]:
    return {**raw_config(tmp), **extra}


async def test_serve_process_drains_on_sigterm_and_exits_0(tmp: Path) -> None:
    proc = PaygressProcess(process_config(tmp, drain_seconds=1), MNEMONIC, tmp)
    await proc.start()
    try:
        assert_payment_required(await authz_check(proc.grpc_target, "/api/x"))
        statuses: list[str] = []
        stopping = asyncio.create_task(proc.stop())  # SIGTERM, then waits for the exit
        try:
            deadline = time.monotonic() + 0.8
            while time.monotonic() < deadline:
                statuses.append(await proc.health(timeout=0.5))
                if statuses[-1] == "NOT_SERVING":
                    break
                await asyncio.sleep(0.02)
            assert statuses[-1] == "NOT_SERVING", statuses
            # Draining: checks Envoy still sends are answered.
            assert_payment_required(await authz_check(proc.grpc_target, "/api/x"))
            assert not stopping.done()
        finally:
            code = await stopping
    finally:
        if proc.running:
            proc.kill()
    assert code == 0, proc.log_tail()
    assert not proc.socket_path.exists()
    assert "draining" in proc.log_path.read_text()


async def test_serve_process_killed_leaves_stale_socket_that_next_start_replaces(
    servers: contextlib.AsyncExitStack, tmp: Path
) -> None:
    proc = PaygressProcess(process_config(tmp), MNEMONIC, tmp)
    await proc.start()
    try:
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)  # the process only, not its group
        assert await proc.stop(timeout=5) == -signal.SIGKILL
    finally:
        if proc.running:
            proc.kill()
    assert is_socket(proc.socket_path)  # left behind by the dead process

    running = await started(servers, make_config(tmp))  # same socket and state_dir
    assert await health_of(target(running)) == "SERVING"
    assert_payment_required(await authz_check(target(running), "/api/x"))


# -- one lifecycle -----------------------------------------------------------------------------


async def test_a_failing_step_at_stop_does_not_keep_the_others_from_running(
    servers: contextlib.AsyncExitStack, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def flush_fails(self: object) -> int:
        raise RuntimeError("disk full")

    monkeypatch.setattr(Gate, "flush", flush_fails)
    running = await server.start(make_config(tmp), MNEMONIC)
    assert len(running.tasks) >= 2  # the flusher, the settling of open swaps, ...
    with pytest.raises(RuntimeError, match="disk full"):
        await running.stop(drain_seconds=0)
    assert len(running.tasks) == 0, "background tasks are cancelled"
    assert running.admin_socket_path is not None
    assert not running.socket_path.exists() and not running.admin_socket_path.exists()
    with pytest.raises(RuntimeError, match="after shutdown"):
        await running.store.ledger.balances()  # the store was closed
    await running.stop(drain_seconds=0)  # a second stop is harmless
    monkeypatch.undo()
    again = await started(servers, make_config(tmp))  # the database is free again
    assert await health_of(target(again)) == "SERVING"


async def test_hurry_cuts_the_drain_short(servers: contextlib.AsyncExitStack, tmp: Path) -> None:
    running = await started(servers, make_config(tmp))
    began = time.monotonic()
    stopping = asyncio.create_task(running.stop(drain_seconds=30))
    await asyncio.sleep(0.1)
    assert await health_of(target(running)) == "NOT_SERVING"
    running.hurry()
    await asyncio.wait_for(stopping, timeout=5)
    assert time.monotonic() - began < 5
    assert not running.socket_path.exists()


async def test_serve_process_stops_at_once_on_a_second_sigterm(tmp: Path) -> None:
    proc = PaygressProcess(process_config(tmp, drain_seconds=60), MNEMONIC, tmp)
    await proc.start()
    try:
        assert proc.pid is not None
        os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while await proc.health(timeout=1) != "NOT_SERVING":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        began = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        code = await proc.stop(timeout=10)
    finally:
        if proc.running:
            proc.kill()
    assert code == 0, proc.log_tail()
    assert time.monotonic() - began < 5
    assert "second signal" in proc.log_path.read_text()
