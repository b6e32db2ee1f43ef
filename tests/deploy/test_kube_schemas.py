"""The chart's rendered objects against the Kubernetes OpenAPI schemas, offline.

kubernetes-validate ships the JSON schemas of every Kubernetes minor release from 1.25 on inside
its wheel; "strict" schemas reject unknown fields, so a misspelt or misplaced key fails here
instead of being dropped silently by the API server. Rendering needs Helm (the binary, else the
helm-python-sdk wheel); the tests skip without it. Objects of CRDs (ServiceMonitor, Istio) have
no schema there: Istio's are checked in test_istio.py, the ServiceMonitor structurally below.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.deploy.chart_render import Helm, documents
from tests.deploy.paths import CHART, EXAMPLES

# The chart's kubeVersion floor (native sidecars) and the newest release the package knows.
KUBE_VERSIONS = ["1.29.0", "latest"]
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ServiceEntry", "AuthorizationPolicy"}


@pytest.fixture(scope="module")
def kubernetes_validate() -> ModuleType:
    module: ModuleType = pytest.importorskip("kubernetes_validate")
    return module


SEED = {"seed": {"existingSecret": "paygress-seed"}}
# Everything optional switched on.
EVERYTHING: dict[str, Any] = {
    **SEED,
    "podDisruptionBudget": {"enabled": True},
    "networkPolicy": {"enabled": True},
    "serviceMonitor": {"enabled": True, "relabelings": [{"targetLabel": "a", "replacement": "b"}]},
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
    "persistence": {"enabled": False},
    "commonLabels": {"team": "payments"},
    "revisionHistoryLimit": 3,
    "extraArgs": ["--config", "/etc/paygress/config.yaml"],
    "envFrom": [{"secretRef": {"name": "more-env"}}],
    "lifecycle": {"preStop": {"exec": {"command": ["sleep", "3"]}}},
    "initContainers": [{"name": "wait", "image": "busybox", "command": ["true"]}],
    "extraContainers": [{"name": "shipper", "image": "busybox", "command": ["sleep", "1d"]}],
    "extraObjects": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "extra", "namespace": "x"}}
    ],
    "gateway": {"shareSocket": True},
    "extraEnv": [{"name": "PAYGRESS_LOG_LEVEL", "value": "DEBUG"}],
    "config": {
        "tiers": [
            {
                "id": "t",
                "cpu": "500m",
                "memory": "512Mi",
                "images": ["busybox"],
                "port": 80,
                "rate_msat_per_second": 1,
            }
        ]
    },
}
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": SEED,
    "everything-sidecar": {**EVERYTHING, "mode": "sidecar"},
    "everything-standalone": {
        **EVERYTHING,
        "mode": "standalone",
        "istio": {
            "authorizationPolicy": {"enabled": True, "selector": {"istio": "ingressgateway"}}
        },
    },
}


@pytest.fixture(scope="module")
def rendered(
    helm: Helm, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    folder = tmp_path_factory.mktemp("values")
    for name, values in VARIANTS.items():
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(values), encoding="utf-8")
        out[name] = documents(helm.template(CHART, path))
    for example in EXAMPLES:
        out[example.name] = documents(helm.template(CHART, example))
    return out


CASES = [*VARIANTS, *[p.name for p in EXAMPLES]]


def _version(kv: ModuleType, wanted: str) -> str:
    return str(kv.latest_version()) if wanted == "latest" else wanted


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_rendered_objects_match_the_kubernetes_schemas(
    kubernetes_validate: ModuleType,
    rendered: dict[str, list[dict[str, Any]]],
    case: str,
    version: str,
) -> None:
    kv = kubernetes_validate
    checked = 0
    problems: list[str] = []
    for doc in rendered[case]:
        if doc["kind"] in CRD_KINDS:
            continue
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kv.validate(doc, _version(kv, version), strict=True)
        except kv.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{name}: {path}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            problems.append(f"{name}: {exc.message}")
        checked += 1
    assert problems == []
    assert checked >= 4


def test_everything_renders_every_kind(rendered: dict[str, list[dict[str, Any]]]) -> None:
    sidecar = {d["kind"] for d in rendered["everything-sidecar"]}
    standalone = {d["kind"] for d in rendered["everything-standalone"]}
    common = {
        "ConfigMap",
        "Deployment",
        "Service",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
    }
    assert common | {"ServiceEntry"} <= sidecar
    assert common | {"AuthorizationPolicy"} <= standalone
    assert "PersistentVolumeClaim" not in sidecar | standalone  # persistence disabled


def test_service_monitor_structure(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for case in ("everything-sidecar", "everything-standalone"):
        docs = rendered[case]
        (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        spec = monitor["spec"]
        selector = spec["selector"]["matchLabels"]
        services = [
            d
            for d in docs
            if d["kind"] == "Service"
            and selector.items() <= d["metadata"].get("labels", {}).items()
        ]
        assert len(services) == 1, "the monitor must select exactly the metrics Service"
        port_names = {p["name"] for p in services[0]["spec"]["ports"]}
        for endpoint in spec["endpoints"]:
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"
        assert spec["namespaceSelector"]["matchNames"] == [services[0]["metadata"]["namespace"]]


def test_socket_sharing_is_opt_in(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """gateway.shareSocket mounts the socket directory into istio-proxy, and only then."""

    def proxy_mounts(case: str) -> list[str]:
        (deployment,) = [d for d in rendered[case] if d["kind"] == "Deployment"]
        (proxy,) = [
            c
            for c in deployment["spec"]["template"]["spec"]["containers"]
            if c["name"] == "istio-proxy"
        ]
        return [m["mountPath"] for m in proxy.get("volumeMounts", [])]

    assert proxy_mounts("everything-sidecar") == ["/run/paygress"]
    assert proxy_mounts("values-sidecar.yaml") == []


def test_example_files_exist() -> None:
    assert all(isinstance(p, Path) and p.is_file() for p in EXAMPLES)
