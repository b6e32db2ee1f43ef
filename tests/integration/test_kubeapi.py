"""The fake Kubernetes pods API (tests/peers/kubeapi/), driven only through the real
``kubernetes_asyncio`` client over a loopback socket: the rules of a real API server that
Paygress lives with (RBAC on the chart's Role, Pod Security restricted, validation, watch
semantics, graceful deletion), and the loud refusal of what the fake does not implement."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.rest import ApiException

from tests.peers.kubeapi import PAYGRESS_USER, FakeKubeApi, PodObserver, chart_role_rules
from tests.peers.kubeapi.selectors import labels_match, parse_label_selector
from tests.peers.kubeapi.validation import parse_quantity

NS = "paid"
MERGE = "application/merge-patch+json"


@pytest_asyncio.fixture
async def kube() -> AsyncIterator[FakeKubeApi]:
    async with FakeKubeApi(namespaces=[NS]) as server:
        yield server


@pytest_asyncio.fixture
async def v1(kube: FakeKubeApi, tmp_path: Path) -> AsyncIterator[Any]:
    """Paygress's view: a CoreV1Api from a kubeconfig with the service account's token."""
    cfg = client.Configuration()
    path = kube.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    await config.load_kube_config(config_file=str(path), client_configuration=cfg)
    async with client.ApiClient(cfg) as api:
        yield client.CoreV1Api(api)


@pytest_asyncio.fixture
async def seen(kube: FakeKubeApi) -> AsyncIterator[PodObserver]:
    """What a test observes, through the API with the admin's token."""
    observer = PodObserver(kube.client_configuration(admin=True), NS)
    yield observer
    await observer.aclose()


