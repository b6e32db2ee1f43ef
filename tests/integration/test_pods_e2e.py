"""Pods for payment end to end: client → real Envoy (deploy/envoy/envoy-pods.yaml) → Paygress →
real nutshell mint (through a counting proxy), and Kubernetes through the real
kubernetes_asyncio client: the strict fake API server always, and a real cluster when
``PAYGRESS_TEST_KUBECONFIG`` is set (opt-in; see ``RealCluster`` in tests/peers/kubeapi).

What a test observes of pods goes through the Kubernetes API (``stack.seen``), so the same
flow runs on both. What only a fake can do (the kubelet's report of a Running pod, injected
failures, counting the requests that reach the API server) goes through ``stack.fake``; tests
that need it run on the fake only. On the fake, a Running pod's address is 127.0.0.1 and the
tier's port the echo upstream's, so Envoy's ORIGINAL_DST cluster really sends the payer's
traffic to "their pod".

Against a real cluster (pods must be reachable from this host at their IPs, e.g. on a node)::

    PAYGRESS_TEST_KUBECONFIG=~/.kube/admin.conf \\
    PAYGRESS_TEST_IMAGE=nginxinc/nginx-unprivileged:1.27-alpine PAYGRESS_TEST_PORT=8080 \\
    .venv/bin/pytest -m real_cluster tests/integration/test_pods_e2e.py
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import hashlib
import hmac
import os
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from paygress.cashu.nut13 import Seed
from paygress.cashu.nut18 import decode_payment_request
from tests.peers.envoy import EnvoyProxy
from tests.peers.kubeapi import FakeKubeApi, PodObserver, RealCluster
from tests.peers.mint import NutshellMint
from tests.peers.paygress import UNTHROTTLED, PaygressProcess
from tests.peers.procs import REPO_ROOT, free_port
from tests.peers.proxy import CountingProxy
from tests.peers.upstream import EchoUpstream
from tests.peers.wallet import CashuWallet

MNEMONIC = "skin egg twice improve attend aim swim mask market huge portion stomach"
NS = "work"
IMAGE = "ghcr.io/example/app:1"
KUBECONFIG_VAR = "PAYGRESS_TEST_KUBECONFIG"
EXPIRES = "paygress.io/expires-at"
MINT_FEE = 1  # NUTSHELL_DEFAULT_INPUT_FEE_PPK of one token under 1,024 sat, rounded up


def pod_key(pod: str) -> str:
    """What the operator (who holds the seed) can compute: a pod's key."""
    key = Seed.from_mnemonic(MNEMONIC).purpose_key("pod-owner")
    return hmac.new(key, pod.encode(), hashlib.sha256).hexdigest()


@dataclass
class Target:
    """Where the pods live: the fake API server, or a namespace on a real cluster."""

    name: str
    seen: PodObserver
    kubeconfig: Path  # Paygress's: the service account bound to the chart's Role
    namespace: str
    image: str
    port: int  # where the pod serves
    lifetime: int  # seconds a first payment buys: a real pod needs time to start
    fake: FakeKubeApi | None = None

    async def run(self, name: str) -> None:
        """The pod Running: the fake's kubelet reports it, a real one is waited for."""
        if self.fake is not None:
            self.fake.hooks.set_running(self.namespace, name, ip="127.0.0.1")
            return
        await self.seen.wait(name, "Running", _running, within=180)


def _running(pod: dict[str, Any] | None) -> bool:
    status = (pod or {}).get("status") or {}
    return status.get("phase") == "Running" and bool(status.get("podIP"))


@dataclass
class PodStack:
    target: Target
    proxy: CountingProxy
    paygress: PaygressProcess
    envoy: EnvoyProxy
    upstream: EchoUpstream
    wallet: CashuWallet
    mint: NutshellMint
    http: httpx.AsyncClient

    @property
    def seen(self) -> PodObserver:
        return self.target.seen

    @property
    def fake(self) -> FakeKubeApi:
        if self.target.fake is None:
            pytest.skip("needs the fake API server's hooks")
        return self.target.fake

    async def token_for(self, seconds: int) -> str:
        """A token that buys `seconds` at the tier's 1 sat/s: the seconds plus the test mint's
        input fee of spending it (1 sat for any token under 1,024 sat, at 100 ppk)."""
        amount = seconds + MINT_FEE
        return await self.wallet.token(self.mint.url, amount, token_mint=self.proxy.url)

    def logged(self, text: str) -> int:
        return self.paygress.log_path.read_text().count(text)

    async def annotation(self, name: str) -> float:
        pod = await self.seen.pod(name)
        assert pod is not None, f"no pod {name}"
        text = pod["metadata"]["annotations"][EXPIRES]
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


