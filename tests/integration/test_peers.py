"""Smoke tests of the peer harness (tests/peers/): real mint, wallet, Envoy, proxy, echo."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.peers.envoy import DEFAULT_CONFIG, ENVOY_BIN, EnvoyProxy, ext_authz_config
from tests.peers.mint import NutshellMint
from tests.peers.paygress import PaygressProcess
from tests.peers.procs import REPO_ROOT, StartupError, free_port
from tests.peers.proxy import CountingProxy
from tests.peers.upstream import EchoUpstream
from tests.peers.wallet import CashuWallet, WalletError

pytestmark = pytest.mark.integration

TEST_MNEMONIC = (
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
)


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, timeout=10.0)


# -- mint and wallet ---------------------------------------------------------------------------


async def test_mint_serves_keysets_and_writes_only_in_its_dir(mint: NutshellMint) -> None:
    keysets = await mint.keysets()
    active = [k for k in keysets if k["active"] and k["unit"] == "sat"]
    assert len(active) == 1
    assert active[0]["input_fee_ppk"] == 100
    assert (mint.db_dir / "mint.sqlite3").is_file()
    assert not (mint.workdir / "data").exists()  # MINT_AUTH_DATABASE honoured too
    assert not (REPO_ROOT / "data").exists()


async def test_second_mint_has_other_keys(mint: NutshellMint, second_mint: NutshellMint) -> None:
    ids = {k["id"] for k in await mint.keysets()}
    other = {k["id"] for k in await second_mint.keysets()}
    assert mint.url != second_mint.url
    assert not ids & other


@pytest.mark.parametrize(("version", "prefix"), [(4, "cashuB"), (3, "cashuA")])
async def test_wallet_mints_exact_tokens(
    wallet: CashuWallet, mint: NutshellMint, version: int, prefix: str
) -> None:
    first, second = await wallet.tokens(mint.url, [8, 8], version=version)
    assert first.startswith(prefix) and second.startswith(prefix)
    assert first != second
    for token in (first, second):
        info = await wallet.decode(token)
        assert info["amount"] == 8
        assert info["mint"] == mint.url
        assert info["unit"] == "sat"
    assert await wallet.check_unspent(mint.url, first)
    # Real money: receiving it swaps it at the mint (1 proof of 8 -> 1 sat input fee).
    assert await wallet.receive(first) == 7
    assert await wallet.check_spent(mint.url, first)
    assert await wallet.proof_states(None, second) == ["UNSPENT"]
    with pytest.raises(WalletError, match=r"(?i)spent"):
        await wallet.receive(first)


async def test_wallet_tokens_do_not_share_proofs(wallet: CashuWallet, mint: NutshellMint) -> None:
    tokens = await wallet.tokens(mint.url, [1, 2, 3, 5, 21])
    secrets: list[str] = []
    for token, amount in zip(tokens, [1, 2, 3, 5, 21], strict=True):
        info = await wallet.decode(token)
        assert info["amount"] == amount
        secrets += info["secrets"]
    assert len(secrets) == len(set(secrets))


async def test_wallet_can_name_another_mint_url_in_tokens(
    wallet: CashuWallet, mint: NutshellMint
) -> None:
    async with CountingProxy.to_url(mint.url) as proxy:
        token = await wallet.token(mint.url, 4, token_mint=proxy.url)
        info = await wallet.decode(token)
        assert info["mint"] == proxy.url
        assert proxy.connections == 0  # minted directly, only the label says proxy
        assert await wallet.check_unspent(None, token)  # asked via the proxy
        assert proxy.requests["/v1/checkstate"] == 1


async def test_mint_stop_and_start_keeps_its_database(
    mint: NutshellMint, wallet: CashuWallet
) -> None:
    token = await wallet.token(mint.url, 2)
    keysets = await mint.keysets()
    try:
        code = await mint.stop()
        assert code is not None and not mint.running
        async with client() as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"{mint.url}/v1/keysets")
        await mint.start()
        assert await mint.keysets() == keysets
        assert await wallet.check_unspent(mint.url, token)
    finally:
        if not mint.running:
            await mint.start()


async def test_mint_start_failure_reports_log_tail(tmp: Path) -> None:
    # The port is taken (listening, never answering): the mint cannot bind it and exits.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        doomed = NutshellMint(tmp / "mint", port=blocker.getsockname()[1])
        doomed.startup_timeout = 15.0
        with pytest.raises(StartupError) as info:
            await doomed.start()
    message = str(info.value)
    assert "mint.log" in message
    assert "address already in use" in message.lower() or "errno 98" in message.lower()
    assert not doomed.running


# -- counting proxy and echo upstream ----------------------------------------------------------


async def test_counting_proxy_counts_requests_per_path(mint: NutshellMint) -> None:
    async with (
        CountingProxy.to_url(mint.url) as proxy,
        CountingProxy.to_url(mint.url) as idle,
        client() as http,
    ):
        for _ in range(2):
            response = await http.get(f"{proxy.url}/v1/keysets")
            assert response.status_code == 200
        response = await http.post(f"{proxy.url}/v1/checkstate?x=1", json={"Ys": []})
        assert response.status_code == 200
        assert proxy.requests["/v1/keysets"] == 2
        assert proxy.requests["/v1/checkstate"] == 1
        assert proxy.request_log[-1] == ("POST", "/v1/checkstate?x=1")
        assert proxy.connections == 1  # keep-alive
        assert idle.connections == 0 and idle.total_requests == 0


async def test_echo_upstream_reports_what_it_got(upstream: EchoUpstream) -> None:
    async with client() as http:
        response = await http.post(
            f"{upstream.url}/a/b?c=d", headers={"X-Thing": "1"}, content=b"hello"
        )
    assert response.status_code == 200
    echo = response.json()
    assert echo["method"] == "POST"
    assert echo["path"] == "/a/b?c=d"
    assert echo["headers"]["x-thing"] == "1"
    assert upstream.requests[-1]["body_length"] == 5


def test_echo_upstream_runs_standalone(tmp: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.peers.upstream", "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert b"listening" in proc.stdout.readline()
        response = httpx.get(f"http://127.0.0.1:{port}/x", trust_env=False)
        assert response.json()["path"] == "/x"
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0


# -- Envoy -------------------------------------------------------------------------------------


def test_example_envoy_config_validates() -> None:
    result = subprocess.run(
        [str(ENVOY_BIN), "--mode", "validate", "-c", str(DEFAULT_CONFIG), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_envoy_without_authz_forwards_to_upstream(
    upstream: EchoUpstream, peers: contextlib.AsyncExitStack, tmp: Path
) -> None:
    envoy = await peers.enter_async_context(
        EnvoyProxy(tmp / "envoy", upstream=upstream.address, authz=False)
    )
    assert "ext_authz" not in envoy.rendered_path.read_text()
    async with client() as http:
        health = await http.get(f"{envoy.url}/healthz")
        assert health.status_code == 200 and health.text == "ok\n"
        before = upstream.count
        response = await http.get(f"{envoy.url}/paid/thing?q=1", headers={"X-Test": "yes"})
    assert response.status_code == 200
    echo = response.json()
    assert echo["path"] == "/paid/thing?q=1"
    assert echo["headers"]["x-test"] == "yes"
    assert "x-request-id" in echo["headers"]  # it really went through Envoy
    assert upstream.count == before + 1


async def test_envoy_with_authz_fails_closed_when_paygress_is_down(
    upstream: EchoUpstream, peers: contextlib.AsyncExitStack, tmp: Path
) -> None:
    envoy = await peers.enter_async_context(
        EnvoyProxy(tmp / "envoy", upstream=upstream.address, paygress_socket=tmp / "none.sock")
    )
    before = upstream.count
    async with client() as http:
        assert (await http.get(f"{envoy.url}/healthz")).status_code == 200
        response = await http.get(f"{envoy.url}/paid")
    assert response.status_code == 503
    assert upstream.count == before
    stats = await envoy.stats("ext_authz")
    assert any(name.endswith("ext_authz.error") and value >= 1 for name, value in stats.items())


async def test_envoys_run_side_by_side(
    upstream: EchoUpstream, peers: contextlib.AsyncExitStack, tmp: Path
) -> None:
    def short_timeout(config: dict[str, object]) -> None:
        ext_authz_config(config)["grpc_service"]["timeout"] = "0.5s"

    first = await peers.enter_async_context(
        EnvoyProxy(tmp / "a", upstream=upstream.address, authz=False, concurrency=2)
    )
    second = await peers.enter_async_context(
        EnvoyProxy(
            tmp / "b",
            upstream=upstream.address,
            paygress_tcp=("127.0.0.1", free_port()),
            mutate=short_timeout,
        )
    )
    assert first.port != second.port and first.admin_port != second.admin_port
    assert "0.5s" in second.rendered_path.read_text()
    async with client() as http:
        assert (await http.get(f"{first.url}/x")).status_code == 200
        assert (await http.get(f"{second.url}/x")).status_code == 503


# -- Paygress process --------------------------------------------------------------------------

# A stand-in with the CLI's contract: `serve --config FILE`, gRPC health on listen.socket,
# graceful exit 0 on SIGTERM.
STAND_IN = r"""
import asyncio, os, signal, sys
import grpc, yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

