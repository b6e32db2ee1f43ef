"""The pods module against a stand-in CoreV1Api (the real client is tested against the fake
API server in tests/integration)."""

from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from paygress.core.ports import PodRequest, PodsUnavailable
from paygress.core.tiers import Tier
from paygress.pods import (
    EXPIRES_ANNOTATION,
    KubePods,
    parse_rfc3339,
    pod_manifest,
    rfc3339,
    state_of,
)

TIER = Tier("small", "500m", "512Mi", ("nginx:1",), 8080, 1000, 10, 600)
REQUEST = PodRequest("pg-small-abc", TIER, "nginx:1", "f" * 64, "pods", 32, 1_800_000_000.0)


def v1pod(name: str, expires: float, phase: str = "Running", ip: str | None = "10.0.0.9") -> Any:
    return SimpleNamespace(
        metadata=SimpleNamespace(name=name, annotations={EXPIRES_ANNOTATION: rfc3339(expires)}),
        status=SimpleNamespace(
            phase=phase, pod_ip=ip, conditions=[SimpleNamespace(type="Ready", status="True")]
        ),
    )


class FakeCore:
    def __init__(self) -> None:
        self.pods: dict[str, Any] = {}
        self.errors: list[BaseException] = []
        self.calls: list[str] = []

    def _maybe_fail(self, call: str) -> None:
        self.calls.append(call)
        if self.errors:
            raise self.errors.pop(0)

    async def create_namespaced_pod(self, namespace: str, body: dict[str, Any]) -> Any:
        self._maybe_fail("create")
        name = body["metadata"]["name"]
        if name in self.pods:
            raise ApiException(status=409, reason="AlreadyExists")
        expires = parse_rfc3339(body["metadata"]["annotations"][EXPIRES_ANNOTATION]) or 0
        self.pods[name] = v1pod(name, expires, phase="Pending", ip=None)
        return self.pods[name]

    async def read_namespaced_pod(self, name: str, namespace: str) -> Any:
        self._maybe_fail("read")
        if name not in self.pods:
            raise ApiException(status=404, reason="NotFound")
        return self.pods[name]

    async def list_namespaced_pod(self, namespace: str, label_selector: str) -> Any:
        self._maybe_fail("list")
        return SimpleNamespace(items=list(self.pods.values()))

    async def delete_namespaced_pod(self, name: str, namespace: str, **kw: Any) -> Any:
        self._maybe_fail("delete")
        if self.pods.pop(name, None) is None:
            raise ApiException(status=404, reason="NotFound")

    async def patch_namespaced_pod(self, name: str, namespace: str, body: Any, **kw: Any) -> Any:
        self._maybe_fail("patch")
        assert kw["_content_type"] == "application/merge-patch+json"
        self.pods[name].metadata.annotations.update(body["metadata"]["annotations"])
        return self.pods[name]


def make_pods(now: float = 1_800_000_000.0) -> tuple[KubePods, FakeCore]:
    pods = KubePods(client.ApiClient(client.Configuration()), "work", clock=lambda: now)
    core = FakeCore()
    pods.core = core
    return pods, core


def test_manifest_is_restricted_labelled_and_capped() -> None:
    m = pod_manifest(REQUEST, "work", grace_seconds=30)
    meta, spec = m["metadata"], m["spec"]
    assert meta["namespace"] == "work"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "paygress"
    assert meta["labels"]["paygress.io/tier"] == "small"
    assert len(meta["labels"]["paygress.io/grant"]) <= 63
    assert parse_rfc3339(meta["annotations"][EXPIRES_ANNOTATION]) == REQUEST.expires_at
    assert spec["automountServiceAccountToken"] is False
    assert spec["activeDeadlineSeconds"] == 630  # the tier's max life + grace, never raised
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = spec["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True
    resources = container["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": "500m", "memory": "512Mi"}
    assert container["ports"][0]["containerPort"] == 8080


def test_state_of_reads_phase_ip_readiness_and_expiry() -> None:
    state = state_of(v1pod("p", 1_800_000_100.0))
    assert (state.phase, state.ip, state.ready, state.expires_at) == (
        "Running",
        "10.0.0.9",
        True,
        1_800_000_100.0,
    )
    assert state.reachable


async def test_ensure_creates_once_and_409_reads_the_existing_pod() -> None:
    pods, core = make_pods()
    state = await pods.ensure(REQUEST)
    assert state.phase == "Pending" and not state.reachable
    pods._cache.clear()
    again = await pods.ensure(REQUEST)
    assert again.name == REQUEST.name
    assert core.calls == ["create", "create", "read"]


async def test_retryable_errors_are_retried_others_are_not() -> None:
    pods, core = make_pods()
    core.errors = [ApiException(status=503, reason="Unavailable"), ApiException(status=429)]
    assert (await pods.ensure(REQUEST)).name == REQUEST.name
    assert core.calls == ["create", "create", "create"]
    core.errors = [ApiException(status=403, reason="Forbidden")]
    with pytest.raises(PodsUnavailable, match="403"):
        await pods.extend(REQUEST.name, 1)
    core.errors = [ApiException(status=500)] * 3
    with pytest.raises(PodsUnavailable, match="500"):
        await pods.reconcile()


async def test_timeouts_become_pods_unavailable() -> None:
    pods, core = make_pods()
    pods.attempts = 2
    core.errors = [TimeoutError(), TimeoutError()]
    with pytest.raises(PodsUnavailable, match="TimeoutError"):
        await pods.ensure(REQUEST)


async def test_reaper_deletes_only_expired_pods_and_tolerates_404() -> None:
    now = 1_800_000_000.0
    pods, core = make_pods(now)
    core.pods = {"old": v1pod("old", now - 1), "new": v1pod("new", now + 60)}
    assert await pods.reap_once() == ["old"]
    assert set(core.pods) == {"new"}
    core.pods["gone"] = v1pod("gone", now - 5)
    original = core.delete_namespaced_pod

    async def already_deleted(name: str, namespace: str, **kw: Any) -> Any:
        core.pods.pop(name, None)  # another replica was faster
        return await original(name, namespace, **kw)

    core.delete_namespaced_pod = already_deleted  # type: ignore[method-assign]
    assert await pods.reap_once() == ["gone"]


async def test_extend_moves_the_annotation() -> None:
    pods, _ = make_pods()
    await pods.ensure(REQUEST)
    await pods.extend(REQUEST.name, REQUEST.expires_at + 100)
    assert pods.state(REQUEST.name).expires_at == REQUEST.expires_at + 100  # type: ignore[union-attr]