def config(target: Target, proxy_url: str, state: Path, reaper: float = 0.5) -> dict[str, Any]:
    return {
        "state_dir": str(state),
        "mints": [proxy_url],
        "drain_seconds": 0,
        "flush_interval_seconds": 0.2,
        "payments": {"unproven_swaps": UNTHROTTLED},
        "tiers": [
            {
                "id": "small",
                "description": "a small app pod",
                "cpu": "250m",
                "memory": "64Mi",
                "images": [target.image, "ghcr.io/example/other:2"],
                "port": target.port,
                "rate_msat_per_second": 1000,  # 1 sat per second
                "min_seconds": 3,
                "max_seconds": 600,
            }
        ],
        "routes": [{"name": "pods", "match": {"path_prefix": "/pod/"}, "tier": "small"}],
        "kubernetes": {
            "namespace": target.namespace,
            "kubeconfig": str(target.kubeconfig),
            "reaper_interval_seconds": reaper,
            "grace_seconds": 5,
        },
    }


@contextlib.asynccontextmanager
async def pod_stack(
    work: Path, target: Target, mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet
) -> AsyncIterator[PodStack]:
    """Paygress (its kubeconfig to the target), a counting proxy to the mint and Envoy on
    deploy/envoy/envoy-pods.yaml."""
    proxy = await CountingProxy.to_url(mint.url).start()
    paygress = await PaygressProcess(
        config(target, proxy.url, work / "state"), MNEMONIC, work / "pg"
    ).start()
    envoy = await EnvoyProxy(
        work / "envoy",
        upstream=upstream.address,
        paygress_socket=paygress.socket_path,
        config_path=REPO_ROOT / "deploy" / "envoy" / "envoy-pods.yaml",
    ).start()
    try:
        async with httpx.AsyncClient(base_url=envoy.url, trust_env=False, timeout=15) as http:
            yield PodStack(target, proxy, paygress, envoy, upstream, wallet, mint, http)
    finally:
        await envoy.stop()
        await paygress.stop()
        await proxy.stop()


@contextlib.asynccontextmanager
async def fake_target(work: Path, kube: FakeKubeApi) -> AsyncIterator[Target]:
    """The fake (graceful deletion as on a real server), seen with the admin's token."""
    seen = PodObserver(kube.client_configuration(admin=True), NS)
    kubeconfig = kube.write_kubeconfig(work / "kubeconfig", namespace=NS)
    try:
        yield Target("fake", seen, kubeconfig, NS, IMAGE, 0, 5, kube)
    finally:
        await seen.aclose()
        await kube.stop()


@contextlib.asynccontextmanager
async def cluster_target(work: Path) -> AsyncIterator[Target]:
    path = os.environ.get(KUBECONFIG_VAR)
    if not path:
        pytest.skip(f"{KUBECONFIG_VAR} is not set: no real cluster to run against")
    cluster = await RealCluster(path).start()
    seen = cluster.observer()
    try:
        yield Target(
            "cluster",
            seen,
            cluster.write_kubeconfig(work / "kubeconfig"),
            cluster.namespace,
            os.environ.get("PAYGRESS_TEST_IMAGE", "nginxinc/nginx-unprivileged:1.27-alpine"),
            int(os.environ.get("PAYGRESS_TEST_PORT", "8080")),
            60,
        )
    finally:
        await seen.aclose()
        await cluster.stop()


@pytest_asyncio.fixture(
    scope="module",
    loop_scope="session",
    params=["fake", pytest.param("cluster", marks=pytest.mark.real_cluster)],
)
async def stack(
    request: pytest.FixtureRequest, mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet
) -> AsyncIterator[PodStack]:
    work = Path(tempfile.mkdtemp(prefix="pg-pods-"))
    if request.param == "fake":
        target_cm = fake_target(work, await FakeKubeApi(namespaces=[NS]).start())
    else:
        target_cm = cluster_target(work)
    async with target_cm as target:
        if target.fake is not None:
            target.port = upstream.port
        async with pod_stack(work, target, mint, upstream, wallet) as s:
            yield s


def routed(r: httpx.Response) -> bool:
    """Paygress allowed the request and the pod answered it (only an allow carries
    X-Paygress-Expires). The echo upstream standing in for the pod says 200; a real pod says
    what it says to the path (nginx: 404 for /pod/app)."""
    return "x-paygress-expires" in r.headers


