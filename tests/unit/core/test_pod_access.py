"""Tier routes through the gate: a paid request buys a pod, reaches it once Running, tops up
(only its payer, with the pod's key), and the status path answers from memory."""

import json
from typing import Any

import pytest

from paygress.core.gate import Gate, GateSettings
from paygress.core.model import Allow, Answer, HttpRequest
from paygress.core.pod_access import DurablePaidEnds, PodAccess, PodPaths
from paygress.core.ports import (
    PodRequest,
    PodsError,
    PodsRefused,
    PodState,
    PodsUnavailable,
)
from paygress.core.pricing import Mode, Pricing, RouteRule
from paygress.core.tiers import Tier

from .fakes import MINT, FakeStore, FakeWallet, make_token

TIER = Tier("small", "500m", "512Mi", ("nginx:1", "app:2"), 8080, 1000, 10, 600)
PODS = RouteRule(name="pods", price=TIER.min_payment, mode=Mode.POD, path_prefix="/pod/", tier=TIER)
OWNER_KEY = b"k" * 32


class FakePods:
    """The Pods port in memory; counts every call."""

    def __init__(self) -> None:
        self.pods: dict[str, PodState] = {}
        self.created: list[PodRequest] = []
        self.patched: list[tuple[str, float]] = []
        self.calls = 0
        self.error: PodsError | None = None

    def state(self, name: str) -> PodState | None:
        return self.pods.get(name)

    async def ensure(self, request: PodRequest) -> PodState:
        self.calls += 1
        if self.error is not None:
            raise self.error
        self.created.append(request)
        return self.pods.setdefault(
            request.name, PodState(request.name, "Pending", expires_at=request.expires_at)
        )

    async def patch_expiry(self, name: str, expires_at: float) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error
        self.patched.append((name, expires_at))

    def run(self, name: str, **changes: Any) -> None:
        self.pods[name] = PodState(name, "Running", ip="10.1.2.3", ready=True, **changes)


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def setup() -> tuple[Gate, FakePods, FakeWallet, Clock]:
    store, wallet, pods, clock = FakeStore(), FakeWallet(), FakePods(), Clock()
    wallet.store = store
    access = PodAccess(pods, PodPaths(), "sat", (MINT,), (TIER,), clock, owner_key=OWNER_KEY)
    gate = Gate(
        Pricing((PODS,)), GateSettings("sat", (MINT,)), wallet, store, clock=clock, pods=access
    )
    return gate, pods, wallet, clock


def req(path: str = "/pod/x", **headers: str) -> HttpRequest:
    return HttpRequest("GET", "h", path, headers)


def data(decision: Answer) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(decision.body)
    return result


async def running_pod(
    gate: Gate, pods: FakePods, amounts: tuple[int, ...] = (32,)
) -> tuple[str, str, str]:
    """A paid, Running pod: (token, pod name, pod key as its payer received it)."""
    token = make_token(amounts)
    first = await gate.check(req(**{"x-cashu": token}))
    assert isinstance(first, Answer) and first.status == 503
    name = pods.created[-1].name
    pods.run(name)
    allowed = await gate.check(req(**{"x-cashu": token}))
    assert isinstance(allowed, Allow)
    return token, name, dict(allowed.response_headers)["x-paygress-pod-key"]


async def test_402_lists_the_tier_and_its_minimum() -> None:
    gate, *_ = setup()
    decision = await gate.check(req())
    assert isinstance(decision, Answer) and decision.status == 402
    assert data(decision)["payment"]["amount"] == 10  # 10 s at 1 sat/s
    assert "small pod" in data(decision)["payment"]["buys"]


async def test_paid_request_creates_pod_then_503_until_running_then_routes() -> None:
    gate, pods, _, clock = setup()
    token = make_token((32,))  # 32 s
    decision = await gate.check(req(**{"x-cashu": token}))
    assert isinstance(decision, Answer) and decision.status == 503
    headers = dict(decision.headers)
    assert headers["retry-after"] == "2"
    assert data(decision)["reason"] == "pod_starting"
    [created] = pods.created
    assert created.image == "nginx:1" and created.expires_at == clock.now + 32
    assert headers["x-paygress-pod-key"]  # the payer may top up before the pod runs
    pods.run(created.name)
    decision = await gate.check(req(**{"x-cashu": token, "x-paygress-pod-key": "mine"}))
    assert isinstance(decision, Allow)
    up = dict(decision.upstream_headers)
    assert up["x-envoy-original-dst-host"] == "10.1.2.3:8080"
    assert up["x-paygress-pod"] == created.name
    assert "x-paygress-pod-key" not in up
    assert set(decision.remove_headers) == {"x-cashu", "x-paygress-pod-key"}
    response = dict(decision.response_headers)
    assert response["x-paygress-expires"] == str(int(clock.now + 32))
    assert response["x-paygress-pod-key"] == headers["x-paygress-pod-key"]
    assert len(pods.created) == 1
    clock.now += 33
    decision = await gate.check(req(**{"x-cashu": token}))
    assert isinstance(decision, Answer) and decision.status == 402
    assert data(decision)["reason"] == "expired"


