"""The gate's free answers: free routes, listed clients, refused hosts, and what never reaches
the upstream on any route (tokens, forged or aliased trusted headers, the free-client key)."""

import hashlib
import ipaddress
import json

import pytest

from paygress.core.free_clients import FreeClient, FreeClients
from paygress.core.gate import Gate, GateSettings
from paygress.core.model import Allow, Answer, HttpRequest
from paygress.core.pricing import Pricing, RouteRule
from paygress.metrics import PrometheusMetrics

from .fakes import MINT, FakeStore, FakeWallet, make_token

API = RouteRule(name="api", price=4, path_prefix="/api/")
OTHER = RouteRule(name="other", price=4, path_prefix="/other/")
HOSTED = RouteRule(name="hosted", price=4, hosts=("paid.example.com",), path_prefix="/h/")
KEY = "0123456789abcdef0123456789abcdef"
OFFICE = FreeClient("office", networks=(ipaddress.ip_network("10.0.0.0/8"),))
PARTNER = FreeClient(
    "partner", key_sha256=hashlib.sha256(KEY.encode()).digest(), routes=frozenset({"api"})
)


def make_gate(
    *, free: bool = True, dry_run: bool = False
) -> tuple[Gate, FakeWallet, PrometheusMetrics]:
    store, wallet, metrics = FakeStore(), FakeWallet(), PrometheusMetrics()
    wallet.store = store
    clients = FreeClients((OFFICE, PARTNER)) if free else None
    gate = Gate(
        Pricing((API, OTHER, HOSTED), clients),
        GateSettings(unit="sat", mints=(MINT,), dry_run=dry_run),
        wallet,
        store,
        metrics=metrics,
    )
    return gate, wallet, metrics


def req(path: str, client: str = "203.0.113.7", host: str = "h", **headers: str) -> HttpRequest:
    return HttpRequest("GET", host, path, headers, client=client)


@pytest.mark.parametrize(
    ("headers", "removed"),
    [
        ({"x-cashu": "cashuBxyz"}, {"x-cashu"}),
        ({"authorization": "Cashu cashuBxyz"}, {"authorization"}),
        ({"authorization": "Bearer cashuAxyz"}, {"authorization"}),
        ({"authorization": "Basic dTpw"}, set()),
        ({"authorization": "Bearer eyJhbGciOi"}, set()),
        (
            {"x_paygress_paid": "9", "x.paygress.route": "api"},
            {"x_paygress_paid", "x.paygress.route"},
        ),
        ({"x-paygress-free-client": "office"}, {"x-paygress-free-client"}),
        ({"x-paygress-key": KEY}, {"x-paygress-key"}),
        ({"x.paygress.key": KEY}, {"x.paygress.key"}),
        ({"x-paygress-pod-key": "ab" * 32}, {"x-paygress-pod-key"}),  # the payer's pod key
    ],
)
async def test_a_free_route_strips_tokens_forgeries_and_the_key(
    headers: dict[str, str], removed: set[str]
) -> None:
    gate, wallet, _ = make_gate()
    decision = await gate.check(req("/public", **headers))
    assert isinstance(decision, Allow) and decision.reason == "free"
    assert set(decision.remove_headers) == removed
    assert decision.upstream_headers == ()
    assert wallet.calls == 0


async def test_a_paid_request_strips_aliases_and_the_key_too() -> None:
    gate, *_ = make_gate()
    token = make_token((8,))
    decision = await gate.check(
        req("/other/x", **{"x-cashu": token, "x.paygress.paid": "1000", "x-paygress-key": "no"})
    )
    assert isinstance(decision, Allow) and decision.reason == "paid"
    assert {"x-cashu", "x.paygress.paid", "x-paygress-key"} <= set(decision.remove_headers)


async def test_a_listed_address_passes_a_priced_route_and_the_upstream_is_told() -> None:
    gate, wallet, metrics = make_gate()
    decision = await gate.check(
        req("/api/x", client="10.9.8.7", **{"x-cashu": "cashuBxyz", "x-paygress-paid": "5"})
    )
    assert isinstance(decision, Allow) and decision.reason == "free_client"
    assert dict(decision.upstream_headers) == {
        "x-paygress-free-client": "office",
        "x-paygress-route": "api",
    }
    # The token is not spent, nor forwarded; a forged paid header is removed.
    assert set(decision.remove_headers) == {"x-cashu", "x-paygress-paid"}
    assert wallet.calls == 0
    assert metrics.checks.decisions.get(("allow", "free_client"), 0) == 1


async def test_a_listed_key_passes_its_routes_only_and_is_never_forwarded() -> None:
    gate, *_ = make_gate()
    decision = await gate.check(req("/api/x", **{"x-paygress-key": KEY}))
    assert isinstance(decision, Allow) and decision.reason == "free_client"
    assert dict(decision.upstream_headers)["x-paygress-free-client"] == "partner"
    assert decision.remove_headers == ("x-paygress-key",)
    decision = await gate.check(req("/other/x", **{"x-paygress-key": KEY}))
    assert isinstance(decision, Answer) and decision.status == 402
    decision = await gate.check(req("/api/x", **{"x-paygress-key": KEY[:-1]}))
    assert isinstance(decision, Answer) and decision.status == 402


async def test_forged_client_headers_earn_nothing() -> None:
    """The address is the proxy's report (`HttpRequest.client`), never a header."""
    gate, *_ = make_gate()
    forged = {
        "x-forwarded-for": "10.0.0.1",
        "x-real-ip": "10.0.0.1",
        "x-paygress-free-client": "office",
    }
    decision = await gate.check(req("/api/x", client="203.0.113.7", **forged))
    assert isinstance(decision, Answer) and decision.status == 402


async def test_without_free_clients_nothing_is_free_and_no_key_is_looked_for() -> None:
    gate, *_ = make_gate(free=False)
    decision = await gate.check(req("/api/x", client="10.9.8.7", **{"x-paygress-key": KEY}))
    assert isinstance(decision, Answer) and decision.status == 402
    decision = await gate.check(req("/public", **{"x-paygress-key": KEY}))
    assert isinstance(decision, Allow) and decision.remove_headers == ()


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("paid.example.com:80:80", "bad_host"),
        ("paid.example.com%2e", "bad_host"),
        ("", "missing_host"),
    ],
)
async def test_a_bad_or_missing_host_on_a_host_bound_route_is_400(host: str, reason: str) -> None:
    gate, wallet, _ = make_gate()
    decision = await gate.check(req("/h/x", host=host))
    assert isinstance(decision, Answer) and decision.status == 400
    body = json.loads(decision.body)
    assert body["reason"] == reason and body["error"] == "bad_request"
    assert "x-cashu" not in dict(decision.headers), "not a payment problem"
    decision = await gate.check(req("/h/x", host="PAID.Example.com.:8000"))
    assert isinstance(decision, Answer) and decision.status == 402
    assert wallet.calls == 0


async def test_dry_run_strips_aliases_and_the_key() -> None:
    gate, *_ = make_gate(dry_run=True)
    decision = await gate.check(
        req("/other/x", **{"x.paygress.paid": "9", "x-paygress-key": "nope", "x-cashu": "junk"})
    )
    assert isinstance(decision, Allow) and decision.reason == "dry_run"
    assert set(decision.remove_headers) == {"x.paygress.paid", "x-paygress-key", "x-cashu"}