async def wait_for(
    http: httpx.AsyncClient, path: str, headers: dict[str, str], status: int, within: float = 6
) -> httpx.Response:
    """Retries briefly until the answer has `status` (0: until routed): Paygress learns of a
    pod's changes by its watch."""
    deadline = time.monotonic() + within
    while True:
        r = await http.get(path, headers=headers)
        done = routed(r) if status == 0 else r.status_code == status
        if done or time.monotonic() > deadline:
            assert done, f"never {status or 'routed'}: {r.status_code} {r.text}"
            return r
        await asyncio.sleep(0.2)


async def pay_until_settled(http: httpx.AsyncClient, path: str, token: str) -> httpx.Response:
    """A payment, sent again while the mint has not settled it (503 payment_pending: a slow
    mint on a busy machine), as Retry-After asks."""
    for _ in range(30):
        r = await http.get(path, headers={"X-Cashu": token})
        if r.status_code != 503 or r.json().get("reason") != "payment_pending":
            return r
        await asyncio.sleep(0.5)
    return r


async def paid_pod(stack: PodStack, amount: int) -> tuple[str, str, str]:
    """A paid pod, Running and reached: (token, pod name, pod key)."""
    token = await stack.token_for(amount)
    r = await pay_until_settled(stack.http, "/pod/app", token)
    assert r.status_code == 503 and r.json()["reason"] == "pod_starting", r.text
    name = r.json()["pod"]
    await stack.target.run(name)
    r = await wait_for(stack.http, "/pod/app", {"X-Cashu": token}, 0)
    return token, name, r.headers["x-paygress-pod-key"]


# -- both targets ------------------------------------------------------------------------------


async def test_offers_and_402_describe_the_tier(stack: PodStack) -> None:
    r = await stack.http.get("/pod/app")
    assert r.status_code == 402
    # 3 s at 1 sat/s, plus the mint's input fee of paying it
    assert decode_payment_request(r.headers["x-cashu"]).amount == 3 + MINT_FEE
    assert "small pod" in r.json()["payment"]["buys"]
    offers = await stack.http.get("/.well-known/paygress/offers")
    assert offers.status_code == 200
    [tier] = offers.json()["tiers"]
    assert (tier["tier"], tier["min_payment"], tier["rate_msat_per_second"]) == ("small", 3, 1000)


async def test_a_payment_buys_a_pod_that_is_reached_topped_up_reconciled_and_reaped(
    stack: PodStack,
) -> None:
    lifetime = stack.target.lifetime
    token = await stack.token_for(lifetime)
    paid_at = time.time()
    r = await stack.http.get("/pod/app/hello", headers={"X-Cashu": token})
    assert r.status_code == 503, r.text  # created, not Running yet
    assert r.headers["retry-after"] == "2"
    body = r.json()
    assert body["reason"] == "pod_starting" and body["phase"] == "Pending"
    name = body["pod"]
    key = r.headers["x-paygress-pod-key"]
    assert key == pod_key(name)

    # The pod as the API server stored it, admitted under Pod Security "restricted".
    [pod] = await stack.seen.pods()
    assert pod["metadata"]["name"] == name
    assert pod["metadata"]["labels"]["paygress.io/tier"] == "small"
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["activeDeadlineSeconds"] == 605
    [container] = spec["containers"]
    assert container["image"] == stack.target.image
    assert container["resources"]["limits"] == container["resources"]["requests"]
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    expires = int(body["expires_at"])
    assert paid_at + lifetime - 1 <= expires <= paid_at + lifetime + 1

    status = await stack.http.get(f"/.well-known/paygress/pods/{name}")
    assert status.status_code == 200 and status.json()["phase"] == "Pending"

    # Running: Envoy's ORIGINAL_DST cluster sends the request to the pod's address.
    await stack.target.run(name)
    before = stack.upstream.count
    r = await wait_for(stack.http, "/pod/app/hello", {"X-Cashu": token}, 0)
    assert r.headers["x-paygress-pod"] == name and r.headers["x-paygress-pod-key"] == key
    if stack.target.fake is not None:  # the echo upstream stands in for the pod
        assert r.status_code == 200 and stack.upstream.count == before + 1
        seen = r.json()["headers"]
        assert seen["x-paygress-pod"] == name
        assert "x-cashu" not in seen

    # Top-up by the payer: the pod's key and a new token extend the paid end and annotation.
    topup = await stack.token_for(4)
    headers = {"X-Cashu": topup, "X-Paygress-Pod": name, "X-Paygress-Pod-Key": key}
    r = await stack.http.get("/pod/app/x", headers=headers)
    assert routed(r), r.text
    new_expires = int(r.headers["x-paygress-expires"])
    assert new_expires == expires + 4
    if stack.target.fake is not None:
        assert "x-paygress-pod-key" not in r.json()["headers"]  # never upstream
    assert await stack.annotation(name) == new_expires

    # Restart mid-life: the new process rebuilds its view from the cluster and still routes.
    await stack.paygress.restart()
    r = await wait_for(stack.http, "/pod/app/again", {"X-Cashu": token}, 0)

    # The reaper deletes the pod within a period of its paid end, not before, and once.
    while time.time() < new_expires - 0.5:
        now = await stack.seen.pod(name)
        assert now is not None and not now["metadata"].get("deletionTimestamp"), "reaped early"
        await asyncio.sleep(0.2)
    await stack.seen.wait(
        name,
        "deleted within a reaper period of its paid end",
        lambda p: p is None or bool(p["metadata"].get("deletionTimestamp")),
        within=new_expires + 3 - time.time(),
    )
    r = await stack.http.get("/pod/app/late", headers={"X-Cashu": token})
    assert r.status_code == 402 and r.json()["reason"] == "expired"
    await stack.seen.wait(name, "gone", lambda p: p is None, within=30)
    await asyncio.sleep(1.5)  # a few more reaper periods
    assert stack.logged(f"reaped pod {name}") == 1


