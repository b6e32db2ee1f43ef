"""The conventions of well-kept charts, rendered by Helm's engine: commonLabels,
revisionHistoryLimit, extraArgs, envFrom, lifecycle, initContainers, extraContainers, tpl in
extra* values, extraObjects, ServiceMonitor relabelings, the PrometheusRule and NOTES.txt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart_render import NAMESPACE, RELEASE, Helm, documents
from tests.deploy.paths import CHART

CONVENTIONS: dict[str, Any] = {
    "seed": {"existingSecret": "paygress-seed"},
    "commonLabels": {"team": "payments", "release-copy": "{{ .Release.Name }}"},
    "revisionHistoryLimit": 3,
    "extraArgs": ["--config", "{{ .Release.Name }}.yaml"],
    "extraEnv": '- name: RELEASE\n  value: "{{ .Release.Name }}"\n',
    "envFrom": [{"secretRef": {"name": "{{ .Release.Name }}-env"}}],
    "lifecycle": {"preStop": {"exec": {"command": ["sleep", "3"]}}},
    "initContainers": [{"name": "wait", "image": "busybox", "command": ["true"]}],
    "extraContainers": [{"name": "shipper", "image": "busybox:{{ .Chart.AppVersion }}"}],
    "extraVolumes": [{"name": "kubeconfig", "secret": {"secretName": "{{ .Release.Name }}-kc"}}],
    "extraVolumeMounts": [{"name": "kubeconfig", "mountPath": "/etc/kube"}],
    "extraObjects": [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": '{{ include "paygress.fullname" . }}-extra'},
        },
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ .Release.Name }}-from-string\n",
    ],
    "serviceMonitor": {
        "enabled": True,
        "relabelings": [{"targetLabel": "cluster", "replacement": "{{ .Release.Namespace }}"}],
        "metricRelabelings": [{"sourceLabels": ["__name__"], "regex": "python_gc_.*"}],
    },
    "prometheusRule": {
        "enabled": True,
        "disabled": {"PaygressMintRequestErrors": True},
        "additionalRules": [{"record": "paygress:checks:rate5m", "expr": "x"}],
    },
    "config": {"mints": ["https://mint.example.com"], "routes": [{"name": "a", "price": 1}]},
}


def render(helm: Helm, tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return documents(helm.template(CHART, path))


@pytest.fixture(params=["standalone", "sidecar"])
def docs(helm: Helm, tmp_path: Path, request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(helm, tmp_path, {**CONVENTIONS, "mode": request.param})


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def test_common_labels_everywhere_but_in_selectors(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["metadata"]["name"].endswith(("-extra", "-from-string")):
            continue  # extraObjects are the user's own
        labels = doc["metadata"]["labels"]
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        assert labels["team"] == "payments", where
        assert labels["release-copy"] == RELEASE, where
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert "team" not in deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["template"]["metadata"]["labels"]["team"] == "payments"
    assert deployment["spec"]["revisionHistoryLimit"] == 3


def test_containers_args_env_and_volumes(docs: list[dict[str, Any]]) -> None:
    spec = pod_spec(docs)
    init = [c["name"] for c in spec.get("initContainers", [])]
    sidecar = "istio-proxy" in [c["name"] for c in spec["containers"]]
    # The user's init containers run first, before Paygress's native sidecar too.
    assert init == (["wait", "paygress"] if sidecar else ["wait"])
    assert [c["name"] for c in spec["containers"]][-1] == "shipper"
    (shipper,) = [c for c in spec["containers"] if c["name"] == "shipper"]
    assert shipper["image"] == "busybox:0.1.0"
    (paygress,) = [c for c in spec["containers"] + spec.get("initContainers", [])
                   if c["name"] == "paygress"]  # fmt: skip
    assert paygress["args"][-2:] == ["--config", f"{RELEASE}.yaml"]
    assert paygress["envFrom"] == [{"secretRef": {"name": f"{RELEASE}-env"}}]
    assert paygress["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "3"]}}}
    assert {"name": "RELEASE", "value": RELEASE} in paygress["env"]
    assert {"name": "kubeconfig", "mountPath": "/etc/kube"} in paygress["volumeMounts"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["kubeconfig"]["secret"]["secretName"] == f"{RELEASE}-kc"


def test_extra_objects_are_rendered_with_tpl(docs: list[dict[str, Any]]) -> None:
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("ConfigMap", "paygress-extra") in names
    assert ("Secret", f"{RELEASE}-from-string") in names


def test_service_monitor_relabelings_and_prometheus_rule(docs: list[dict[str, Any]]) -> None:
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["relabelings"] == [{"targetLabel": "cluster", "replacement": NAMESPACE}]
    assert endpoint["metricRelabelings"][0]["regex"] == "python_gc_.*"
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    rules = rule["spec"]["groups"][0]["rules"]
    names = [r.get("alert") or r.get("record") for r in rules]
    # Disabled by name; no tiers, so no Kubernetes API alert; the additional rule appended.
    assert names == [
        "PaygressMintUnavailable",
        "PaygressErrorRate",
        "PaygressSwapsUnsettled",
        "PaygressLockedProofsLost",
        "paygress:checks:rate5m",
    ]
    assert all(r["labels"]["severity"] for r in rules if "alert" in r)
    assert (
        'sum by (namespace) (rate(paygress_checks_total{reason=~"mint_unavailable'
        in (rules[0]["expr"])
    )


def test_a_rule_without_metrics_is_refused(helm: Helm, tmp_path: Path) -> None:
    from tests.deploy.chart_render import RenderError

    values = {**CONVENTIONS, "metrics": {"enabled": False}, "serviceMonitor": {"enabled": False}}
    with pytest.raises(RenderError):
        render(helm, tmp_path, values)


def notes(values: dict[str, Any]) -> str:
    helm_python = pytest.importorskip("helm_python")
    with helm_python.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    text: str = rendered["paygress/templates/NOTES.txt"]
    return text


def test_notes_print_the_next_commands() -> None:
    example = yaml.safe_load((CHART / "examples" / "values-standalone.yaml").read_text("utf-8"))
    text = notes(example)
    assert f"helm test {RELEASE} -n {NAMESPACE} --logs" in text
    assert "kubectl -n paygress port-forward service/paygress 8181:8181 &" in text
    assert "-H 'X-Forwarded-Uri: /api/helm-test' http://127.0.0.1:8181/" in text
    assert "kubectl create namespace workloads" in text
    assert "WARNING" not in text
    bare = notes({"seed": {"existingSecret": "s"}})
    assert "WARNING: config.mints is empty" in bare
    assert "WARNING: config.routes is empty" in bare
    assert "X-Forwarded-Uri" not in bare  # nothing priced: no request to show
    assert "kubectl create namespace" not in bare
