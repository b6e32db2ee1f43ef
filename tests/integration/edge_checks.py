"""What every ingress must show, run through Envoy (test_payment_gate) and through NGINX and
Traefik (test_forward_auth): no spelling of a host or path dodges a price, HEAD is priced like
GET, no token reaches an upstream, and listed clients pass by address or key while a spoofed
address earns nothing. The routes are those of test_payment_gate.gate_config, the free clients
FREE_CLIENTS below.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from tests.integration import raw_http
from tests.peers.upstream import EchoUpstream

# The free clients: the loopback address 127.0.0.2 (a test binds its client side there), and
# a partner's API key on the `api` route only.
FREE_ADDRESS = "127.0.0.2"
FREE_KEY = "partner-key-2f6c0a51e8d94b7cbd1e43a8b9c07f12"
FREE_CLIENTS = {
    "clients": [
        {"name": "office", "cidrs": [f"{FREE_ADDRESS}/32"]},
        {
            "name": "partner",
            "api_key_sha256": hashlib.sha256(FREE_KEY.encode()).hexdigest(),
            "routes": ["api"],
        },
    ]
}

# Spellings of the host of the `hosted` route that every proxy passes on, and Paygress prices.
PRICED_HOST_SPELLINGS = [
    raw_http.get("/hosted/x", "paid.example.com"),
    raw_http.get("/hosted/x", "PAID.Example.COM"),
    raw_http.get("/hosted/x", "paid.example.com."),
    raw_http.get("/hosted/x", "paid.example.com:8000"),
    raw_http.get("/hosted/x", "paid.example.com.:80"),
    # The request line's authority wins over Host, at the proxy and for the price.
    raw_http.get("http://paid.example.com/hosted/x", "free.example.com"),
]
# Spellings of /api/x (`api` is case-insensitive): `;` parameters and letter case.
PRICED_PATH_SPELLINGS = [
    "/api;/x",
    "/api;jsessionid=1/x",
    "/public/..;/api/x",
    "/API/x",
    "/Api;v=2/X",
]
TOKEN_CARRIERS = {
    "x-cashu": {"X-Cashu": "cashuBnot-even-a-token"},
    "authorization-cashu": {"Authorization": "Cashu cashuBsomething"},
    "authorization-bearer-cashu": {"Authorization": "Bearer cashuAsomething"},
}


@dataclass
class Target:
    """One proxy in front of Paygress: a client aimed at it, the upstream behind it, and the
    number of swaps the mint has seen."""

    http: httpx.AsyncClient
    upstream: EchoUpstream
    swaps: Callable[[], int]

    def seen(self) -> dict[str, Any]:
        """Headers of the last request the upstream received."""
        headers: dict[str, Any] = self.upstream.requests[-1]["headers"]
        return headers

    def from_address(self, address: str) -> httpx.AsyncClient:
        """A client whose connections come from `address` (loopback: any 127.x works)."""
        transport = httpx.AsyncHTTPTransport(local_address=address)
        return httpx.AsyncClient(
            base_url=self.http.base_url, transport=transport, trust_env=False, timeout=15
        )


async def unserved_status(target: Target, request: bytes) -> int:
    """The status `request` (sent raw) gets, asserting that it never reached the upstream."""
    before = target.upstream.count
    status = await raw_http.send_raw(target.http.base_url, request)
    assert target.upstream.count == before, f"{status}: the upstream was reached"
    return status


async def head_is_priced_like_get(target: Target) -> None:
    """`reports` lists GET only: HEAD costs the same, POST nothing."""
    assert (await target.http.head("/reports/1")).status_code == 402
    assert (await target.http.get("/reports/1")).status_code == 402
    assert (await target.http.post("/reports/1")).status_code == 200


async def no_token_reaches_a_free_upstream(target: Target, headers: dict[str, str]) -> None:
    r = await target.http.get("/public/x", headers=headers)
    assert r.status_code == 200, r.text
    assert "x-cashu" not in target.seen() and "authorization" not in target.seen()
    await target.http.get("/public/x", headers={"Authorization": "Basic dTpw"})
    assert target.seen()["authorization"] == "Basic dTpw", "the app's own credentials pass"


async def a_listed_address_passes_and_a_spoofed_one_does_not(target: Target) -> None:
    swaps = target.swaps()
    async with target.from_address(FREE_ADDRESS) as office:
        r = await office.get("/api/x", headers={"X-Cashu": "cashuBkept-not-spent"})
    assert r.status_code == 200, r.text
    seen = target.seen()
    assert seen["x-paygress-free-client"] == "office" and seen["x-paygress-route"] == "api"
    assert "x-paygress-paid" not in seen and "x-cashu" not in seen
    before = target.upstream.count
    for forged in (
        {"X-Forwarded-For": FREE_ADDRESS},
        {"X-Forwarded-For": f"{FREE_ADDRESS}, {FREE_ADDRESS}"},
        {"X-Real-IP": FREE_ADDRESS},
        {"X-Paygress-Free-Client": "office"},
    ):
        r = await target.http.get("/api/x", headers=forged)
        assert r.status_code == 402, (forged, r.text)
    assert target.upstream.count == before
    assert target.swaps() == swaps, "the token of a listed client is not spent"
    await target.http.get("/public/x", headers={"X-Paygress-Free-Client": "office"})
    assert "x-paygress-free-client" not in target.seen(), "nor is a forged one forwarded"


async def a_listed_key_passes_its_route_and_is_never_forwarded(target: Target) -> None:
    key = {"X-Paygress-Key": FREE_KEY}
    r = await target.http.get("/api/x", headers=key)
    assert r.status_code == 200, r.text
    assert target.seen()["x-paygress-free-client"] == "partner"
    assert "x-paygress-key" not in target.seen() and FREE_KEY not in str(target.seen())
    assert (await target.http.get("/live/x", headers=key)).status_code == 402, "not its route"
    r = await target.http.get("/api/x", headers={"X-Paygress-Key": FREE_KEY + "x"})
    assert r.status_code == 402
    assert (await target.http.get("/public/x", headers=key)).status_code == 200
    assert "x-paygress-key" not in target.seen()
