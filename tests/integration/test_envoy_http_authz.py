"""Envoy's HTTP ext_authz (deploy/envoy/envoy-http-authz.yaml) against its gRPC ext_authz
(deploy/envoy/envoy.yaml): the same scenarios through each, one Paygress behind both (its Unix
socket for gRPC, its `listen.http` /envoy path for HTTP), real Envoy, a real mint.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from paygress.cashu.nut18 import decode_payment_request
from tests.integration.test_payment_gate import gate_config
from tests.integration.test_sessions import pay
from tests.peers.envoy import EnvoyProxy
from tests.peers.mint import NutshellMint
from tests.peers.paygress import PaygressProcess
from tests.peers.procs import LOOPBACK, REPO_ROOT, free_port
from tests.peers.proxy import CountingProxy
from tests.peers.upstream import EchoUpstream
from tests.peers.wallet import CashuWallet

HTTP_AUTHZ = REPO_ROOT / "deploy" / "envoy" / "envoy-http-authz.yaml"
MNEMONIC = "jelly better achieve collect unaware mountain thought cargo oxygen act hood bridge"


@dataclass
class Stack:
    mint: NutshellMint
    proxy: CountingProxy
    paygress: PaygressProcess
    upstream: EchoUpstream
    wallet: CashuWallet
    envoys: dict[str, EnvoyProxy]
    clients: dict[str, httpx.AsyncClient]

    async def token(self, amount: int) -> str:
        return await self.wallet.token(self.mint.url, amount, token_mint=self.proxy.url)

    def swaps(self) -> int:
        return self.proxy.requests["/v1/swap"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet
) -> AsyncIterator[Stack]:
    work = Path(tempfile.mkdtemp(prefix="pg-httpauthz-"))
    http_port = free_port()
    proxy = await CountingProxy.to_url(mint.url).start()
    config = gate_config(proxy.url, work / "state")
    config["listen"] = {"http": f"{LOOPBACK}:{http_port}"}
    paygress = await PaygressProcess(config, MNEMONIC, work / "paygress").start()
    envoys = {
        "grpc": await EnvoyProxy(
            work / "grpc", upstream=upstream.address, paygress_socket=paygress.socket_path
        ).start(),
        "http": await EnvoyProxy(
            work / "http",
            upstream=upstream.address,
            paygress_http=(LOOPBACK, http_port),
            config_path=HTTP_AUTHZ,
        ).start(),
    }
    clients = {
        name: httpx.AsyncClient(base_url=e.url, trust_env=False, timeout=15)
        for name, e in envoys.items()
    }
    try:
        yield Stack(mint, proxy, paygress, upstream, wallet, envoys, clients)
    finally:
        for client in clients.values():
            await client.aclose()
        for envoy in envoys.values():
            await envoy.stop()
        await paygress.stop()
        await proxy.stop()


@dataclass
class Via:
    name: str
    http: httpx.AsyncClient
    stack: Stack

    def seen(self) -> dict[str, str]:
        headers: dict[str, str] = self.stack.upstream.requests[-1]["headers"]
        return headers


@pytest.fixture(params=["grpc", "http"])
def via(request: pytest.FixtureRequest, stack: Stack) -> Via:
    return Via(request.param, stack.clients[request.param], stack)


def reason(r: httpx.Response) -> str:
    data: dict[str, Any] = r.json()
    return str(data["reason"])


async def test_free_route_passes_and_forged_paid_headers_are_dropped(via: Via) -> None:
    forged = {"X-Paygress-Paid": "1000", "X-Envoy-Original-Dst-Host": "169.254.169.254:80"}
    r = await via.http.get("/public/x", headers=forged)
    assert r.status_code == 200, r.text
    seen = via.seen()
    assert "x-paygress-paid" not in seen and "x-envoy-original-dst-host" not in seen
    assert (await via.http.get("/healthz")).status_code == 200


async def test_priced_route_without_payment_is_the_real_402(via: Via) -> None:
    before = via.stack.upstream.count
    r = await via.http.get("/api/things")
    assert r.status_code == 402, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert decode_payment_request(r.headers["x-cashu"]).amount == 3
    body = r.json()
    assert (
        body["reason"] == "payment_required" and body["payment"]["request"] == r.headers["x-cashu"]
    )
    assert via.stack.upstream.count == before


@pytest.mark.parametrize("carrier", ["x-cashu", "authorization"])
async def test_a_paid_token_passes_with_its_headers_and_never_reaches_the_upstream(
    via: Via, carrier: str
) -> None:
    token = await via.stack.token(5)  # 4 after the fee: 2 requests at 2 sat
    headers = {"X-Cashu": token} if carrier == "x-cashu" else {"Authorization": f"Cashu {token}"}
    headers["X-Paygress-Paid"] = "1000000"  # a forged copy: overwritten
    swaps = via.stack.swaps()
    r = await pay(via.http, "/api/things", token, headers)
    assert r.status_code == 200, r.text
    seen = via.seen()
    assert (seen["x-paygress-paid"], seen["x-paygress-route"]) == ("4", "api")
    assert (seen["x-paygress-unit"], seen["x-paygress-remaining"]) == ("sat", "1")
    assert "x-cashu" not in seen and "authorization" not in seen and token not in str(seen)
    assert r.headers["x-paygress-remaining"] == "1"
    assert r.headers["x-paygress-grant"] == seen["x-paygress-grant"]
    assert "x-paygress-paid" not in r.headers, "upstream headers stay upstream"
    r = await via.http.get("/api/things", headers={"X-Cashu": token})
    assert r.status_code == 200 and r.headers["x-paygress-remaining"] == "0"
    r = await via.http.get("/api/things", headers={"X-Cashu": token})
    assert r.status_code == 402 and reason(r) == "exhausted"
    assert via.stack.swaps() == swaps + 1


async def test_a_malformed_token_is_400_with_its_reason(via: Via) -> None:
    r = await via.http.get("/api/x", headers={"X-Cashu": "cashuBgarbage"})
    assert r.status_code == 400 and reason(r) == "malformed"
    assert "x-cashu" in r.headers


async def test_a_time_grant_brings_its_session_and_expiry_to_the_client(via: Via) -> None:
    token = await via.stack.token(2)  # 1 sat after the fee: 30 s
    r = await pay(via.http, "/live/x", token)
    assert r.status_code == 200, r.text
    assert r.headers["x-paygress-expires"] == via.seen()["x-paygress-expires"]
    session = r.headers["x-paygress-session"]
    assert "x-paygress-session" not in via.seen()
    # Without jwt_authn in this config, the session is judged by Paygress itself.
    r = await via.http.get("/live/y", headers={"X-Paygress-Session": session})
    assert r.status_code == 200 and via.seen()["x-paygress-route"] == "live"
    assert "x-paygress-session" not in via.seen()


async def test_paygress_down_fails_closed_with_503(stack: Stack) -> None:
    await stack.paygress.stop()
    try:
        for name, client in stack.clients.items():
            r = await client.get("/public/x")
            assert r.status_code == 503, name
    finally:
        await stack.paygress.start()
    for client in stack.clients.values():
        assert (await client.get("/public/x")).status_code == 200


async def test_what_envoy_sends_paygress_over_http(upstream: EchoUpstream, tmp: Path) -> None:
    """Envoy's check request itself, caught by the echo server standing in for Paygress: the
    original method and path behind /envoy, the Host, the headers allowed, and the client's
    address set by Envoy over a forged one."""
    envoy = await EnvoyProxy(
        tmp / "envoy",
        upstream=upstream.address,
        paygress_http=upstream.address,
        config_path=HTTP_AUTHZ,
    ).start()
    try:
        async with httpx.AsyncClient(base_url=envoy.url, trust_env=False) as http:
            upstream.reset()
            sent = {
                "Host": "shop.example",
                "X-Cashu": "cashuBxyz",
                "X-Paygress-Client": "203.0.113.9",
                "X-Paygress-Pod": "pg-x",
                "X-Other": "not for Paygress",
            }
            r = await http.post("/api/x?q=1", headers=sent, content=b"body")
            assert r.status_code == 200
    finally:
        await envoy.stop()
    check = upstream.requests[0]
    assert (check["method"], check["path"]) == ("POST", "/envoy/api/x?q=1")
    headers = check["headers"]
    assert headers["host"] == "shop.example"
    assert headers["x-cashu"] == "cashuBxyz" and headers["x-paygress-pod"] == "pg-x"
    assert headers["x-paygress-client"] == "127.0.0.1", "Envoy's word, not the client's"
    assert "x-other" not in headers
    assert check["body_length"] == 0
