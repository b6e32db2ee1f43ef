"""The HTTP adapter's answers for NGINX's cache (X-Accel-Expires) and for Envoy's HTTP
ext_authz (/envoy), against a gate with sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio

from paygress.cashu.nut13 import Seed
from paygress.core.gate import Gate, GateSettings
from paygress.core.pricing import Mode, Pricing, RouteRule
from paygress.core.session_access import SessionAccess, SessionSettings
from paygress.http_adapter import ForwardAuth, start_site
from paygress.sessions import SessionSigner

from .core.fakes import MINT, FakeStore, FakeWallet, make_token

API = RouteRule(name="api", price=4, path_prefix="/api/")
LIVE = RouteRule(name="live", price=1, mode=Mode.PER_SECOND, grants=60, path_prefix="/live/")
NOW = 1_900_000_000.5


@pytest_asyncio.fixture(loop_scope="session")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    store, wallet = FakeStore(), FakeWallet()
    wallet.store = store
    signer = SessionSigner.from_seed(Seed.from_mnemonic("abandon " * 11 + "about"))
    sessions = SessionAccess(signer, SessionSettings(), lambda: NOW)
    gate = Gate(
        Pricing((API, LIVE)),
        GateSettings("sat", (MINT,)),
        wallet,
        store,
        clock=lambda: NOW,
        sessions=sessions,
    )
    runner, port = await start_site(ForwardAuth(gate).handle, "127.0.0.1:0")  # as served
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as c:
        yield c
    await runner.cleanup()


def nginx(uri: str, **headers: str) -> dict[str, str]:
    return {"X-Original-Method": "GET", "X-Original-URI": uri, "X-Forwarded-Host": "h", **headers}


async def test_nginx_may_reuse_a_time_grant_until_the_last_second_before_its_end(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/nginx", headers=nginx("/live/x", **{"X-Cashu": make_token((2,))}))
    assert r.status_code == 200
    paid_end = NOW + 120  # 2 sat at 1 sat per 60 s
    assert r.headers["x-accel-expires"] == f"@{int(paid_end)}"  # ceil(end) - 1: before it
    session = r.headers["x-paygress-session"]
    r = await client.get("/nginx", headers=nginx("/live/y", **{"X-Paygress-Session": session}))
    assert r.status_code == 200
    assert r.headers["x-accel-expires"] == f"@{int(paid_end) - 2 - 1}"  # the session's exp - 1


async def test_nginx_never_reuses_counted_grants_or_denials(client: httpx.AsyncClient) -> None:
    r = await client.get("/nginx", headers=nginx("/api/x", **{"X-Cashu": make_token((8,))}))
    assert r.status_code == 200 and r.headers["x-accel-expires"] == "0"
    r = await client.get("/nginx", headers=nginx("/api/x"))
    assert r.status_code == 401 and r.headers["x-accel-expires"] == "0"
    r = await client.get("/nginx", headers=nginx("/free"))
    assert r.status_code == 200 and r.headers["x-accel-expires"] == "0"


async def test_envoy_http_authz_reads_the_original_request_behind_its_prefix(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/envoy/api/x?q=1", headers={"Host": "shop"})
    assert r.status_code == 402 and r.json()["reason"] == "payment_required"
    token = make_token((8,))
    forged = {"X-Cashu": token, "Host": "shop", "X-Paygress-Route": "evil"}
    r = await client.post("/envoy/api/x", headers=forged)
    assert r.status_code == 200
    assert (r.headers["x-paygress-route"], r.headers["x-paygress-remaining"]) == ("api", "1")
    assert r.headers["x-envoy-auth-headers-to-remove"] == "x-cashu"
    r = await client.get("/envoy/public", headers={"X-Paygress-Paid": "9"})
    assert r.status_code == 200
    assert r.headers["x-envoy-auth-headers-to-remove"] == "x-paygress-paid"
    r = await client.get("/envoy/", headers={"Host": "shop"})  # the root path
    assert r.status_code == 200 and "x-envoy-auth-headers-to-remove" not in r.headers