async def test_only_the_payer_may_top_up_a_pod(stack: PodStack) -> None:
    _, victim, _ = await paid_pod(stack, stack.target.lifetime)
    end = await stack.annotation(victim)
    _, mine, my_key = await paid_pod(stack, stack.target.lifetime)
    swaps = stack.proxy.requests["/v1/swap"]
    for key, reason in ((None, "pod_key_required"), (my_key, "pod_key_invalid")):
        attacker = await stack.token_for(3)
        headers = {"X-Cashu": attacker, "X-Paygress-Pod": victim}
        if key:
            headers["X-Paygress-Pod-Key"] = key
        r = await stack.http.get("/pod/app", headers=headers)
        assert (r.status_code, r.json()["reason"]) == (403, reason), r.text
        r = await stack.http.get("/pod/app", headers={"X-Cashu": attacker})
        assert r.status_code == 503 and r.json()["pod"] not in (victim, mine)  # a pod of its own
    assert stack.proxy.requests["/v1/swap"] == swaps + 2  # the refusals cost the mint nothing
    assert await stack.annotation(victim) == end


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        ({"X-Paygress-Image": "docker.io/evil/miner"}, 400, "image_not_allowed"),
        ({"X-Paygress-Pod": "pg-small-doesnotexist"}, 403, "pod_key_required"),
        (
            {"X-Paygress-Pod": "pg-small-doesnotexist", "X-Paygress-Pod-Key": "0" * 64},
            403,
            "pod_key_invalid",
        ),
        (
            {
                "X-Paygress-Pod": "pg-small-doesnotexist",
                "X-Paygress-Pod-Key": pod_key("pg-small-doesnotexist"),
            },
            404,
            "unknown_pod",
        ),
    ],
)
async def test_bad_pod_requests_are_refused_before_payment(
    stack: PodStack, headers: dict[str, str], status: int, reason: str
) -> None:
    token = await stack.token_for(3)
    swaps = stack.proxy.requests["/v1/swap"]
    r = await stack.http.get("/pod/app", headers={"X-Cashu": token, **headers})
    assert r.status_code == status and r.json()["reason"] == reason
    assert stack.proxy.requests["/v1/swap"] == swaps


# -- the fake only: its kubelet, injected failures, counted requests -------------------------


async def test_kubernetes_down_after_payment_is_503_and_the_retry_does_not_pay_twice(
    stack: PodStack,
) -> None:
    stack.fake.hooks.fail_next("POST", r"/pods$", status=503, times=3)
    token = await stack.token_for(3)
    swaps = stack.proxy.requests["/v1/swap"]
    r = await stack.http.get("/pod/app", headers={"X-Cashu": token})
    assert r.status_code == 503 and r.json()["reason"] == "kubernetes_unavailable"
    r = await stack.http.get("/pod/app", headers={"X-Cashu": token})
    assert r.status_code == 503 and r.json()["reason"] == "pod_starting"
    assert stack.proxy.requests["/v1/swap"] == swaps + 1, "paid once"