async def test_a_token_in_authorization_does_not_reach_the_pod() -> None:
    gate, pods, _, _ = setup()
    token, _, _ = await running_pod(gate, pods)
    decision = await gate.check(req(authorization=f"Cashu {token}"))
    assert isinstance(decision, Allow) and decision.remove_headers == ("authorization",)


async def test_pod_keys_are_per_pod_and_agree_across_replicas() -> None:
    gate, pods, _, _ = setup()
    _, name, key = await running_pod(gate, pods)
    other = PodAccess(FakePods(), PodPaths(), "sat", (MINT,), (TIER,), Clock(), owner_key=OWNER_KEY)
    assert other.key_of(name) == key  # another replica of the same seed
    assert other.key_of(name + "x") != key
    stranger = PodAccess(
        FakePods(), PodPaths(), "sat", (MINT,), (TIER,), Clock(), owner_key=b"x" * 32
    )
    assert stranger.key_of(name) != key


async def test_lifetime_is_clamped_and_minimum_enforced() -> None:
    gate, pods, _, clock = setup()
    await gate.check(req(**{"x-cashu": make_token((512, 256))}))  # 768 s, max 600
    assert pods.created[0].expires_at == clock.now + 600
    decision = await gate.check(req(**{"x-cashu": make_token((8,))}))
    assert isinstance(decision, Answer) and decision.status == 400
    assert data(decision)["reason"] == "insufficient"


async def test_image_must_be_offered() -> None:
    gate, pods, wallet, _ = setup()
    decision = await gate.check(req(**{"x-cashu": make_token((16,)), "x-paygress-image": "x:1"}))
    assert isinstance(decision, Answer) and data(decision)["reason"] == "image_not_allowed"
    assert wallet.calls == 0
    await gate.check(req(**{"x-cashu": make_token((16,)), "x-paygress-image": "app:2"}))
    assert pods.created[0].image == "app:2"


async def test_top_up_by_the_payer_extends_the_pod_and_every_grant_that_reaches_it() -> None:
    gate, pods, _, clock = setup()
    first, name, key = await running_pod(gate, pods)
    clock.now += 20
    second = make_token((16,))
    headers = {"x-cashu": second, "x-paygress-pod": name, "x-paygress-pod-key": key}
    decision = await gate.check(req(**headers))
    assert isinstance(decision, Allow)
    new_end = 1_000_000 + 32 + 16
    assert pods.patched == [(name, new_end)]
    assert dict(decision.response_headers)["x-paygress-expires"] == str(new_end)
    assert "x-paygress-pod-key" in decision.remove_headers
    clock.now = 1_000_000 + 40  # past the first payment's end, within the top-up
    assert isinstance(await gate.check(req(**{"x-cashu": first})), Allow)
    assert len(pods.created) == 1


@pytest.mark.parametrize(
    ("key", "reason"),
    [(None, "pod_key_required"), ("", "pod_key_required"), ("0" * 64, "pod_key_invalid")],
)
async def test_a_top_up_without_the_pods_key_is_refused_before_any_mint_call(
    key: str | None, reason: str
) -> None:
    gate, pods, wallet, _ = setup()
    _, victim, _ = await running_pod(gate, pods)
    calls, kube_calls = wallet.calls, pods.calls
    headers = {"x-cashu": make_token((16,)), "x-paygress-pod": victim}
    if key is not None:
        headers["x-paygress-pod-key"] = key
    decision = await gate.check(req(**headers))
    assert isinstance(decision, Answer) and decision.status == 403
    assert data(decision)["reason"] == reason
    assert (wallet.calls, pods.calls, pods.patched) == (calls, kube_calls, [])


async def test_the_key_of_ones_own_pod_opens_no_other() -> None:
    gate, pods, wallet, _ = setup()
    _, victim, _ = await running_pod(gate, pods)
    _, mine, my_key = await running_pod(gate, pods, (16,))
    calls = wallet.calls
    headers = {"x-cashu": make_token((16,)), "x-paygress-pod": victim, "x-paygress-pod-key": my_key}
    decision = await gate.check(req(**headers))
    assert isinstance(decision, Answer) and data(decision)["reason"] == "pod_key_invalid"
    assert wallet.calls == calls and mine != victim


async def test_top_up_of_an_unknown_pod_is_404_before_any_payment() -> None:
    gate, _, wallet, _ = setup()
    access = gate.pods
    assert access is not None
    key = access.key_of("pg-nope")
    headers = {"x-cashu": make_token((16,)), "x-paygress-pod": "pg-nope", "x-paygress-pod-key": key}
    decision = await gate.check(req(**headers))
    assert isinstance(decision, Answer) and decision.status == 404
    assert data(decision)["reason"] == "unknown_pod"
    assert wallet.calls == 0


