"""Tier routes through the gate: a paid request buys a pod, reaches it once Running, tops up."""

import json
from typing import Any

from paygress.core.gate import Gate, GateSettings
from paygress.core.model import Allow, Deny, HttpRequest
from paygress.core.pod_access import PodAccess, PodPaths
from paygress.core.ports import PodRequest, PodState, PodsUnavailable
from paygress.core.pricing import Mode, Pricing, RouteRule
from paygress.core.tiers import Tier

from .fakes import MINT, FakeStore, FakeWallet, make_token

TIER = Tier("small", "500m", "512Mi", ("nginx:1", "app:2"), 8080, 1000, 10, 600)
PODS = RouteRule(name="pods", price=TIER.min_payment, mode=Mode.POD, path_prefix="/pod/", tier=TIER)


class FakePods:
    def __init__(self) -> None:
        self.pods: dict[str, PodState] = {}
        self.created: list[PodRequest] = []
        self.extended: list[tuple[str, float]] = []
        self.down = False

    def state(self, name: str) -> PodState | None:
        return self.pods.get(name)

    async def ensure(self, request: PodRequest) -> PodState:
        if self.down:
            raise PodsUnavailable("api down")
        self.created.append(request)
        return self.pods.setdefault(
            request.name, PodState(request.name, "Pending", expires_at=request.expires_at)
        )

    async def refresh(self, name: str) -> PodState | None:
        return self.pods.get(name)

    async def extend(self, name: str, expires_at: float) -> None:
        self.extended.append((name, expires_at))

    def run(self, name: str) -> None:
        self.pods[name] = PodState(name, "Running", ip="10.1.2.3", ready=True)


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def setup() -> tuple[Gate, FakePods, FakeWallet, Clock]:
    store, wallet, pods, clock = FakeStore(), FakeWallet(), FakePods(), Clock()
    wallet.store = store
    access = PodAccess(pods, PodPaths(), "sat", (MINT,), (TIER,), clock)
    gate = Gate(
        Pricing((PODS,)), GateSettings("sat", (MINT,)), wallet, store, clock=clock, pods=access
    )
    return gate, pods, wallet, clock


def req(path: str = "/pod/x", **headers: str) -> HttpRequest:
    return HttpRequest("GET", "h", path, headers)


def data(decision: Deny) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(decision.body)
    return result


async def test_402_lists_the_tier_and_its_minimum() -> None:
    gate, *_ = setup()
    decision = await gate.check(req())
    assert isinstance(decision, Deny) and decision.status == 402
    assert data(decision)["payment"]["amount"] == 10  # 10 s at 1 sat/s
    assert "small pod" in data(decision)["payment"]["buys"]


async def test_paid_request_creates_pod_then_503_until_running_then_routes() -> None:
    gate, pods, _, clock = setup()
    token = make_token((32,))  # 32 s
    decision = await gate.check(req(**{"x-cashu": token}))
    assert isinstance(decision, Deny) and decision.status == 503
    assert dict(decision.headers)["retry-after"] == "2"
    assert data(decision)["reason"] == "pod_starting"
    [created] = pods.created
    assert created.image == "nginx:1" and created.expires_at == clock.now + 32
    pods.run(created.name)
    decision = await gate.check(req(**{"x-cashu": token}))
    assert isinstance(decision, Allow)
    up = dict(decision.upstream_headers)
    assert up["x-envoy-original-dst-host"] == "10.1.2.3:8080"
    assert up["x-paygress-pod"] == created.name
    assert dict(decision.response_headers)["x-paygress-expires"] == str(int(clock.now + 32))
    assert len(pods.created) == 1
    clock.now += 33
    decision = await gate.check(req(**{"x-cashu": token}))
    assert isinstance(decision, Deny) and decision.status == 402
    assert data(decision)["reason"] == "expired"


async def test_lifetime_is_clamped_and_minimum_enforced() -> None:
    gate, pods, _, clock = setup()
    await gate.check(req(**{"x-cashu": make_token((512, 256))}))  # 768 s, max 600
    assert pods.created[0].expires_at == clock.now + 600
    decision = await gate.check(req(**{"x-cashu": make_token((8,))}))
    assert isinstance(decision, Deny) and decision.status == 400
    assert data(decision)["reason"] == "insufficient"


async def test_image_must_be_offered() -> None:
    gate, pods, wallet, _ = setup()
    decision = await gate.check(req(**{"x-cashu": make_token((16,)), "x-paygress-image": "x:1"}))
    assert isinstance(decision, Deny) and data(decision)["reason"] == "image_not_allowed"
    assert wallet.calls == 0
    await gate.check(req(**{"x-cashu": make_token((16,)), "x-paygress-image": "app:2"}))
    assert pods.created[0].image == "app:2"


async def test_top_up_extends_the_pod_and_every_grant_that_reaches_it() -> None:
    gate, pods, _, clock = setup()
    first = make_token((32,))
    await gate.check(req(**{"x-cashu": first}))
    name = pods.created[0].name
    pods.run(name)
    clock.now += 20
    second = make_token((16,))
    decision = await gate.check(req(**{"x-cashu": second, "x-paygress-pod": name}))
    assert isinstance(decision, Allow)
    new_end = 1_000_000 + 32 + 16
    assert pods.extended == [(name, new_end)]
    assert dict(decision.response_headers)["x-paygress-expires"] == str(new_end)
    clock.now = 1_000_000 + 40  # past the first payment's end, within the top-up
    assert isinstance(await gate.check(req(**{"x-cashu": first})), Allow)
    assert len(pods.created) == 1


async def test_top_up_of_an_unknown_pod_is_404_before_any_payment() -> None:
    gate, _, wallet, _ = setup()
    decision = await gate.check(req(**{"x-cashu": make_token((16,)), "x-paygress-pod": "pg-nope"}))
    assert isinstance(decision, Deny) and decision.status == 404
    assert data(decision)["reason"] == "unknown_pod"
    assert wallet.calls == 0


async def test_failed_create_keeps_the_grant_and_a_retry_creates_without_paying_again() -> None:
    gate, pods, wallet, _ = setup()
    token = make_token((16,))
    pods.down = True
    decision = await gate.check(req(**{"x-cashu": token}))
    assert isinstance(decision, Deny) and decision.status == 503
    assert data(decision)["reason"] == "kubernetes_unavailable"
    pods.down = False
    decision = await gate.check(req(**{"x-cashu": token}))
    assert isinstance(decision, Deny) and data(decision)["reason"] == "pod_starting"
    assert wallet.calls == 1 and len(pods.created) == 1


async def test_offers_and_status_are_answered_without_payment() -> None:
    from paygress.metrics import PrometheusMetrics

    gate, pods, _, _ = setup()
    gate.metrics = metrics = PrometheusMetrics()
    offers = await gate.check(req("/.well-known/paygress/offers"))
    assert isinstance(offers, Deny) and offers.status == 200
    assert data(offers)["tiers"][0]["tier"] == "small"
    await gate.check(req(**{"x-cashu": make_token((16,))}))
    name = pods.created[0].name
    status = await gate.check(req(f"/.well-known/paygress/pods/{name}"))
    assert isinstance(status, Deny) and status.status == 200
    assert data(status)["phase"] == "Pending"
    missing = await gate.check(req("/.well-known/paygress/pods/pg-nope"))
    assert isinstance(missing, Deny) and missing.status == 404
    assert metrics.checks.decisions.get(("answer", "offers"), 0) == 1
    assert metrics.checks.decisions.get(("deny", "pod_not_found"), 0) == 1
