"""The pods module (paygress/pods.py) through the real kubernetes_asyncio client against the
strict fake API server (tests/peers/kubeapi), in-process on loopback: the manifest it sends,
the informer-like watch, the error tree, and the keeper (expiry follows the durable paid end,
pods reaped once)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from paygress.core.ports import (
    PodExists,
    PodNotFound,
    PodRequest,
    PodsRefused,
    PodsUnavailable,
)
from paygress.core.tiers import Tier
from paygress.pods import (
    EXPIRES_ANNOTATION,
    KubePods,
    parse_rfc3339,
    pod_manifest,
    rfc3339,
)
from tests.peers.kubeapi import PAYGRESS_USER, FakeKubeApi

NS = "work"
TIER = Tier("small", "500m", "512Mi", ("nginx:1",), 8080, 1000, 10, 600)
MERGE = "application/merge-patch+json"


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


def request(name: str = "pg-small-abc", expires_at: float = 0.0) -> PodRequest:
    return PodRequest(name, TIER, "nginx:1", "f" * 64, "pods", 32, expires_at or time.time() + 60)


@pytest_asyncio.fixture
async def kube() -> AsyncIterator[FakeKubeApi]:
    async with FakeKubeApi(namespaces=[NS]) as server:
        yield server


@pytest_asyncio.fixture
async def admin(kube: FakeKubeApi) -> AsyncIterator[Any]:
    """Another hand on the cluster (an admin, another replica)."""
    async with client.ApiClient(kube.client_configuration(admin=True)) as api:
        yield client.CoreV1Api(api)


class Made:
    """KubePods against the fake, with a clock, a durable paid end per pod, and its events."""

    def __init__(self, kube: FakeKubeApi) -> None:
        self.clock = Clock()
        self.paid: dict[str, float] = {}
        self.events: list[str] = []

        async def paid_end(name: str) -> float:
            return self.paid.get(name, 0.0)

        self.pods = KubePods(
            client.ApiClient(kube.client_configuration()),
            NS,
            clock=self.clock,
            reaper_interval=3600,  # tests call keep_once themselves
            on_event=self.events.append,
            paid_end=paid_end,
            watch_seconds=30,
            retry_delay=0.01,
        )


@pytest_asyncio.fixture
async def made(kube: FakeKubeApi) -> AsyncIterator[Made]:
    m = Made(kube)
    try:
        yield m
    finally:
        await m.pods.aclose()


async def until(condition: Callable[[], bool], what: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not {what} within {within} s"
        await asyncio.sleep(0.02)


# -- the manifest --------------------------------------------------------------------------------


def test_manifest_is_restricted_labelled_and_capped() -> None:
    req = request(expires_at=1_800_000_000.0)
    m = pod_manifest(req, NS, grace_seconds=30)
    meta, spec = m["metadata"], m["spec"]
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "paygress"
    assert meta["labels"]["paygress.io/tier"] == "small"
    assert parse_rfc3339(meta["annotations"][EXPIRES_ANNOTATION]) == req.expires_at
    assert spec["automountServiceAccountToken"] is False
    assert spec["activeDeadlineSeconds"] == 630  # the tier's max life + grace, never raised
    [container] = spec["containers"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    resources = container["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": "500m", "memory": "512Mi"}


# -- create and the error tree -------------------------------------------------------------------


async def test_ensure_creates_once_and_reads_a_pod_that_exists(
    kube: FakeKubeApi, admin: Any, made: Made
) -> None:
    state = await made.pods.ensure(request("pg-a"))
    assert (state.name, state.phase, state.reachable) == ("pg-a", "Pending", False)
    await admin.create_namespaced_pod(NS, pod_manifest(request("pg-b"), NS, 30))  # elsewhere
    assert (await made.pods.ensure(request("pg-b"))).name == "pg-b"
    assert [(r.verb, r.status) for r in kube.hooks.requests if r.user == PAYGRESS_USER] == [
        ("create", 201),
        ("create", 409),
        ("get", 200),
    ]
    assert made.events == ["created", "api_error"]


async def test_errors_carry_their_status_and_only_transient_ones_are_retried(
    kube: FakeKubeApi, made: Made
) -> None:
    pods = made.pods
    kube.hooks.fail_next("POST", r"/pods$", status=503)
    kube.hooks.fail_next("POST", r"/pods$", status=429)
    assert (await pods.ensure(request("pg-a"))).name == "pg-a"
    assert kube.hooks.count("create") == 3
    kube.hooks.fail_next("PATCH", r"/pods/", status=403)
    with pytest.raises(PodsRefused) as refused:
        await pods.patch_expiry("pg-a", time.time() + 90)
    assert refused.value.status == 403 and kube.hooks.count("patch") == 1  # not retried
    with pytest.raises(PodNotFound) as missing:
        await pods.patch_expiry("pg-nope", time.time())
    assert missing.value.status == 404 and 'pods "pg-nope" not found' in str(missing.value)
    kube.hooks.fail_next("GET", r"/pods\?", status=500, times=3)
    with pytest.raises(PodsUnavailable) as down:
        await pods.relist()
    assert down.value.status == 500
    kube.hooks.fail_next("POST", r"/pods$", status=None, delay=0.3, times=2)
    pods.attempts, pods.call_timeout = 2, 0.1
    with pytest.raises(PodsUnavailable, match="TimeoutError") as slow:
        await pods.ensure(request("pg-slow"))
    assert slow.value.status is None
    assert not issubclass(PodExists, PodsUnavailable)  # a 409 is no reason for a 503


async def test_paygress_pods_pass_pod_security_and_rbac(kube: FakeKubeApi, made: Made) -> None:
    await made.pods.ensure(request("pg-a"))
    kube.add_namespace("elsewhere")  # no Role there
    made.pods.namespace = "elsewhere"
    with pytest.raises(PodsRefused, match="cannot create resource"):
        await made.pods.ensure(request("pg-b"))


# -- the informer --------------------------------------------------------------------------------


async def test_the_view_is_listed_once_then_watched_resuming_with_bookmarks(
    kube: FakeKubeApi, admin: Any, made: Made
) -> None:
    await admin.create_namespaced_pod(NS, pod_manifest(request("pg-a"), NS, 30))
    await made.pods.start()
    assert made.pods.state("pg-a") is not None
    await kube.hooks.wait_for_watchers()
    await admin.create_namespaced_pod(NS, pod_manifest(request("pg-b"), NS, 30))
    await until(lambda: made.pods.state("pg-b") is not None, "seen by the watch")
    kube.hooks.set_running(NS, "pg-b", ip="10.1.2.3")
    await until(lambda: bool(made.pods.state("pg-b").reachable), "Running")  # type: ignore[union-attr]
    for n in range(2, 5):  # the server ends watches; each resumes where the last one was
        kube.hooks.send_bookmarks()
        rv = str(kube.hooks.resource_version)
        await until(lambda: made.pods.resource_version == rv, "at the bookmark")  # noqa: B023
        kube.hooks.close_watches()
        await until(lambda: kube.hooks.count("watch", user=PAYGRESS_USER) == n, "watching")  # noqa: B023
    await admin.delete_namespaced_pod("pg-a", NS, grace_period_seconds=0)
    await until(lambda: made.pods.state("pg-a") is None, "gone")
    watches = [r for r in kube.hooks.requests if r.verb == "watch" and r.user == PAYGRESS_USER]
    assert len(watches) == 4 and kube.hooks.count("list") == 1  # no relist
    assert all(w.query["allowWatchBookmarks"] == "True" for w in watches)
    resumed = [int(w.query["resourceVersion"]) for w in watches]  # the list's, then the last seen
    assert resumed == sorted(resumed) and resumed[-1] == int(rv)


async def test_a_410_relists_and_an_api_server_restart_does_not(
    kube: FakeKubeApi, admin: Any, made: Made
) -> None:
    await made.pods.start()
    await kube.hooks.wait_for_watchers()
    kube.hooks.fail_next("GET", "watch=", status=503)  # the next watch fails: a backoff...
    kube.hooks.close_watches()
    await admin.create_namespaced_pod(NS, pod_manifest(request("pg-a"), NS, 30))
    kube.hooks.compact()  # ...during which the history it would resume from is compacted
    await until(lambda: made.pods.state("pg-a") is not None, "relisted", within=10)
    assert kube.hooks.count("list") == 2
    await kube.restart()  # the store (etcd) stays: the watch resumes
    await admin.create_namespaced_pod(NS, pod_manifest(request("pg-b"), NS, 30))
    await until(lambda: made.pods.state("pg-b") is not None, "seen after the restart", within=10)
    assert kube.hooks.count("list") == 2


async def test_403_while_rbac_is_not_ready_is_retried(
    kube: FakeKubeApi, admin: Any, made: Made, caplog: pytest.LogCaptureFixture
) -> None:
    await admin.create_namespaced_pod(NS, pod_manifest(request("pg-a"), NS, 30))
    kube.hooks.set_rbac_ready(False)
    await made.pods.start()  # not fatal
    assert made.pods.state("pg-a") is None
    await asyncio.sleep(0.8)  # a few attempts with backoff
    kube.hooks.set_rbac_ready(True)
    await until(lambda: made.pods.state("pg-a") is not None, "listed", within=10)
    refused = [r for r in kube.hooks.requests if r.status == 403]
    assert 2 <= len(refused) <= 6, "retried with backoff, not in a tight loop"
    assert "RBAC not ready" in caplog.text


# -- the keeper ----------------------------------------------------------------------------------


async def test_an_expired_pod_is_deleted_once_counted_once_and_unroutable(
    kube: FakeKubeApi, made: Made
) -> None:
    pods, clock = made.pods, made.clock
    await pods.start()
    await pods.ensure(request("pg-a", expires_at=clock.now + 10))
    kube.hooks.set_running(NS, "pg-a", ip="10.0.0.7")
    await until(lambda: bool(pods.state("pg-a").reachable), "Running")  # type: ignore[union-attr]
    assert (await pods.keep_once()).reaped == []
    clock.now += 10
    assert (await pods.keep_once()).reaped == ["pg-a"]
    state = pods.state("pg-a")
    assert state is not None and state.terminating and not state.reachable
    assert pods.count() == 0
    for _ in range(3):  # still terminating on the server: never deleted again
        assert (await pods.keep_once()).reaped == []
    await until(lambda: pods.state("pg-a") is None, "gone once its containers stopped")
    assert kube.hooks.count("delete") == 1 and made.events.count("reaped") == 1


async def test_a_pod_an_admin_deletes_is_gone_for_routing(
    kube: FakeKubeApi, admin: Any, made: Made
) -> None:
    pods = made.pods
    await pods.start()
    await pods.ensure(request("pg-a"))
    kube.hooks.set_running(NS, "pg-a", ip="10.0.0.7")
    await until(lambda: bool(pods.state("pg-a").reachable), "Running")  # type: ignore[union-attr]
    await admin.delete_namespaced_pod("pg-a", NS, grace_period_seconds=30)
    await until(lambda: bool(pods.state("pg-a").terminating), "terminating")  # type: ignore[union-attr]
    assert not pods.state("pg-a").reachable  # type: ignore[union-attr]
    made.clock.now += 3600
    assert (await pods.keep_once()).reaped == []  # someone else's DELETE: not ours to count
    assert kube.hooks.count("delete", user=PAYGRESS_USER) == 0


async def test_another_replica_reaping_first_is_fine_and_not_counted(
    kube: FakeKubeApi, admin: Any, made: Made
) -> None:
    await made.pods.ensure(request("pg-a", expires_at=made.clock.now - 1))
    await admin.delete_namespaced_pod("pg-a", NS, grace_period_seconds=0)
    assert (await made.pods.keep_once()).reaped == []  # the view had not caught up: 404
    assert made.pods.state("pg-a") is None and "reaped" not in made.events


async def test_the_annotation_follows_the_durable_paid_end_and_reaping_waits_for_it(
    kube: FakeKubeApi, admin: Any, made: Made
) -> None:
    pods, clock = made.pods, made.clock
    await pods.start()
    await pods.ensure(request("pg-a", expires_at=clock.now + 10))
    made.paid["pg-a"] = clock.now + 40  # a top-up, durable; its PATCH keeps failing
    kube.hooks.fail_next("PATCH", r"/pods/pg-a$", status=503, times=1000)
    with pytest.raises(PodsUnavailable):
        await pods.patch_expiry("pg-a", made.paid["pg-a"])
    clock.now += 20  # past the annotation, within the durable paid end
    kept = await pods.keep_once()
    assert kept.reaped == [] and kept.patched == []
    assert await _annotation(admin, "pg-a") == clock.now - 10  # still behind
    kube.hooks.clear_failures()
    assert (await pods.keep_once()).patched == ["pg-a"]
    assert await _annotation(admin, "pg-a") == made.paid["pg-a"]
    assert (await pods.keep_once()).patched == []  # matches: nothing more to do
    clock.now += 20
    assert (await pods.keep_once()).reaped == ["pg-a"]


async def test_a_restart_checks_every_annotation_against_the_durable_paid_end(
    kube: FakeKubeApi, admin: Any, made: Made
) -> None:
    await admin.create_namespaced_pod(
        NS, pod_manifest(request("pg-a", expires_at=made.clock.now + 10), NS, 30)
    )
    made.paid["pg-a"] = made.clock.now + 50  # paid, but the process died before its PATCH
    await made.pods.start()
    assert (await made.pods.keep_once()).patched == ["pg-a"]
    assert await _annotation(admin, "pg-a") == made.paid["pg-a"]


async def _annotation(admin: Any, name: str) -> float | None:
    pod = await admin.read_namespaced_pod(name, NS)
    return parse_rfc3339(pod.metadata.annotations[EXPIRES_ANNOTATION])


def test_rfc3339_round_trip() -> None:
    assert parse_rfc3339(rfc3339(1_800_000_000)) == 1_800_000_000
    assert parse_rfc3339("garbage") is None