async def test_a_failed_patch_after_a_top_up_loses_nothing(stack: PodStack) -> None:
    hooks = stack.fake.hooks
    token, name, key = await paid_pod(stack, 3)
    first_end = await stack.annotation(name)
    hooks.fail_next("PATCH", rf"/pods/{name}$", status=503, times=1000)
    headers = {
        "X-Cashu": await stack.token_for(4),
        "X-Paygress-Pod": name,
        "X-Paygress-Pod-Key": key,
    }
    r = await stack.http.get("/pod/app", headers=headers)
    assert routed(r), r.text  # paid and durable: the PATCH is not the client's
    paid_end = int(r.headers["x-paygress-expires"])
    assert paid_end == first_end + 4 and await stack.annotation(name) == first_end
    await asyncio.sleep(first_end + 1.5 - time.time())  # past the annotation: 3 reaper periods
    pod = await stack.seen.pod(name)
    assert pod is not None and not pod["metadata"].get("deletionTimestamp"), "reaped while paid"
    assert routed(await stack.http.get("/pod/app", headers={"X-Cashu": token}))
    hooks.clear_failures()  # the API server takes PATCHes again: the annotation catches up
    await stack.seen.wait(
        name,
        "annotated with the durable paid end",
        lambda p: p is not None and p["metadata"]["annotations"][EXPIRES] == _rfc(paid_end),
    )
    assert stack.logged(f"pod {name}: expiry annotation moved") == 1


async def test_a_pod_being_deleted_is_not_routed_to_and_is_made_again_while_paid(
    stack: PodStack,
) -> None:
    fake = stack.fake
    token, name, _ = await paid_pod(stack, 30)
    async with client.ApiClient(fake.client_configuration(admin=True)) as api:  # an admin
        await client.CoreV1Api(api).delete_namespaced_pod(name, NS, grace_period_seconds=30)
    r = await wait_for(stack.http, "/pod/app", {"X-Cashu": token}, 503, within=2)
    assert r.json()["reason"] == "pod_terminating"
    await stack.seen.wait(name, "gone", lambda p: p is None, within=5)
    r = await wait_for(stack.http, "/pod/app", {"X-Cashu": token}, 503, within=2)
    for _ in range(20):  # the watch says DELETED, then the next request makes it again
        if r.json()["reason"] == "pod_starting":
            break
        await asyncio.sleep(0.1)
        r = await stack.http.get("/pod/app", headers={"X-Cashu": token})
    assert r.json()["reason"] == "pod_starting", r.text  # paid time is left: made again
    assert await stack.seen.pod(name) is not None
    assert stack.logged(f"reaped pod {name}") == 0


async def test_pod_status_answers_from_memory_with_no_api_call(stack: PodStack) -> None:
    hooks = stack.fake.hooks
    _, name, _ = await paid_pod(stack, 5)
    before = len(hooks.requests)
    paths = [name, "", "pg-small-unknown", "Not_A_Name", "x" * 70] * 60
    answers = await asyncio.gather(
        *(stack.http.get(f"/.well-known/paygress/pods/{p}") for p in paths)
    )
    codes = [a.status_code for a in answers]
    assert codes[:5] == [200, 404, 404, 400, 400] and len(codes) == 300
    reads = [r for r in hooks.requests[before:] if r.verb in ("get", "list")]
    assert reads == []  # (the keeper may be reaping earlier tests' pods meanwhile)


async def test_an_api_server_that_is_not_ready_at_start_is_waited_for(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    kube = FakeKubeApi(namespaces=[NS], port=free_port())  # not listening yet
    async with fake_target(tmp, kube) as target:
        target.port = upstream.port
        async with pod_stack(tmp, target, mint, upstream, wallet) as s:
            assert s.logged("not reachable at start") == 1  # and yet it serves
            kube.hooks.set_rbac_ready(False)  # up, but RBAC not synced yet: 403
            await kube.start()
            await until_logged(s, "RBAC not ready")  # retried with backoff
            kube.hooks.set_rbac_ready(True)
            await kube.hooks.wait_for_watchers(within=12)
            token = await s.token_for(3)
            r = await s.http.get("/pod/app", headers={"X-Cashu": token})
            assert r.status_code == 503 and r.json()["reason"] == "pod_starting", r.text
            assert len(await s.seen.pods()) == 1


async def until_logged(stack: PodStack, text: str, within: float = 12.0) -> None:
    deadline = time.monotonic() + within
    while not stack.logged(text):
        assert time.monotonic() < deadline, f"never logged {text!r}"
        await asyncio.sleep(0.1)


def _rfc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