def pod_body(
    name: str = "pod-a",
    *,
    labels: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
    deadline: int | None = 600,
    security: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A pod that Pod Security ``restricted`` admits (unless ``security`` says otherwise)."""
    container_security = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "app",
                "image": "ghcr.io/example/app:1.0",
                "ports": [{"containerPort": 8080}],
                "resources": {"limits": limits or {"cpu": "500m", "memory": "256Mi"}},
                "securityContext": container_security if security is None else security,
            }
        ]
    }
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    meta = {"name": name, "labels": labels or {"app": "tier"}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


async def api_error(awaitable: Any) -> dict[str, Any]:
    """The Status body of a refused call."""
    with pytest.raises(ApiException) as info:
        await awaitable
    assert info.value.body is not None
    body: dict[str, Any] = json.loads(info.value.body)
    assert body["kind"] == "Status" and body["status"] == "Failure"
    assert body["code"] == info.value.status
    return body


# -- pure parts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "millis"),
    [
        ("500m", 500),
        ("0.5", 500),
        ("1", 1000),
        ("2k", 2_000_000),
        ("1Ki", 1_024_000),
        ("1e3", 10**6),
    ],
)
def test_quantities_parse_like_the_api_server(text: str, millis: int) -> None:
    assert parse_quantity(text) * 1000 == millis


@pytest.mark.parametrize("text", ["2 cores", "", "1.2.3", "1K", "1mi", "abc"])
def test_bad_quantities_are_refused(text: str) -> None:
    with pytest.raises(Exception, match="quantit"):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("", {}, True),
        (
            "app.kubernetes.io/managed-by=paygress",
            {"app.kubernetes.io/managed-by": "paygress"},
            True,
        ),
        ("app==web", {"app": "db"}, False),
        ("app!=web", {}, True),
        ("app", {"app": ""}, True),
        ("!app", {"app": "x"}, False),
        ("app=web,!legacy", {"app": "web"}, True),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert labels_match(parse_label_selector(selector), labels) is expected


def test_the_role_is_the_charts() -> None:
    [rule] = chart_role_rules()
    assert rule == {
        "apiGroups": [""],
        "resources": ["pods"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    }


# -- authentication and RBAC -------------------------------------------------------------------


async def test_tokens_and_the_charts_role(kube: FakeKubeApi, v1: Any) -> None:
    for cfg in (
        client.Configuration(host=kube.url),  # no token
        client.Configuration(host=kube.url, api_key={"BearerToken": kube.token}),  # no "Bearer"
        kube.client_configuration(token="stolen"),
    ):
        async with client.ApiClient(cfg) as api:
            status = await api_error(client.CoreV1Api(api).list_namespaced_pod(NS))
        assert (status["code"], status["reason"]) == (401, "Unauthorized")
    assert (await v1.list_namespaced_pod(NS)).items == []
    # outside its namespace, and for verbs the Role lacks, Paygress gets 403
    kube.add_namespace("other")
    status = await api_error(v1.list_namespaced_pod("other"))
    assert (status["code"], status["reason"]) == (403, "Forbidden")
    assert status["message"] == (
        f'pods is forbidden: User "{PAYGRESS_USER}" cannot list resource "pods" in API group "" '
        'in the namespace "other"'
    )
    status = await api_error(v1.delete_collection_namespaced_pod(NS))
    assert "cannot deletecollection resource" in status["message"]
    status = await api_error(v1.replace_namespaced_pod("x", NS, pod_body("x")))
    assert "cannot update resource" in status["message"]


async def test_rbac_not_ready_is_403_until_it_is(
    kube: FakeKubeApi, v1: Any, seen: PodObserver
) -> None:
    kube.hooks.set_rbac_ready(False)
    status = await api_error(v1.list_namespaced_pod(NS))
    assert status["code"] == 403
    assert await seen.pods("") == []  # the admin is served all along
    kube.hooks.set_rbac_ready(True)
    assert (await v1.list_namespaced_pod(NS)).items == []


# -- create: validation and Pod Security -------------------------------------------------------


async def test_create_defaults_and_round_trip(
    kube: FakeKubeApi, v1: Any, seen: PodObserver
) -> None:
    created = await v1.create_namespaced_pod(NS, pod_body("pod-a"))
    assert created.metadata.namespace == NS and created.metadata.uid
    assert created.status.phase == "Pending" and created.status.qos_class == "Guaranteed"
    [container] = created.spec.containers
    assert container.resources.requests == {"cpu": "500m", "memory": "256Mi"}  # from limits
    assert container.image_pull_policy == "IfNotPresent" and container.ports[0].protocol == "TCP"
    got = await seen.pod("pod-a")
    assert got is not None and got["metadata"]["uid"] == created.metadata.uid
    status = await api_error(v1.create_namespaced_pod(NS, pod_body("pod-a")))
    assert (status["code"], status["reason"]) == (409, "AlreadyExists")
    assert status["message"] == 'pods "pod-a" already exists'
    status = await api_error(v1.create_namespaced_pod("nowhere", pod_body()))
    assert status["code"] == 403  # no Role there; the admin would get 404 namespaces


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"metadata": {"name": "Bad_Name"}}, "metadata.name", "RFC 1123 subdomain"),
        ({"metadata": {"labels": {"k": "bad value!"}}}, "metadata.labels", "a valid label"),
        ({"spec": {"containers": []}}, "spec.containers", "Required value"),
        ({"spec": {"activeDeadlineSeconds": 0}}, "spec.activeDeadlineSeconds", "between 1 and"),
        ({"spec": {"restartPolicy": "Sometimes"}}, "spec.restartPolicy", "Unsupported value"),
    ],
)
async def test_invalid_pods_are_422(
    v1: Any, change: dict[str, Any], field: str, message: str
) -> None:
    body = pod_body("valid-name")
    for part, values in change.items():
        body[part].update(values)
    status = await api_error(v1.create_namespaced_pod(NS, body))
    assert (status["code"], status["reason"]) == (422, "Invalid")
    assert any(c["field"] == field and message in c["message"] for c in status["details"]["causes"])


async def test_decode_errors_unknown_fields_and_quantities(kube: FakeKubeApi, v1: Any) -> None:
    body = pod_body("typed")
    body["spec"]["activeDeadlineSeconds"] = "60"
    status = await api_error(v1.create_namespaced_pod(NS, body))
    assert status["code"] == 400 and "cannot unmarshal string" in status["message"]
    body = pod_body("typo")
    body["spec"]["automountServiceAccountTokens"] = False  # a typo
    status = await api_error(v1.create_namespaced_pod(NS, body, field_validation="Strict"))
    assert 'unknown field "spec.automountServiceAccountTokens"' in status["message"]
    await v1.create_namespaced_pod(NS, body)  # default: a warning, the field dropped
    assert kube.hooks.warnings == ['unknown field "spec.automountServiceAccountTokens"']
    status = await api_error(v1.create_namespaced_pod(NS, pod_body("q", limits={"cpu": "2 cores"})))
    assert status["code"] == 400 and "quantities must match" in status["message"]


async def test_pod_security_restricted(v1: Any) -> None:
    status = await api_error(v1.create_namespaced_pod(NS, pod_body("loose", security={})))
    assert (status["code"], status["reason"]) == (403, "Forbidden")
    assert status["message"] == (
        'pods "loose" is forbidden: violates PodSecurity "restricted:latest": '
        'allowPrivilegeEscalation != false (container "app" must set '
        "securityContext.allowPrivilegeEscalation=false), unrestricted capabilities "
        '(container "app" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot '
        '!= true (pod or container "app" must set securityContext.runAsNonRoot=true), '
        'seccompProfile (pod or container "app" must set securityContext.seccompProfile.type '
        'to "RuntimeDefault" or "Localhost")'
    )
    risky = {"privileged": True, "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}
    status = await api_error(v1.create_namespaced_pod(NS, pod_body("risky", security=risky)))
    assert "privileged (container" in status["message"]
    assert 'must not include "SYS_ADMIN"' in status["message"]


async def test_paygress_pods_are_admitted(v1: Any) -> None:
    from paygress.core.ports import PodRequest
    from paygress.core.tiers import Tier
    from paygress.pods import pod_manifest

    tier = Tier("small", "500m", "512Mi", ("app:1",), 8080, 1000, 10, 600)
    request = PodRequest("pg-small-1", tier, "app:1", "f" * 64, "pods", 10, 2e9)
    created = await v1.create_namespaced_pod(
        NS, pod_manifest(request, NS, 30), field_validation="Strict"
    )
    assert created.spec.automount_service_account_token is False


# -- get, patch, delete -------------------------------------------------------------------------


async def test_merge_patch_and_what_a_live_pod_may_change(v1: Any) -> None:
    await v1.create_namespaced_pod(NS, pod_body("p"))
    patched = await v1.patch_namespaced_pod(
        "p", NS, {"metadata": {"annotations": {"paygress.io/expires-at": "x"}}}, _content_type=MERGE
    )
    assert patched.metadata.annotations == {"paygress.io/expires-at": "x"}
    same = await v1.patch_namespaced_pod(
        "p", NS, {"metadata": {"annotations": {"paygress.io/expires-at": "x"}}}, _content_type=MERGE
    )
    assert same.metadata.resource_version == patched.metadata.resource_version  # a no-op
    lowered = await v1.patch_namespaced_pod(
        "p", NS, {"spec": {"activeDeadlineSeconds": 300}}, _content_type=MERGE
    )
    assert lowered.spec.active_deadline_seconds == 300
    status = await api_error(
        v1.patch_namespaced_pod(
            "p", NS, {"spec": {"activeDeadlineSeconds": 900}}, _content_type=MERGE
        )
    )
    assert status["message"] == (
        'Pod "p" is invalid: spec.activeDeadlineSeconds: Invalid value: 900: '
        "must be less than or equal to previous value"
    )
    status = await api_error(
        v1.patch_namespaced_pod("p", NS, {"spec": {"restartPolicy": "Never"}}, _content_type=MERGE)
    )
    assert status["details"]["causes"][0]["reason"] == "FieldValueForbidden"
    stale = {"metadata": {"resourceVersion": "1", "labels": {"x": "y"}}}
    status = await api_error(v1.patch_namespaced_pod("p", NS, stale, _content_type=MERGE))
    assert (status["code"], status["reason"]) == (409, "Conflict")
    ignored = await v1.patch_namespaced_pod(
        "p", NS, {"status": {"phase": "Succeeded"}}, _content_type=MERGE
    )
    assert ignored.status.phase == "Pending"  # status goes through /status only


async def test_missing_pods_are_404(v1: Any) -> None:
    for call in (
        v1.read_namespaced_pod("ghost", NS),
        v1.delete_namespaced_pod("ghost", NS),
        v1.patch_namespaced_pod("ghost", NS, {"metadata": {}}, _content_type=MERGE),
    ):
        status = await api_error(call)
        assert (status["code"], status["message"]) == (404, 'pods "ghost" not found')


async def test_what_the_fake_does_not_implement_is_refused_loudly(kube: FakeKubeApi) -> None:
    async with client.ApiClient(kube.client_configuration(admin=True)) as api:
        admin: Any = client.CoreV1Api(api)
        await admin.create_namespaced_pod(NS, pod_body("p"))
        for call, what in (
            (admin.patch_namespaced_pod("p", NS, {"metadata": {}}), "strategic-merge-patch"),
            (admin.patch_namespaced_pod("p", NS, [{"op": "test", "path": "/a"}]), "json-patch"),
            (admin.list_namespaced_pod(NS, field_selector="status.phase=Running"), "fieldSelector"),
            (admin.list_namespaced_pod(NS, limit=1), "limit"),
            (admin.list_namespaced_pod(NS, label_selector="a in (b)"), "set-based"),
            (admin.delete_collection_namespaced_pod(NS), "deletecollection"),
        ):
            status = await api_error(call)
            assert status["code"] == 400 and "does not implement" in status["message"], what
            assert what in status["message"]


async def test_graceful_deletion(kube: FakeKubeApi, v1: Any, seen: PodObserver) -> None:
    await v1.create_namespaced_pod(NS, pod_body("slow"))
    kube.hooks.set_running(NS, "slow")
    first = await v1.delete_namespaced_pod("slow", NS, grace_period_seconds=10)
    assert first.metadata.deletion_timestamp is not None
    assert first.metadata.deletion_grace_period_seconds == 10
    again = await v1.delete_namespaced_pod("slow", NS, grace_period_seconds=10)
    assert again.metadata.resource_version == first.metadata.resource_version  # nothing new
    pod = await seen.pod("slow")
    assert pod is not None and pod["metadata"]["deletionTimestamp"]
    await seen.wait("slow", "gone", lambda p: p is None, within=3)  # containers stopped
    kube.kubelet.node_name = None  # a pod no node runs yet is deleted at once
    await v1.create_namespaced_pod(NS, pod_body("unbound"))
    await v1.delete_namespaced_pod("unbound", NS)
    assert await seen.pod("unbound") is None


async def test_deadline_fails_the_pod(kube: FakeKubeApi, v1: Any) -> None:
    await v1.create_namespaced_pod(NS, pod_body("paid-60s", deadline=60))
    kube.hooks.set_running(NS, "paid-60s")
    kube.hooks.advance_time(59)
    assert (await v1.read_namespaced_pod("paid-60s", NS)).status.phase == "Running"
    kube.hooks.advance_time(2)
    pod = await v1.read_namespaced_pod("paid-60s", NS)
    assert (pod.status.phase, pod.status.reason) == ("Failed", "DeadlineExceeded")
    assert pod.status.container_statuses[0].state.terminated.exit_code == 137


# -- watch ---------------------------------------------------------------------------------------


async def collect(v1: Any, count: int, **kwargs: Any) -> list[tuple[str, str]]:
    """(type, name) of the first ``count`` events of a watch of ``app=tier`` pods."""
    events: list[tuple[str, str]] = []
    async with watch.Watch() as w:
        async for event in w.stream(
            v1.list_namespaced_pod, NS, label_selector="app=tier", **kwargs
        ):
            name = (event["raw_object"].get("metadata") or {}).get("name", "")
            events.append((event["type"], name))
            if len(events) == count:
                break
    return events


async def test_watch_added_modified_deleted(kube: FakeKubeApi, v1: Any) -> None:
    task = asyncio.create_task(collect(v1, 4, timeout_seconds=5))
    await kube.hooks.wait_for_watchers()
    await v1.create_namespaced_pod(NS, pod_body("w1"))
    await v1.create_namespaced_pod(NS, pod_body("other", labels={"app": "else"}))
    kube.hooks.set_running(NS, "w1")
    await v1.delete_namespaced_pod("w1", NS, grace_period_seconds=0)
    events = await asyncio.wait_for(task, timeout=5)
    assert events[0] == ("ADDED", "w1") and events[-1] == ("DELETED", "w1")
    assert {name for _, name in events} == {"w1"}


async def test_watch_resumes_from_a_resource_version(kube: FakeKubeApi, v1: Any) -> None:
    await v1.create_namespaced_pod(NS, pod_body("t1"))
    listed = await v1.list_namespaced_pod(NS, label_selector="app=tier")
    await v1.patch_namespaced_pod(
        "t1", NS, {"metadata": {"labels": {"app": "no"}}}, _content_type=MERGE
    )
    await v1.patch_namespaced_pod(
        "t1", NS, {"metadata": {"labels": {"app": "tier"}}}, _content_type=MERGE
    )
    rv = listed.metadata.resource_version
    events = await collect(v1, 2, resource_version=rv, timeout_seconds=1)
    assert events == [("DELETED", "t1"), ("ADDED", "t1")]  # leaving and entering the selection
    kube.hooks.compact()
    with pytest.raises(ApiException) as info:
        await collect(v1, 1, resource_version=rv, timeout_seconds=1)
    assert info.value.status == 410 and "too old resource version" in str(info.value.reason)


async def test_watch_bookmarks_and_timeout(kube: FakeKubeApi, v1: Any) -> None:
    rv = (await v1.list_namespaced_pod(NS)).metadata.resource_version
    task = asyncio.create_task(
        collect(v1, 2, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=1)
    )
    await kube.hooks.wait_for_watchers()
    kube.hooks.send_bookmarks()
    assert await task == [("BOOKMARK", ""), ("BOOKMARK", "")]  # asked for, then before timeout
    assert kube.connections == 1  # keep-alive, also across the chunked watch


async def test_injected_failures_and_delays(kube: FakeKubeApi, v1: Any) -> None:
    kube.hooks.fail_next("POST", r"/pods$", status=503)
    status = await api_error(v1.create_namespaced_pod(NS, pod_body("x")))
    assert (status["code"], status["reason"]) == (503, "ServiceUnavailable")
    await v1.create_namespaced_pod(NS, pod_body("x"))  # only once
    kube.hooks.fail_next("GET", r"/pods(\?|$)", status=429, times=2)
    for _ in range(2):
        with pytest.raises(ApiException) as info:
            await v1.list_namespaced_pod(NS)
        assert info.value.status == 429 and info.value.headers is not None
        assert info.value.headers["Retry-After"] == "1"
    assert len((await v1.list_namespaced_pod(NS)).items) == 1
    assert [r.status for r in kube.hooks.requests] == [503, 201, 429, 429, 200]
    assert kube.hooks.count("create") == 2 and kube.hooks.count("list", user=PAYGRESS_USER) == 3
    kube.hooks.fail_next("GET", r"/pods/slow$", status=None, delay=0.5)
    with pytest.raises(asyncio.TimeoutError):
        await v1.read_namespaced_pod("slow", NS, _request_timeout=0.1)
