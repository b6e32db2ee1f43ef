"""Pods for payment end to end: client → real Envoy (deploy/envoy/envoy-pods.yaml) → Paygress →
real nutshell mint (through a counting proxy) and the strict fake Kubernetes API (through the
real kubernetes_asyncio client, configured by a kubeconfig).

The fake reports the pod Running at 127.0.0.1 with the tier's port set to the echo upstream's,
so Envoy's ORIGINAL_DST cluster really sends the payer's traffic to "their pod".
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from paygress.cashu.nut18 import decode_payment_request
from tests.peers.envoy import EnvoyProxy
from tests.peers.kubeapi import FakeKubeApi
from tests.peers.mint import NutshellMint
from tests.peers.paygress import UNTHROTTLED, PaygressProcess
from tests.peers.procs import REPO_ROOT
from tests.peers.proxy import CountingProxy
from tests.peers.upstream import EchoUpstream
from tests.peers.wallet import CashuWallet

MNEMONIC = "skin egg twice improve attend aim swim mask market huge portion stomach"
NS = "work"
IMAGE = "ghcr.io/example/app:1"


@dataclass
class PodStack:
    kube: FakeKubeApi
    proxy: CountingProxy
    paygress: PaygressProcess
    envoy: EnvoyProxy
    upstream: EchoUpstream
    wallet: CashuWallet
    mint: NutshellMint
    http: httpx.AsyncClient

    async def token(self, amount: int) -> str:
        return await self.wallet.token(self.mint.url, amount, token_mint=self.proxy.url)

    def our_pods(self) -> list[dict[str, Any]]:
        return self.kube.pods(NS)


def config(proxy_url: str, kubeconfig: Path, state: Path, upstream_port: int) -> dict[str, Any]:
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
                "images": [IMAGE, "ghcr.io/example/other:2"],
                "port": upstream_port,
                "rate_msat_per_second": 1000,  # 1 sat per second
                "min_seconds": 3,
                "max_seconds": 600,
            }
        ],
        "routes": [{"name": "pods", "match": {"path_prefix": "/pod/"}, "tier": "small"}],
        "kubernetes": {
            "namespace": NS,
            "kubeconfig": str(kubeconfig),
            "reaper_interval_seconds": 0.5,
            "grace_seconds": 5,
        },
    }


@contextlib.asynccontextmanager
async def pod_stack(
    work: Path, kube: FakeKubeApi, mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet
) -> AsyncIterator[PodStack]:
    """Paygress (kubeconfig to `kube`, started or not), a counting proxy to the mint and
    Envoy on deploy/envoy/envoy-pods.yaml; `kube` is stopped at the end."""
    kubeconfig = kube.write_kubeconfig(work / "kubeconfig", namespace=NS)
    proxy = await CountingProxy.to_url(mint.url).start()
    paygress = await PaygressProcess(
        config(proxy.url, kubeconfig, work / "state", upstream.port), MNEMONIC, work / "pg"
    ).start()
    envoy = await EnvoyProxy(
        work / "envoy",
        upstream=upstream.address,
        paygress_socket=paygress.socket_path,
        config_path=REPO_ROOT / "deploy" / "envoy" / "envoy-pods.yaml",
    ).start()
    try:
        async with httpx.AsyncClient(base_url=envoy.url, trust_env=False, timeout=15) as http:
            yield PodStack(kube, proxy, paygress, envoy, upstream, wallet, mint, http)
    finally:
        await envoy.stop()
        await paygress.stop()
        await proxy.stop()
        await kube.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet
) -> AsyncIterator[PodStack]:
    kube = await FakeKubeApi(namespaces=["default", NS]).start()
    work = Path(tempfile.mkdtemp(prefix="pg-pods-"))
    async with pod_stack(work, kube, mint, upstream, wallet) as s:
        yield s


async def test_offers_and_402_describe_the_tier(stack: PodStack) -> None:
    r = await stack.http.get("/pod/app")
    assert r.status_code == 402
    # 3 s at 1 sat/s, plus the mint's input fee of paying it (1 sat at 100 ppk)
    assert decode_payment_request(r.headers["x-cashu"]).amount == 4
    assert "small pod" in r.json()["payment"]["buys"]
    offers = await stack.http.get("/.well-known/paygress/offers")
    assert offers.status_code == 200
    [tier] = offers.json()["tiers"]
    assert (tier["tier"], tier["min_payment"], tier["rate_msat_per_second"]) == ("small", 3, 1000)


async def test_a_payment_buys_a_pod_that_is_reached_topped_up_reconciled_and_reaped(
    stack: PodStack,
) -> None:
    token = await stack.token(6)  # 5 s after the mint's fee
    paid_at = time.time()
    r = await stack.http.get("/pod/app/hello", headers={"X-Cashu": token})
    assert r.status_code == 503, r.text  # created, not Running yet
    assert r.headers["retry-after"] == "2"
    body = r.json()
    assert body["reason"] == "pod_starting" and body["phase"] == "Pending"
    name = body["pod"]

    # The pod as the API server stored it.
    [pod] = stack.our_pods()
    assert pod["metadata"]["name"] == name
    labels = pod["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "paygress"
    assert labels["paygress.io/tier"] == "small"
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["activeDeadlineSeconds"] == 605
    [container] = spec["containers"]
    assert container["image"] == IMAGE
    assert container["resources"]["limits"] == {"cpu": "250m", "memory": "64Mi"}
    assert container["resources"]["requests"] == {"cpu": "250m", "memory": "64Mi"}
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    expires = int(r.json()["expires_at"])
    assert paid_at + 4 <= expires <= paid_at + 6

    status = await stack.http.get(f"/.well-known/paygress/pods/{name}")
    assert status.status_code == 200 and status.json()["phase"] == "Pending"

    # Running: Envoy's ORIGINAL_DST cluster sends the request to the pod's address.
    stack.kube.set_running(NS, name, ip="127.0.0.1")
    before = stack.upstream.count
    r = await wait_for_status(stack.http, "/pod/app/hello", {"X-Cashu": token}, 200)
    assert r.headers["x-paygress-pod"] == name
    assert stack.upstream.count == before + 1
    seen = r.json()["headers"]
    assert seen["x-paygress-pod"] == name
    assert "x-cashu" not in seen

    # Top-up: a new token with X-Paygress-Pod extends the paid end and the annotation.
    topup = await stack.token(5)  # 4 s after the mint's fee
    r = await stack.http.get("/pod/app/x", headers={"X-Cashu": topup, "X-Paygress-Pod": name})
    assert r.status_code == 200, r.text
    new_expires = int(r.headers["x-paygress-expires"])
    assert new_expires == expires + 4
    annotation = stack.kube.pod(NS, name)["metadata"]["annotations"]  # type: ignore[index]
    assert annotation["paygress.io/expires-at"] == time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(new_expires)
    )

    # Restart mid-life: the new process rebuilds its view from the cluster and still routes.
    await stack.paygress.restart()
    r = await stack.http.get("/pod/app/again", headers={"X-Cashu": token})
    assert r.status_code == 200, r.text
    assert stack.kube.pod(NS, name) is not None

    # The reaper deletes the pod within one period after its paid end, not before.
    while time.time() < new_expires - 0.5:
        assert stack.kube.pod(NS, name) is not None, "reaped before its paid end"
        await asyncio.sleep(0.2)
    deadline = new_expires + 3
    while stack.kube.pod(NS, name) is not None:
        assert time.time() < deadline, "not reaped within a reaper period of its paid end"
        await asyncio.sleep(0.1)
    r = await stack.http.get("/pod/app/late", headers={"X-Cashu": token})
    assert r.status_code == 402 and r.json()["reason"] == "expired"


async def test_kubernetes_down_after_payment_is_503_and_the_retry_does_not_pay_twice(
    stack: PodStack,
) -> None:
    token = await stack.token(4)
    swaps = stack.proxy.requests["/v1/swap"]
    stack.kube.fail_next("POST", r"/pods$", status=503, times=3)
    r = await stack.http.get("/pod/app", headers={"X-Cashu": token})
    assert r.status_code == 503 and r.json()["reason"] == "kubernetes_unavailable"
    r = await stack.http.get("/pod/app", headers={"X-Cashu": token})
    assert r.status_code == 503 and r.json()["reason"] == "pod_starting"
    assert stack.proxy.requests["/v1/swap"] == swaps + 1, "paid once"


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        ({"X-Paygress-Image": "docker.io/evil/miner"}, 400, "image_not_allowed"),
        ({"X-Paygress-Pod": "pg-small-doesnotexist"}, 404, "unknown_pod"),
    ],
)
async def test_bad_pod_requests_are_refused_before_payment(
    stack: PodStack, headers: dict[str, str], status: int, reason: str
) -> None:
    token = await stack.token(4)
    swaps = stack.proxy.requests["/v1/swap"]
    r = await stack.http.get("/pod/app", headers={"X-Cashu": token, **headers})
    assert r.status_code == status and r.json()["reason"] == reason
    assert stack.proxy.requests["/v1/swap"] == swaps


async def wait_for_status(
    http: httpx.AsyncClient, path: str, headers: dict[str, str], status: int
) -> httpx.Response:
    """Paygress learns of the Running pod by its watch (or a refresh): retry briefly."""
    for _ in range(30):
        r = await http.get(path, headers=headers)
        if r.status_code == status:
            return r
        await asyncio.sleep(0.2)
    raise AssertionError(f"never {status}: {r.status_code} {r.text}")


async def test_kubernetes_unreachable_at_start_is_not_fatal(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    from tests.peers.procs import free_port

    kube = FakeKubeApi(namespaces=[NS], port=free_port())  # not listening yet
    # Paygress starts and serves although the API server does not answer.
    async with pod_stack(tmp, kube, mint, upstream, wallet) as s:
        await kube.start()
        r = await s.http.get("/pod/app", headers={"X-Cashu": await s.token(4)})
        assert r.status_code == 503 and r.json()["reason"] == "pod_starting", r.text
        assert len(kube.pods(NS)) == 1
        assert "not reachable at start" in s.paygress.log_path.read_text()