async def test_a_failed_patch_after_a_top_up_keeps_the_paid_end_durable() -> None:
    gate, pods, _, _ = setup()
    _, name, key = await running_pod(gate, pods)
    pods.error = PodsUnavailable("api down", 503)
    headers = {"x-cashu": make_token((16,)), "x-paygress-pod": name, "x-paygress-pod-key": key}
    decision = await gate.check(req(**headers))
    assert isinstance(decision, Allow)  # paid: the answer does not depend on the PATCH
    assert await DurablePaidEnds(gate.store)(name) == 1_000_000 + 32 + 16
    assert await DurablePaidEnds(gate.store)("pg-other") == 0.0


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (PodsUnavailable("down", 503), "kubernetes_unavailable"),
        (PodsRefused("forbidden", 403), "kubernetes_refused"),
    ],
)
async def test_failed_create_keeps_the_grant_and_a_retry_creates_without_paying_again(
    error: PodsError, reason: str
) -> None:
    gate, pods, wallet, _ = setup()
    token = make_token((16,))
    pods.error = error
    decision = await gate.check(req(**{"x-cashu": token}))
    assert isinstance(decision, Answer) and decision.status == 503
    assert data(decision)["reason"] == reason and dict(decision.headers)["retry-after"]
    pods.error = None
    decision = await gate.check(req(**{"x-cashu": token}))
    assert isinstance(decision, Answer) and data(decision)["reason"] == "pod_starting"
    assert wallet.calls == 1 and len(pods.created) == 1


async def test_a_terminating_pod_is_not_routed_to() -> None:
    gate, pods, _, _ = setup()
    token, name, _ = await running_pod(gate, pods)
    pods.run(name, terminating=True)
    decision = await gate.check(req(**{"x-cashu": token}))
    assert isinstance(decision, Answer) and decision.status == 503
    assert data(decision)["reason"] == "pod_terminating"
    del pods.pods[name]  # gone while paid time is left: made again
    await gate.check(req(**{"x-cashu": token}))
    assert len(pods.created) == 2


async def test_offers_and_status_are_answered_from_memory_without_payment() -> None:
    from paygress.metrics import PrometheusMetrics

    gate, pods, _, _ = setup()
    gate.metrics = metrics = PrometheusMetrics()
    offers = await gate.check(req("/.well-known/paygress/offers"))
    assert isinstance(offers, Answer) and offers.status == 200
    assert data(offers)["tiers"][0]["tier"] == "small"
    await gate.check(req(**{"x-cashu": make_token((16,))}))
    name = pods.created[0].name
    calls = pods.calls
    status = await gate.check(req(f"/.well-known/paygress/pods/{name}"))
    assert isinstance(status, Answer) and status.status == 200
    assert data(status)["phase"] == "Pending" and data(status)["terminating"] is False
    assert "x-paygress-pod-key" not in dict(status.headers)
    for path, code, reason in [
        ("pg-nope", 404, "pod_not_found"),
        ("", 404, "pod_not_found"),
        ("Bad_Name!", 400, "bad_pod_name"),
        ("a" * 64, 400, "bad_pod_name"),
        ("x/y", 400, "bad_pod_name"),
    ]:
        answer = await gate.check(req(f"/.well-known/paygress/pods/{path}"))
        assert isinstance(answer, Answer) and (answer.status, answer.reason) == (code, reason), path
    assert pods.calls == calls  # memory only
    assert metrics.checks.decisions.get(("answer", "offers"), 0) == 1
    assert metrics.checks.decisions.get(("deny", "pod_not_found"), 0) == 2


async def test_a_listed_client_still_pays_for_a_pod() -> None:
    import ipaddress

    from paygress.core.free_clients import FreeClient, FreeClients

    gate, pods, wallet, _ = setup()
    everyone = FreeClient("everyone", networks=(ipaddress.ip_network("0.0.0.0/0"),))
    gate.pricing.free_clients = FreeClients((everyone,))
    decision = await gate.check(HttpRequest("GET", "h", "/pod/x", {}, client="10.0.0.1"))
    assert isinstance(decision, Answer) and decision.status == 402, "a pod needs a paid grant"
    assert not pods.created and wallet.calls == 0


async def test_a_pod_request_strips_the_token_and_aliases_of_trusted_headers() -> None:
    gate, pods, _, _ = setup()
    token = make_token((32,))
    await gate.check(req(**{"x-cashu": token}))
    pods.run(pods.created[0].name)
    forged = {"authorization": f"Cashu {token}", "x.paygress.paid": "1", "x-paygress-unit": "x"}
    decision = await gate.check(req(**forged))
    assert isinstance(decision, Allow)
    assert {"authorization", "x.paygress.paid"} <= set(decision.remove_headers)
    # Set by Paygress itself: overwritten, not removed.
    assert "x-paygress-unit" not in decision.remove_headers
