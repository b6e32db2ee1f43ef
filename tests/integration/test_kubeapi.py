"""The fake Kubernetes pods API (tests/peers/kubeapi.py), driven only through the real
``kubernetes_asyncio`` client over a loopback socket; plus unit tests of its quantity and
selector parsers and patch functions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

pytest.importorskip("kubernetes_asyncio")

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.rest import ApiException

from tests.peers.kubeapi import (
    FakeKubeApi,
    QuantityError,
    Requirement,
    SelectorError,
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
    labels_match,
    parse_field_selector,
    parse_label_selector,
    parse_quantity,
)

pytestmark = pytest.mark.integration

NS = "paid"


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest_asyncio.fixture
async def kube() -> AsyncIterator[FakeKubeApi]:
    async with FakeKubeApi(namespaces=["default", NS]) as server:
        yield server


@pytest_asyncio.fixture
async def v1(kube: FakeKubeApi, tmp_path: Path) -> AsyncIterator[client.CoreV1Api]:
    """A CoreV1Api configured from a kubeconfig file, into a fresh Configuration."""
    cfg = client.Configuration()
    path = kube.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    await config.load_kube_config(config_file=str(path), client_configuration=cfg)
    async with client.ApiClient(cfg) as api:
        yield client.CoreV1Api(api)


def pod_body(
    name: str | None = "pod-a",
    *,
    labels: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
    requests: dict[str, str] | None = None,
    deadline: int | None = 600,
    image: str = "ghcr.io/example/app:1.0",
) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {"app": "paygress-tier"}),
        spec=client.V1PodSpec(
            restart_policy="Never",
            active_deadline_seconds=deadline,
            containers=[
                client.V1Container(
                    name="app",
                    image=image,
                    ports=[client.V1ContainerPort(container_port=8080)],
                    resources=client.V1ResourceRequirements(
                        limits=limits or {"cpu": "500m", "memory": "256Mi"}, requests=requests
                    ),
                )
            ],
        ),
    )


def status_of(exc: ApiException) -> dict[str, Any]:
    # typed ``bytes | None``; after a normal call it is the decoded ``str`` body
    assert exc.body is not None
    body = json.loads(exc.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == exc.status
    return body  # type: ignore[no-any-return]


async def api_error(awaitable: Any) -> dict[str, Any]:
    with pytest.raises(ApiException) as info:
        await awaitable
    return status_of(info.value)


# -- quantities ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "stored"),
    [
        ("0", Fraction(0), "0"),
        ("500m", Fraction(1, 2), "500m"),
        ("0.5", Fraction(1, 2), "500m"),
        ("1", Fraction(1), "1"),
        ("1000m", Fraction(1), "1"),
        ("1.5", Fraction(3, 2), "1500m"),
        ("1500", Fraction(1500), "1500"),
        ("2000", Fraction(2000), "2k"),
        ("1k", Fraction(1000), "1k"),
        ("1M", Fraction(10**6), "1M"),
        ("2G", Fraction(2 * 10**9), "2G"),
        ("1T", Fraction(10**12), "1T"),
        ("1P", Fraction(10**15), "1P"),
        ("1E", Fraction(10**18), "1E"),
        ("100n", Fraction(100, 10**9), "100n"),
        ("5u", Fraction(5, 10**6), "5u"),
        ("1Ki", Fraction(1024), "1Ki"),
        ("256Mi", Fraction(256 * 2**20), "256Mi"),
        ("2048Ki", Fraction(2 * 2**20), "2Mi"),
        ("1.5Gi", Fraction(3 * 2**29), "1536Mi"),
        ("1Ti", Fraction(2**40), "1Ti"),
        ("1Pi", Fraction(2**50), "1Pi"),
        ("1Ei", Fraction(2**60), "1Ei"),
        ("0.5Ki", Fraction(512), "512"),
        ("1e3", Fraction(1000), "1e3"),
        ("1E3", Fraction(1000), "1E3"),
        ("1.5e3", Fraction(1500), "1500"),
        ("5e-3", Fraction(5, 1000), "5e-3"),
        ("12e6", Fraction(12 * 10**6), "12e6"),
        ("-1", Fraction(-1), "-1"),
        ("+1", Fraction(1), "+1"),
        ("0.1n", Fraction(1, 10**9), "1n"),
        (".5", Fraction(1, 2), "500m"),
    ],
)
def test_quantity_parsing(text: str, value: Fraction, stored: str) -> None:
    q = parse_quantity(text)
    assert (q.value, q.text) == (value, stored)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2 cores", "quantities must match the regular expression"),
        ("", "quantities must match the regular expression"),
        ("1.2.3", "quantities must match the regular expression"),
        ("abc", "quantities must match the regular expression"),
        ("1Kb", "quantities must match the regular expression"),
        ("1K", "unable to parse quantity's suffix"),
        ("1mi", "unable to parse quantity's suffix"),
        ("1e", "unable to parse quantity's suffix"),
        ("1ee3", "unable to parse quantity's suffix"),
    ],
)
def test_quantity_errors(text: str, message: str) -> None:
    with pytest.raises(QuantityError, match=message):
        parse_quantity(text)


def test_quantity_order() -> None:
    assert parse_quantity("500m") < parse_quantity("1") <= parse_quantity("1000m")
    assert parse_quantity("1Gi") > parse_quantity("1G")


# -- selectors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("", {}, True),
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "web"}, True),
        ("app=web", {"app": "db"}, False),
        ("app!=web", {"app": "db"}, True),
        ("app!=web", {}, True),
        ("app in (web, db)", {"app": "db"}, True),
        ("app in (web,db)", {"app": "x"}, False),
        ("app notin (web)", {}, True),
        ("app notin (web)", {"app": "web"}, False),
        ("app", {"app": ""}, True),
        ("app", {}, False),
        ("!app", {}, True),
        ("!app", {"app": "x"}, False),
        ("app=web,tier in (a,b),!legacy", {"app": "web", "tier": "b"}, True),
        ("app=web,tier in (a,b),!legacy", {"app": "web", "tier": "b", "legacy": "1"}, False),
        ("paygress.io/tier=gold", {"paygress.io/tier": "gold"}, True),
        ("app=", {"app": ""}, True),
        ("replicas>2", {"replicas": "3"}, True),
        ("replicas<2", {"replicas": "3"}, False),
    ],
)
def test_label_selector(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert labels_match(parse_label_selector(selector), labels) is expected


def test_label_selector_structure() -> None:
    assert parse_label_selector("a in (y,x), !b,c!=d") == [
        Requirement("a", "in", ("x", "y")),
        Requirement("b", "!"),
        Requirement("c", "!=", ("d",)),
    ]


@pytest.mark.parametrize(
    "selector",
    ["a in ()", "a in x", "a=b=c", ",a", "a,", "a b", "bad key!=x", "a=bad!", "a>x", "a in (x"],
)
def test_label_selector_errors(selector: str) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector(selector)


def test_field_selector() -> None:
    assert parse_field_selector("metadata.name=a,status.phase!=Running,spec.nodeName==n") == [
        Requirement("metadata.name", "=", ("a",)),
        Requirement("status.phase", "!=", ("Running",)),
        Requirement("spec.nodeName", "=", ("n",)),
    ]
    with pytest.raises(SelectorError, match=r"field label not supported: spec\.image"):
        parse_field_selector("spec.image=x")
    with pytest.raises(SelectorError):
        parse_field_selector("metadata.name")


# -- patches ---------------------------------------------------------------------------------------


def test_json_patch_ops() -> None:
    doc = {"metadata": {"labels": {"a": "1"}}, "list": [1, 2]}
    out = apply_json_patch(
        doc,
        [
            {"op": "add", "path": "/metadata/annotations", "value": {}},
            {"op": "add", "path": "/metadata/annotations/paygress.io~1expires", "value": "t"},
            {"op": "replace", "path": "/metadata/labels/a", "value": "2"},
            {"op": "remove", "path": "/list/0"},
            {"op": "add", "path": "/list/-", "value": 3},
            {"op": "copy", "from": "/list", "path": "/copied"},
            {"op": "move", "from": "/copied", "path": "/moved"},
            {"op": "test", "path": "/moved", "value": [2, 3]},
        ],
    )
    assert out == {
        "metadata": {"labels": {"a": "2"}, "annotations": {"paygress.io/expires": "t"}},
        "list": [2, 3],
        "moved": [2, 3],
    }
    assert doc["list"] == [1, 2]  # not modified in place


def test_merge_and_strategic_patches() -> None:
    pod = {
        "metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x/y"]},
        "spec": {"containers": [{"name": "app", "image": "i:1", "ports": [{"containerPort": 80}]}]},
    }
    merged = apply_merge_patch(pod, {"metadata": {"labels": {"a": None, "c": "3"}}})
    assert merged["metadata"]["labels"] == {"b": "2", "c": "3"}
    image = {"spec": {"containers": [{"name": "app", "image": "i:2"}]}}
    assert apply_merge_patch(pod, image)["spec"]["containers"] == [{"name": "app", "image": "i:2"}]
    smp = apply_strategic_merge_patch(pod, image)
    assert smp["spec"]["containers"] == [
        {"name": "app", "image": "i:2", "ports": [{"containerPort": 80}]}
    ]
    smp = apply_strategic_merge_patch(
        pod,
        {
            "metadata": {"finalizers": ["z/w"], "$deleteFromPrimitiveList/finalizers": ["x/y"]},
            "spec": {"containers": [{"name": "app", "$patch": "delete"}]},
        },
    )
    assert smp["metadata"]["finalizers"] == ["z/w"]
    assert smp["spec"]["containers"] == []


# -- discovery, auth ---------------------------------------------------------------------------


async def test_discovery_endpoints(kube: FakeKubeApi) -> None:
    async with client.ApiClient(kube.client_configuration()) as api:
        await _discovery(api)


async def _discovery(api: client.ApiClient) -> None:
    v1 = client.CoreV1Api(api)
    version = await client.VersionApi(api).get_code()
    assert version.major == "1" and version.git_version.startswith("v1.")
    versions = await client.CoreApi(api).get_api_versions()
    assert versions.versions == ["v1"]
    resources = await v1.get_api_resources()
    pods = next(r for r in resources.resources if r.name == "pods")
    assert pods.namespaced and pods.kind == "Pod" and "watch" in pods.verbs


async def test_kubeconfig_context_namespace(kube: FakeKubeApi, tmp_path: Path) -> None:
    path = kube.write_kubeconfig(tmp_path / "kc", namespace=NS)
    cfg = client.Configuration()
    loader = await config.load_kube_config(config_file=str(path), client_configuration=cfg)
    context = loader.current_context
    assert context is not None and context["context"]["namespace"] == NS
    assert cfg.host == kube.url
    # the loader bakes the scheme into the key: api_key["BearerToken"] == "Bearer <token>"
    assert cfg.api_key == {"BearerToken": f"Bearer {kube.token}"}


async def test_client_configuration_built_directly(kube: FakeKubeApi) -> None:
    async with client.ApiClient(kube.client_configuration()) as api:
        pods = await client.CoreV1Api(api).list_namespaced_pod(NS)
    assert pods.items == []
    assert kube.request_log[-1].headers["authorization"] == f"Bearer {kube.token}"


async def test_missing_wrong_and_unprefixed_tokens_get_401(kube: FakeKubeApi) -> None:
    async def list_with(cfg: client.Configuration) -> dict[str, Any]:
        async with client.ApiClient(cfg) as api:
            return await api_error(client.CoreV1Api(api).list_namespaced_pod(NS))

    anonymous = client.Configuration(host=kube.url)
    status = await list_with(anonymous)
    assert (status["code"], status["reason"], status["message"]) == (
        401,
        "Unauthorized",
        "Unauthorized",
    )
    assert "authorization" not in kube.request_log[-1].headers

    # the known quirk: api_key without api_key_prefix sends the bare token, no "Bearer"
    unprefixed = client.Configuration(host=kube.url, api_key={"BearerToken": kube.token})
    assert (await list_with(unprefixed))["code"] == 401
    assert kube.request_log[-1].headers["authorization"] == kube.token

    wrong = kube.client_configuration(token="not-the-token")
    assert (await list_with(wrong))["code"] == 401


async def test_wrong_token_in_kubeconfig_gets_401(kube: FakeKubeApi, tmp_path: Path) -> None:
    path = kube.write_kubeconfig(tmp_path / "kc", token="stolen")
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=cfg)
    async with client.ApiClient(cfg) as api:
        status = await api_error(client.CoreV1Api(api).read_namespaced_pod("x", NS))
    assert status["reason"] == "Unauthorized"


async def test_anonymous_mode_answers_403() -> None:
    async with (
        FakeKubeApi(anonymous=True) as kube,
        client.ApiClient(client.Configuration(host=kube.url)) as api,
    ):
        status = await api_error(client.CoreV1Api(api).list_namespaced_pod("default"))
        version = await client.VersionApi(api).get_code()
    assert status["code"] == 403 and status["reason"] == "Forbidden"
    assert 'User "system:anonymous" cannot list resource "pods"' in status["message"]
    assert version.major == "1"  # /version is public


# -- create ----------------------------------------------------------------------------------------


async def test_create_get_list_patch_delete_round_trip(
    kube: FakeKubeApi, v1: client.CoreV1Api
) -> None:
    created = await v1.create_namespaced_pod(NS, pod_body("pod-a", labels={"tier": "gold"}))
    meta = created.metadata
    assert meta.namespace == NS and meta.uid and meta.creation_timestamp is not None
    assert int(meta.resource_version) > 0
    assert created.status.phase == "Pending"
    assert created.status.qos_class == "Guaranteed"  # requests defaulted from limits
    assert created.spec.containers[0].resources.requests == {"cpu": "500m", "memory": "256Mi"}
    assert created.spec.containers[0].image_pull_policy == "IfNotPresent"
    assert created.spec.containers[0].ports[0].protocol == "TCP"
    assert kube.request_log[-1].status == 201

    got = await v1.read_namespaced_pod("pod-a", NS)
    assert got.metadata.uid == meta.uid
    assert got.spec.node_name == "fake-node"  # bound at the next request
    assert int(got.metadata.resource_version) > int(meta.resource_version)

    await v1.create_namespaced_pod(NS, pod_body("pod-b", labels={"tier": "silver"}))
    listed = await v1.list_namespaced_pod(NS, label_selector="tier in (gold,platinum)")
    assert [p.metadata.name for p in listed.items] == ["pod-a"]
    assert int(listed.metadata.resource_version) >= int(got.metadata.resource_version)

    patched = await v1.patch_namespaced_pod(
        "pod-a", NS, {"metadata": {"annotations": {"paygress.io/expires": "2030-01-01T00:00:00Z"}}}
    )
    assert patched.metadata.annotations == {"paygress.io/expires": "2030-01-01T00:00:00Z"}
    assert int(patched.metadata.resource_version) > int(got.metadata.resource_version)

    deleted = await v1.delete_namespaced_pod("pod-a", NS)
    assert deleted.metadata.name == "pod-a"
    assert [p["metadata"]["name"] for p in kube.pods(NS)] == ["pod-b"]


async def test_generate_name(v1: client.CoreV1Api) -> None:
    body = pod_body(None)
    body.metadata.generate_name = "tier-gold-"
    created = await v1.create_namespaced_pod(NS, body)
    assert created.metadata.name.startswith("tier-gold-")
    assert len(created.metadata.name) == len("tier-gold-") + 5


async def test_duplicate_create_is_409(v1: client.CoreV1Api) -> None:
    await v1.create_namespaced_pod(NS, pod_body("dup"))
    status = await api_error(v1.create_namespaced_pod(NS, pod_body("dup")))
    assert status["code"] == 409 and status["reason"] == "AlreadyExists"
    assert status["message"] == 'pods "dup" already exists'
    assert status["details"] == {"name": "dup", "kind": "pods"}


async def test_namespace_errors(v1: client.CoreV1Api) -> None:
    status = await api_error(v1.create_namespaced_pod("nowhere", pod_body()))
    assert (status["code"], status["reason"]) == (404, "NotFound")
    assert status["message"] == 'namespaces "nowhere" not found'
    body = pod_body()
    body.metadata.namespace = "default"
    status = await api_error(v1.create_namespaced_pod(NS, body))
    assert (status["code"], status["reason"]) == (400, "BadRequest")
    assert "does not match the namespace sent on the request" in status["message"]


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        (lambda b: setattr(b.metadata, "name", "Bad_Name"), "metadata.name", "RFC 1123 subdomain"),
        (lambda b: setattr(b.metadata, "name", "a" * 254), "metadata.name", "no more than 253"),
        (
            lambda b: setattr(b.metadata, "labels", {"bad key": "x"}),
            "metadata.labels",
            "name part must consist of alphanumeric characters",
        ),
        (
            lambda b: setattr(b.metadata, "labels", {"UPPER.example.com/k": "x"}),
            "metadata.labels",
            "prefix part a lowercase RFC 1123 subdomain",
        ),
        (
            lambda b: setattr(b.metadata, "labels", {"k": "bad value!"}),
            "metadata.labels",
            "a valid label must be an empty string",
        ),
        (
            lambda b: setattr(b.metadata, "labels", {"k": "v" * 64}),
            "metadata.labels",
            "must be no more than 63 characters",
        ),
        (
            lambda b: setattr(b.metadata, "annotations", {"big": "x" * (256 * 1024)}),
            "metadata.annotations",
            "Too long: may not be more than 262144 bytes",
        ),
        (lambda b: setattr(b.spec, "containers", []), "spec.containers", "Required value"),
        (
            lambda b: setattr(b.spec.containers[0], "name", "App_1"),
            "spec.containers[0].name",
            "RFC 1123 label",
        ),
        (
            lambda b: setattr(b.spec.containers[0], "image", ""),
            "spec.containers[0].image",
            "Required value",
        ),
        (
            lambda b: setattr(b.spec, "active_deadline_seconds", 0),
            "spec.activeDeadlineSeconds",
            "Invalid value: 0: must be between 1 and 2147483647, inclusive",
        ),
        (
            lambda b: setattr(b.spec.containers[0].ports[0], "container_port", 70000),
            "spec.containers[0].ports[0].containerPort",
            "must be between 1 and 65535, inclusive",
        ),
        (
            lambda b: setattr(b.spec.containers[0].ports[0], "container_port", -1),
            "spec.containers[0].ports[0].containerPort",
            "Invalid value: -1",
        ),
        (
            lambda b: setattr(
                b.spec.containers[0].resources, "requests", {"cpu": "2", "memory": "256Mi"}
            ),
            "spec.containers[0].resources.requests",
            'Invalid value: "2": must be less than or equal to cpu limit of 500m',
        ),
        (
            lambda b: setattr(b.spec.containers[0].resources, "limits", {"cpu": "-1"}),
            "spec.containers[0].resources.limits[cpu]",
            "must be greater than or equal to 0",
        ),
        (
            lambda b: setattr(b.spec, "restart_policy", "Sometimes"),
            "spec.restartPolicy",
            'Unsupported value: "Sometimes"',
        ),
    ],
)
async def test_create_validation_422(
    v1: client.CoreV1Api, mutate: Any, field: str, message: str
) -> None:
    body = pod_body("valid-name")
    mutate(body)
    status = await api_error(v1.create_namespaced_pod(NS, body))
    assert (status["code"], status["reason"]) == (422, "Invalid")
    assert status["details"]["kind"] == "Pod"
    assert any(
        c["field"] == field and message in f"{c['field']}: {c['message']}"
        for c in status["details"]["causes"]
    ), status
    assert status["message"].startswith(f'Pod "{body.metadata.name}" is invalid: ')


async def test_bad_quantity_is_a_decode_error_400(v1: client.CoreV1Api) -> None:
    # the real server fails to decode the body: 400 BadRequest, not 422 Invalid
    status = await api_error(v1.create_namespaced_pod(NS, pod_body(limits={"cpu": "2 cores"})))
    assert (status["code"], status["reason"]) == (400, "BadRequest")
    assert status["message"] == (
        'Pod in version "v1" cannot be handled as a Pod: quantities must match the regular '
        "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )
    status = await api_error(v1.create_namespaced_pod(NS, pod_body(limits={"memory": "32MMi"})))
    assert status["message"].endswith("unable to parse quantity's suffix")


async def test_quantities_are_stored_canonical(v1: client.CoreV1Api) -> None:
    created = await v1.create_namespaced_pod(
        NS, pod_body(limits={"cpu": "0.5", "memory": "1.5Gi"}, requests={"cpu": "250m"})
    )
    resources = created.spec.containers[0].resources
    assert resources.limits == {"cpu": "500m", "memory": "1536Mi"}
    assert resources.requests == {"cpu": "250m", "memory": "1536Mi"}
    assert created.status.qos_class == "Burstable"


async def test_raw_dict_bodies_type_errors_and_unknown_fields(
    kube: FakeKubeApi, v1: client.CoreV1Api
) -> None:
    raw: dict[str, Any] = {
        "metadata": {"name": "raw"},
        "spec": {"containers": [{"name": "app", "image": "x:1"}], "activeDeadlineSeconds": "60"},
    }
    # the stubs say ``body: V1Pod``; a dict works at run time (hence the ignores)
    status = await api_error(v1.create_namespaced_pod(NS, raw))  # type: ignore[arg-type]
    assert status["code"] == 400
    assert (
        "cannot unmarshal string into Go struct field PodSpec.spec.activeDeadlineSeconds"
        in (status["message"])
    )
    raw["spec"]["activeDeadlineSeconds"] = 60
    raw["spec"]["activeDeadline"] = 60  # a typo
    strict = await api_error(
        v1.create_namespaced_pod(NS, raw, field_validation="Strict")  # type: ignore[arg-type]
    )
    assert strict["message"].endswith('strict decoding error: unknown field "spec.activeDeadline"')
    # default: Warn (a Warning header), and the field is dropped
    created = await v1.create_namespaced_pod(NS, raw)  # type: ignore[arg-type]
    assert created.spec.active_deadline_seconds == 60
    assert kube.warnings == ['unknown field "spec.activeDeadline"']
    assert "activeDeadline" not in kube.pods(NS)[0]["spec"]


async def test_dry_run_create_stores_nothing(kube: FakeKubeApi, v1: client.CoreV1Api) -> None:
    created = await v1.create_namespaced_pod(NS, pod_body("dry"), dry_run="All")
    assert created.metadata.name == "dry"
    assert kube.pods(NS) == []


# -- get, list, delete -----------------------------------------------------------------------------


async def test_missing_pod_is_404(v1: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as info:
        await v1.read_namespaced_pod("ghost", NS)
    assert info.value.status == 404
    assert status_of(info.value)["message"] == 'pods "ghost" not found'
    with pytest.raises(ApiException) as info:
        await v1.delete_namespaced_pod("ghost", NS)
    assert info.value.status == 404
    with pytest.raises(ApiException) as info:
        await v1.patch_namespaced_pod("ghost", NS, {"metadata": {"labels": {"a": "b"}}})
    assert info.value.status == 404


async def test_list_field_selectors_and_pagination(kube: FakeKubeApi, v1: client.CoreV1Api) -> None:
    for name in ("p1", "p2", "p3", "p4", "p5"):
        await v1.create_namespaced_pod(NS, pod_body(name))
    await v1.create_namespaced_pod("default", pod_body("elsewhere"))
    kube.set_running(NS, "p2", ip="10.0.0.12")
    running = await v1.list_namespaced_pod(NS, field_selector="status.phase=Running")
    assert [p.metadata.name for p in running.items] == ["p2"]
    assert running.items[0].status.pod_ip == "10.0.0.12"
    by_name = await v1.list_namespaced_pod(NS, field_selector="metadata.name=p4")
    assert [p.metadata.name for p in by_name.items] == ["p4"]
    not_running = await v1.list_namespaced_pod(NS, field_selector="status.phase!=Running")
    assert len(not_running.items) == 4

    page1 = await v1.list_namespaced_pod(NS, limit=2)
    assert [p.metadata.name for p in page1.items] == ["p1", "p2"]
    assert page1.metadata.remaining_item_count == 3 and page1.metadata._continue
    await v1.delete_namespaced_pod("p3", NS)  # the continued list is a consistent snapshot
    page2 = await v1.list_namespaced_pod(NS, limit=2, _continue=page1.metadata._continue)
    assert [p.metadata.name for p in page2.items] == ["p3", "p4"]
    page3 = await v1.list_namespaced_pod(NS, limit=2, _continue=page2.metadata._continue)
    assert [p.metadata.name for p in page3.items] == ["p5"]
    assert page3.metadata._continue is None
    kube.compact()
    status = await api_error(v1.list_namespaced_pod(NS, _continue=page1.metadata._continue))
    assert (status["code"], status["reason"]) == (410, "Expired")

    everywhere = await v1.list_pod_for_all_namespaces(label_selector="app=paygress-tier")
    assert len(everywhere.items) == 5
    status = await api_error(v1.list_namespaced_pod(NS, label_selector="app in (x"))
    assert status["code"] == 400
    status = await api_error(v1.list_namespaced_pod(NS, field_selector="spec.image=x"))
    assert status["message"] == "field label not supported: spec.image"


async def test_delete_options_and_collection(kube: FakeKubeApi, v1: client.CoreV1Api) -> None:
    created = await v1.create_namespaced_pod(NS, pod_body("keep"))
    status = await api_error(
        v1.delete_namespaced_pod(
            "keep",
            NS,
            body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="other-uid")),
        )
    )
    assert (status["code"], status["reason"]) == (409, "Conflict")
    assert "Precondition failed: UID in precondition: other-uid" in status["message"]
    deleted = await v1.delete_namespaced_pod(
        "keep",
        NS,
        body=client.V1DeleteOptions(
            grace_period_seconds=0, preconditions=client.V1Preconditions(uid=created.metadata.uid)
        ),
    )
    assert deleted.metadata.uid == created.metadata.uid

    for name, tier in (("a", "gold"), ("b", "gold"), ("c", "silver")):
        await v1.create_namespaced_pod(NS, pod_body(name, labels={"tier": tier}))
    result = await v1.delete_collection_namespaced_pod(NS, label_selector="tier=gold")
    assert result.kind == "PodList"  # a real server answers the deleted items as a list
    assert [p["metadata"]["name"] for p in kube.pods(NS)] == ["c"]


async def test_graceful_deletion_and_finalizers() -> None:
    async with (
        FakeKubeApi(graceful_deletion=True) as kube,
        client.ApiClient(kube.client_configuration()) as api,
    ):
        v1 = client.CoreV1Api(api)
        await v1.create_namespaced_pod("default", pod_body("slow"))
        kube.set_running("default", "slow")
        terminating = await v1.delete_namespaced_pod("slow", "default")
        assert terminating.metadata.deletion_timestamp is not None
        assert terminating.metadata.deletion_grace_period_seconds == 30
        assert (await v1.read_namespaced_pod("slow", "default")).metadata.name == "slow"
        kube.advance_time(31)
        assert (await api_error(v1.read_namespaced_pod("slow", "default")))["code"] == 404

        body = pod_body("held")
        body.metadata.finalizers = ["paygress.io/billing"]
        await v1.create_namespaced_pod("default", body)
        held = await v1.delete_namespaced_pod("held", "default", grace_period_seconds=0)
        assert held.metadata.deletion_timestamp is not None
        status = await api_error(
            v1.patch_namespaced_pod(
                "held", "default", {"metadata": {"finalizers": ["paygress.io/other"]}}
            )
        )
        assert "no new finalizers can be added" in status["message"]
        await v1.patch_namespaced_pod(
            "held", "default", [{"op": "remove", "path": "/metadata/finalizers"}]
        )
        assert kube.pods("default") == []


# -- patch --------------------------------------------------------------------------------------


async def test_patch_content_types(kube: FakeKubeApi, v1: client.CoreV1Api) -> None:
    await v1.create_namespaced_pod(NS, pod_body("p"))
    # a dict body goes out as a strategic merge patch
    await v1.patch_namespaced_pod("p", NS, {"metadata": {"labels": {"paid": "yes"}}})
    assert kube.request_log[-1].content_type == "application/strategic-merge-patch+json"
    # a list body goes out as a JSON patch
    patched = await v1.patch_namespaced_pod(
        "p", NS, [{"op": "add", "path": "/metadata/annotations", "value": {"paygress.io/x": "1"}}]
    )
    assert kube.request_log[-1].content_type == "application/json-patch+json"
    patched = await v1.patch_namespaced_pod(
        "p", NS, [{"op": "replace", "path": "/metadata/annotations/paygress.io~1x", "value": "2"}]
    )
    assert patched.metadata.annotations == {"paygress.io/x": "2"}
    # a merge patch has to be asked for (the stubs lack ``_content_type``: hence the ignore)
    patched = await v1.patch_namespaced_pod(
        "p",
        NS,
        {"metadata": {"labels": {"paid": None}}},
        _content_type="application/merge-patch+json",  # type: ignore[call-arg]
    )
    assert kube.request_log[-1].content_type == "application/merge-patch+json"
    assert patched.metadata.labels == {"app": "paygress-tier"}
    # a model body is a strategic merge patch too
    await v1.patch_namespaced_pod(
        "p", NS, client.V1Pod(metadata=client.V1ObjectMeta(labels={"m": "1"}))
    )
    assert kube.request_log[-1].content_type == "application/strategic-merge-patch+json"
    status = await api_error(
        v1.patch_namespaced_pod(
            "p",
            NS,
            {"a": 1},
            _content_type="application/apply-patch+yaml",  # type: ignore[call-arg]
        )
    )
    assert status["code"] == 415


async def test_active_deadline_lowered_not_raised(kube: FakeKubeApi, v1: client.CoreV1Api) -> None:
    await v1.create_namespaced_pod(NS, pod_body("d", deadline=600))
    lowered = await v1.patch_namespaced_pod("d", NS, {"spec": {"activeDeadlineSeconds": 300}})
    assert lowered.spec.active_deadline_seconds == 300
    status = await api_error(
        v1.patch_namespaced_pod("d", NS, {"spec": {"activeDeadlineSeconds": 900}})
    )
    assert (status["code"], status["reason"]) == (422, "Invalid")
    assert status["message"] == (
        'Pod "d" is invalid: spec.activeDeadlineSeconds: Invalid value: 900: '
        "must be less than or equal to previous value"
    )
    assert status["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: 900: must be less than or equal to previous value",
            "field": "spec.activeDeadlineSeconds",
        }
    ]
    status = await api_error(
        v1.patch_namespaced_pod("d", NS, [{"op": "remove", "path": "/spec/activeDeadlineSeconds"}])
    )
    assert "must not update from a positive integer to nil value" in status["message"]
    # set where there was none
    await v1.create_namespaced_pod(NS, pod_body("none", deadline=None))
    set_ = await v1.patch_namespaced_pod("none", NS, {"spec": {"activeDeadlineSeconds": 60}})
    assert set_.spec.active_deadline_seconds == 60
    assert kube.pod(NS, "d")["spec"]["activeDeadlineSeconds"] == 300  # type: ignore[index]


async def test_image_may_change_resources_may_not(v1: client.CoreV1Api) -> None:
    await v1.create_namespaced_pod(NS, pod_body("img"))
    patched = await v1.patch_namespaced_pod(
        "img", NS, {"spec": {"containers": [{"name": "app", "image": "ghcr.io/example/app:2.0"}]}}
    )
    assert patched.spec.containers[0].image == "ghcr.io/example/app:2.0"
    assert patched.spec.containers[0].ports[0].container_port == 8080  # merged by name
    patched = await v1.patch_namespaced_pod(
        "img", NS, [{"op": "replace", "path": "/spec/containers/0/image", "value": "x:3"}]
    )
    assert patched.spec.containers[0].image == "x:3"

    status = await api_error(
        v1.patch_namespaced_pod(
            "img",
            NS,
            {"spec": {"containers": [{"name": "app", "resources": {"limits": {"cpu": "1"}}}]}},
        )
    )
    assert (status["code"], status["reason"]) == (422, "Invalid")
    assert status["details"]["causes"][0]["field"] == "spec"
    assert status["details"]["causes"][0]["reason"] == "FieldValueForbidden"
    assert status["message"].startswith(
        'Pod "img" is invalid: spec: Forbidden: pod updates may not change fields other than '
        "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`"
    )
    # a merge patch replaces the whole containers list: ports and resources go, refused too
    status = await api_error(
        v1.patch_namespaced_pod(
            "img",
            NS,
            {"spec": {"containers": [{"name": "app", "image": "x:4"}]}},
            _content_type="application/merge-patch+json",  # type: ignore[call-arg]
        )
    )
    assert "pod updates may not change fields" in status["message"]
    status = await api_error(
        v1.patch_namespaced_pod("img", NS, {"spec": {"restartPolicy": "Always"}})
    )
    assert status["details"]["causes"][0]["reason"] == "FieldValueForbidden"


async def test_patch_preconditions_and_noops(kube: FakeKubeApi, v1: client.CoreV1Api) -> None:
    created = await v1.create_namespaced_pod(NS, pod_body("rv"))
    current = await v1.read_namespaced_pod("rv", NS)
    rv = current.metadata.resource_version
    ok = await v1.patch_namespaced_pod(
        "rv", NS, {"metadata": {"resourceVersion": rv, "labels": {"step": "1"}}}
    )
    assert ok.metadata.labels["step"] == "1"
    status = await api_error(
        v1.patch_namespaced_pod(
            "rv", NS, {"metadata": {"resourceVersion": rv, "labels": {"step": "2"}}}
        )
    )
    assert (status["code"], status["reason"]) == (409, "Conflict")
    assert status["message"] == (
        'Operation cannot be fulfilled on pods "rv": the object has been modified; please apply '
        "your changes to the latest version and try again"
    )
    # a patch that changes nothing does not bump the resourceVersion
    same = await v1.patch_namespaced_pod("rv", NS, {"metadata": {"labels": {"step": "1"}}})
    assert same.metadata.resource_version == ok.metadata.resource_version
    # status is not changed through the main resource
    ignored = await v1.patch_namespaced_pod("rv", NS, {"status": {"phase": "Succeeded"}})
    assert ignored.status.phase == "Pending"
    # renaming through a patch is refused
    status = await api_error(v1.patch_namespaced_pod("rv", NS, {"metadata": {"name": "other"}}))
    assert status["code"] == 400
    # a JSON patch test op that fails
    status = await api_error(
        v1.patch_namespaced_pod(
            "rv", NS, [{"op": "test", "path": "/metadata/uid", "value": "nope"}]
        )
    )
    assert status["code"] == 422
    assert created.metadata.uid == kube.pod(NS, "rv")["metadata"]["uid"]  # type: ignore[index]


async def test_replace(v1: client.CoreV1Api) -> None:
    await v1.create_namespaced_pod(NS, pod_body("put"))
    current = await v1.read_namespaced_pod("put", NS)
    current.metadata.labels["replaced"] = "yes"
    replaced = await v1.replace_namespaced_pod("put", NS, current)
    assert replaced.metadata.labels["replaced"] == "yes"
    status = await api_error(v1.replace_namespaced_pod("put", NS, current))  # stale now
    assert status["reason"] == "Conflict"


# -- watch ----------------------------------------------------------------------------------------


async def test_watch_added_modified_deleted(kube: FakeKubeApi, v1: client.CoreV1Api) -> None:
    events: list[tuple[str, str, str]] = []

    async def consume() -> None:
        async with watch.Watch() as w:
            async for event in w.stream(
                v1.list_namespaced_pod, NS, label_selector="app=paygress-tier", timeout_seconds=5
            ):
                obj = event["object"]
                events.append((event["type"], obj.metadata.name, obj.status.phase))
                if event["type"] == "DELETED":
                    break

    task = asyncio.create_task(consume())
    await kube.wait_for_watchers()
    await v1.create_namespaced_pod(NS, pod_body("w1"))
    await v1.create_namespaced_pod(NS, pod_body("other", labels={"app": "else"}))
    kube.set_running(NS, "w1")
    await v1.delete_namespaced_pod("w1", NS)
    await asyncio.wait_for(task, timeout=5)
    assert events[0] == ("ADDED", "w1", "Pending")
    assert ("MODIFIED", "w1", "Running") in events
    assert events[-1] == ("DELETED", "w1", "Running")
    assert {name for _, name, _ in events} == {"w1"}
    watch_request = next(r for r in kube.request_log if r.query.get("watch"))
    assert watch_request.query["watch"] == "True"  # the client sends Python's True


async def test_watch_from_resource_version_and_selector_transitions(
    kube: FakeKubeApi, v1: client.CoreV1Api
) -> None:
    await v1.create_namespaced_pod(NS, pod_body("t1", labels={"paid": "yes"}))
    listed = await v1.list_namespaced_pod(NS, label_selector="paid=yes")
    await v1.patch_namespaced_pod("t1", NS, {"metadata": {"labels": {"paid": "no"}}})
    await v1.patch_namespaced_pod("t1", NS, {"metadata": {"labels": {"paid": "yes"}}})
    events = []
    async with watch.Watch() as w:
        async for event in w.stream(
            v1.list_namespaced_pod,
            NS,
            label_selector="paid=yes",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=1,
        ):
            events.append((event["type"], event["object"].metadata.labels["paid"]))
            if len(events) == 2:
                break
    # leaving the selection is a DELETED, coming back an ADDED
    assert events == [("DELETED", "no"), ("ADDED", "yes")]


async def test_watch_too_old_resource_version_is_410(
    kube: FakeKubeApi, v1: client.CoreV1Api
) -> None:
    await v1.create_namespaced_pod(NS, pod_body("old"))
    kube.compact()
    with pytest.raises(ApiException) as info:
        async with watch.Watch() as w:
            async for _ in w.stream(
                v1.list_namespaced_pod, NS, resource_version="1", timeout_seconds=1
            ):
                pass
    assert info.value.status == 410
    assert info.value.reason is not None
    assert "Expired: too old resource version: 1" in info.value.reason


async def test_watch_times_out_and_keeps_the_connection(
    kube: FakeKubeApi, v1: client.CoreV1Api
) -> None:
    assert (await v1.list_namespaced_pod(NS)).items == []
    async with watch.Watch() as w:
        seen = [e async for e in w.stream(v1.list_namespaced_pod, NS, timeout_seconds=1)]
    assert seen == []
    assert (await v1.list_namespaced_pod(NS)).items == []
    await v1.create_namespaced_pod(NS, pod_body("after-watch"))
    assert kube.connections == 1  # keep-alive, also across the chunked watch response


# -- injected failures ----------------------------------------------------------------------------


async def test_injected_errors(kube: FakeKubeApi, v1: client.CoreV1Api) -> None:
    kube.fail_next("POST", r"/namespaces/paid/pods$", status=500)
    with pytest.raises(ApiException) as info:
        await v1.create_namespaced_pod(NS, pod_body("x"))
    assert info.value.status == 500
    assert status_of(info.value)["reason"] == "InternalError"
    assert kube.pods(NS) == []
    await v1.create_namespaced_pod(NS, pod_body("x"))  # only once

    kube.fail_next("GET", r"/namespaces/paid/pods(\?|$)", status=429, times=2)
    for _ in range(2):
        with pytest.raises(ApiException) as info:
            await v1.list_namespaced_pod(NS)
        assert info.value.status == 429
        assert info.value.headers is not None and info.value.headers["Retry-After"] == "1"
    assert len((await v1.list_namespaced_pod(NS)).items) == 1

    kube.fail_next("*", r"/pods/x$", status=503)
    assert (await api_error(v1.read_namespaced_pod("x", NS)))["reason"] == "ServiceUnavailable"
    assert [r.status for r in kube.request_log[-4:]] == [429, 429, 200, 503]


async def test_delay_longer_than_client_timeout(kube: FakeKubeApi, v1: client.CoreV1Api) -> None:
    kube.fail_next("GET", r"/pods/slow$", status=None, delay=0.5)
    with pytest.raises(asyncio.TimeoutError):
        await v1.read_namespaced_pod("slow", NS, _request_timeout=0.1)
    kube.fail_next("GET", r"/pods", status=None, delay=0.05)
    pods = await v1.list_namespaced_pod(NS, _request_timeout=2)
    assert pods.items == []


async def test_watch_sees_injected_error(kube: FakeKubeApi, v1: client.CoreV1Api) -> None:
    kube.fail_next("GET", r"watch=", status=500)
    with pytest.raises(ApiException) as info:
        async with watch.Watch() as w:
            async for _ in w.stream(v1.list_namespaced_pod, NS, timeout_seconds=1):
                pass
    assert info.value.status == 500


# -- the kubelet ----------------------------------------------------------------------------------


async def test_deadline_moves_pod_to_failed(kube: FakeKubeApi, v1: client.CoreV1Api) -> None:
    await v1.create_namespaced_pod(NS, pod_body("paid-60s", deadline=60))
    kube.set_running(NS, "paid-60s")
    kube.advance_time(59)
    assert (await v1.read_namespaced_pod("paid-60s", NS)).status.phase == "Running"
    await v1.patch_namespaced_pod("paid-60s", NS, {"spec": {"activeDeadlineSeconds": 30}})
    pod = await v1.read_namespaced_pod("paid-60s", NS)
    assert pod.status.phase == "Failed"
    assert pod.status.reason == "DeadlineExceeded"
    assert pod.status.message == "Pod was active on the node longer than the specified deadline"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 137
    ready = next(c for c in pod.status.conditions if c.type == "Ready")
    assert ready.status == "False"
    failed = await v1.list_namespaced_pod(NS, field_selector="status.phase=Failed")
    assert [p.metadata.name for p in failed.items] == ["paid-60s"]


async def test_phase_controls(kube: FakeKubeApi, v1: client.CoreV1Api) -> None:
    await v1.create_namespaced_pod(NS, pod_body("job"))
    kube.set_running(NS, "job", ip="10.1.2.3")
    pod = await v1.read_namespaced_pod("job", NS)
    assert pod.status.phase == "Running" and pod.status.pod_ip == "10.1.2.3"
    assert all(c.status == "True" for c in pod.status.conditions)
    assert pod.status.container_statuses[0].ready is True
    kube.set_phase(NS, "job", "Succeeded")
    pod = await v1.read_namespaced_pod("job", NS)
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.reason == "Completed"
