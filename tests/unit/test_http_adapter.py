from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from paygress.cashu.nut18 import decode_payment_request
from paygress.core.gate import Gate, GateSettings
from paygress.core.pricing import Pricing, RouteRule
from paygress.http_adapter import ForwardAuth, metrics_app, start_site
from paygress.metrics import PrometheusMetrics

from .core.fakes import MINT, FakeStore, FakeWallet, make_token

API = RouteRule(name="api", price=4, path_prefix="/api/")


@pytest_asyncio.fixture(loop_scope="session")
async def served() -> AsyncIterator[tuple[httpx.AsyncClient, FakeWallet, PrometheusMetrics]]:
    store, wallet, metrics = FakeStore(), FakeWallet(), PrometheusMetrics()
    wallet.store = store
    gate = Gate(Pricing((API,)), GateSettings("sat", (MINT,)), wallet, store, metrics=metrics)
    runner, port = await start_site(ForwardAuth(gate).app(), "127.0.0.1:0")
    mrunner, mport = await start_site(metrics_app(metrics), "127.0.0.1:0")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
        client.headers["x-metrics-port"] = str(mport)
        yield client, wallet, metrics
    await runner.cleanup()
    await mrunner.cleanup()


Served = tuple[httpx.AsyncClient, FakeWallet, PrometheusMetrics]


def traefik(uri: str, **headers: str) -> dict[str, str]:
    return {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": uri, "X-Forwarded-Host": "h", **headers}


async def test_traefik_style_free_route_is_200(served: Served) -> None:
    client, *_ = served
    assert (await client.get("/", headers=traefik("/public"))).status_code == 200


async def test_traefik_style_denial_is_the_real_402_with_body(served: Served) -> None:
    client, *_ = served
    r = await client.get("/", headers=traefik("/api/x"))
    assert r.status_code == 402
    assert decode_payment_request(r.headers["x-cashu"]).amount == 4
    assert r.json()["reason"] == "payment_required"


async def test_paid_forward_auth_returns_paid_headers(served: Served) -> None:
    client, _wallet, _ = served
    token = make_token((8,))
    r = await client.get("/", headers=traefik("/api/x", **{"X-Cashu": token}))
    assert r.status_code == 200
    assert r.headers["x-paygress-paid"] == "8" and r.headers["x-paygress-remaining"] == "1"
    r = await client.get("/", headers=traefik("/api/x", Authorization=f"Cashu {token}"))
    assert r.status_code == 200 and r.headers["x-paygress-remaining"] == "0"
    r = await client.get("/", headers=traefik("/api/x", **{"X-Cashu": token}))
    assert r.status_code == 402 and r.json()["reason"] == "exhausted"


async def test_nginx_denial_is_401_then_replayed_as_the_real_answer(served: Served) -> None:
    client, *_ = served
    headers = {"X-Original-Method": "GET", "X-Original-URI": "/api/x", "X-Request-Id": "abc123"}
    r = await client.get("/nginx", headers=headers)
    assert r.status_code == 401
    assert r.headers["x-paygress-status"] == "402"
    assert r.headers["x-cashu"].startswith("creqA")
    replay = await client.get("/nginx/denied/abc123", headers=headers)
    assert replay.status_code == 402 and replay.json()["reason"] == "payment_required"
    # Not kept (other replica, expired): decided again from the forwarded request.
    again = await client.get("/nginx/denied/unknown", headers={**headers, "X-Cashu": "junk"})
    assert again.status_code == 400 and again.json()["reason"] == "malformed"


async def test_ingress_nginx_original_url_is_understood(served: Served) -> None:
    client, *_ = served
    r = await client.get("/", headers={"X-Original-URL": "https://h.example/api/x?q=1"})
    assert r.status_code == 402
    r = await client.get("/", headers={"X-Original-URL": "https://h.example/free"})
    assert r.status_code == 200


@pytest.mark.parametrize("path", ["/healthz"])
async def test_health(served: Served, path: str) -> None:
    client, *_ = served
    assert (await client.get(path)).text == "ok\n"


async def test_metrics_count_what_happened(served: Served) -> None:
    client, _, metrics = served
    before = metrics.checks.decisions.get(("deny", "payment_required"), 0)
    await client.get("/", headers=traefik("/api/y"))
    after = metrics.checks.decisions.get(("deny", "payment_required"), 0)
    assert after == before + 1
    port = client.headers["x-metrics-port"]
    async with httpx.AsyncClient(trust_env=False) as plain:
        text = (await plain.get(f"http://127.0.0.1:{port}/metrics")).text
    assert 'paygress_checks_total{decision="deny",reason="payment_required"}' in text
    assert "paygress_check_duration_seconds_bucket" in text


def test_client_address_reads_only_what_trusted_proxies_appended() -> None:
    from aiohttp.test_utils import make_mocked_request

    from paygress.http_adapter import client_address

    def request(**headers: str) -> web.Request:
        return make_mocked_request("GET", "/", headers=headers)

    spoofed = request(**{"X-Forwarded-For": "6.6.6.6, 198.51.100.2"})
    assert client_address(spoofed, 1) == "198.51.100.2"  # the right-most: what Traefik saw
    assert client_address(spoofed, 2) == "6.6.6.6"  # two trusted proxies in front
    assert client_address(request(**{"X-Forwarded-For": "198.51.100.2"}), 2) != "198.51.100.2"
    nginx = request(**{"X-Real-IP": "198.51.100.3", "X-Forwarded-For": "6.6.6.6"})
    assert client_address(nginx, 1, nginx=True) == "198.51.100.3"


def test_the_host_is_the_forwarded_one_never_the_auth_call_s_own() -> None:
    """The Host of a forward-auth call is Paygress's address (Traefik keeps its own when the
    client sent none: HTTP/1.0); only X-Forwarded-Host / X-Original-URL name the client's."""
    from aiohttp.test_utils import make_mocked_request

    from paygress.http_adapter import to_request

    def host(headers: dict[str, str], *, nginx: bool = False) -> str:
        return to_request(make_mocked_request("GET", "/", headers=headers), nginx=nginx).host

    forwarded = {"Host": "127.0.0.1:8181", "X-Forwarded-Host": "PAID.example.com."}
    assert host(forwarded) == "PAID.example.com."  # normalized by the pricing, as for Envoy
    assert host({"Host": "127.0.0.1:8181"}) == ""
    assert host({"Host": "paygress"}, nginx=True) == ""
    ingress = {"Host": "paygress", "X-Original-URL": "http://paid.example.com/x"}
    assert host(ingress) == "paid.example.com"


async def test_a_host_bound_route_refuses_a_request_without_host() -> None:
    store, wallet = FakeStore(), FakeWallet()
    hosted = RouteRule(name="hosted", price=4, hosts=("paid.example.com",), path_prefix="/h/")
    gate = Gate(Pricing((hosted,)), GateSettings("sat", (MINT,)), wallet, store)
    runner, port = await start_site(ForwardAuth(gate).app(), "127.0.0.1:0")
    try:
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
            sent = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/h/x"}
            r = await client.get("/", headers=sent)
            assert r.status_code == 400 and r.json()["reason"] == "missing_host"
            r = await client.get("/", headers={**sent, "X-Forwarded-Host": "Paid.Example.Com."})
            assert r.status_code == 402
            r = await client.get("/", headers={**sent, "X-Forwarded-Host": "paid.example.com:1:2"})
            assert r.status_code == 400 and r.json()["reason"] == "bad_host"
    finally:
        await runner.cleanup()