config = yaml.safe_load(open(sys.argv[sys.argv.index("--config") + 1]))
assert os.environ["PAYGRESS_MNEMONIC"]

async def main():
    server = grpc.aio.server()
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_insecure_port("unix:" + config["listen"]["socket"])
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(None)

asyncio.run(main())
"""


async def test_paygress_process_contract_with_stand_in(tmp: Path) -> None:
    proc = PaygressProcess(
        {"listen": {"socket": str(tmp / "p.sock")}},
        TEST_MNEMONIC,
        tmp / "paygress",
        command=[sys.executable, "-c", STAND_IN],
    )
    try:
        await proc.start()
        assert proc.socket_path.is_socket()
        assert await proc.health() == "SERVING"
        assert "state_dir" in proc.config_path.read_text()
        await proc.restart()
        assert await proc.health() == "SERVING"
        assert await proc.stop() == 0
    finally:
        proc.kill()


@pytest.mark.skipif(
    importlib.util.find_spec("paygress.cli") is None, reason="paygress CLI not written yet"
)
async def test_real_paygress_serves_health(tmp: Path, mint: NutshellMint) -> None:
    proc = PaygressProcess(
        {
            "listen": {"socket": str(tmp / "paygress.sock")},
            "mints": [mint.url],
            "drain_seconds": 0,
        },
        TEST_MNEMONIC,
        tmp / "paygress",
    )
    try:
        await proc.start()
        assert await proc.health() == "SERVING"
        assert await proc.stop() == 0
    finally:
        proc.kill()
