"""The Istio wiring in deploy/istio/ (and the Istio objects the chart renders).

No PyPI package ships Istio's CRD schemas for offline validation without side effects (the one
that does, cloudcoil-models-istio, installs a pytest plugin that breaks collection), so the
schemas below are transcribed from Istio's API (istio/api: security/v1 AuthorizationPolicy,
networking/v1 ServiceEntry, mesh/v1alpha1 MeshConfig.ExtensionProvider, as of Istio 1.24) as
strict JSON schemas (unknown fields are errors), plus the semantic rules Istio's validation
applies that a schema cannot say (CUSTOM needs a provider, STATIC needs endpoint addresses, ...),
plus consistency between the files, the chart's defaults and deploy/envoy/envoy.yaml.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.chart_render import documents, find_helm
from tests.deploy.paths import CHART, EXAMPLES, ISTIO, REPO

STRINGS: dict[str, Any] = {"type": "array", "items": {"type": "string", "minLength": 1}}
LABELS: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
DURATION = r"^([0-9]+(\.[0-9]+)?(h|m|s|ms|us|ns))+$"


def strict(props: dict[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        node["required"] = list(required)
    node.update(extra)
    return node


METADATA = strict(
    {
        "name": {"type": "string", "minLength": 1},
        "namespace": {"type": "string"},
        "labels": LABELS,
        "annotations": LABELS,
    },
    ("name",),
)


def resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return strict(
        {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
        ("apiVersion", "kind", "metadata", "spec"),
    )


TARGET_REF = strict(
    {k: {"type": "string"} for k in ("group", "kind", "name", "namespace")}, ("kind", "name")
)
AUTHORIZATION_POLICY = resource(
    "security.istio.io/v1",
    "AuthorizationPolicy",
    strict(
        {
            "selector": strict({"matchLabels": LABELS}),
            "targetRef": TARGET_REF,
            "targetRefs": {"type": "array", "items": TARGET_REF, "maxItems": 16},
            "action": {"enum": ["ALLOW", "DENY", "AUDIT", "CUSTOM"]},
            "provider": strict({"name": {"type": "string", "minLength": 1}}, ("name",)),
            "rules": {
                "type": "array",
                "items": strict(
                    {
                        "from": {
                            "type": "array",
                            "items": strict(
                                {
                                    "source": strict(
                                        {
                                            k: STRINGS
                                            for k in (
                                                "principals",
                                                "notPrincipals",
                                                "requestPrincipals",
                                                "notRequestPrincipals",
                                                "namespaces",
                                                "notNamespaces",
                                                "ipBlocks",
                                                "notIpBlocks",
                                                "remoteIpBlocks",
                                                "notRemoteIpBlocks",
                                            )
                                        }
                                    )
                                }
                            ),
                        },
                        "to": {
                            "type": "array",
                            "items": strict(
                                {
                                    "operation": strict(
                                        {
                                            k: STRINGS
                                            for k in (
                                                "hosts",
                                                "notHosts",
                                                "ports",
                                                "notPorts",
                                                "methods",
                                                "notMethods",
                                                "paths",
                                                "notPaths",
                                            )
                                        }
                                    )
                                }
                            ),
                        },
                        "when": {
                            "type": "array",
                            "items": strict(
                                {
                                    "key": {"type": "string"},
                                    "values": STRINGS,
                                    "notValues": STRINGS,
                                },
                                ("key",),
                            ),
                        },
                    }
                ),
            },
        }
    ),
)
SERVICE_ENTRY = resource(
    "networking.istio.io/v1",
    "ServiceEntry",
    strict(
        {
            "hosts": {**STRINGS, "minItems": 1, "maxItems": 256},
            "addresses": STRINGS,
            "ports": {
                "type": "array",
                "items": strict(
                    {
                        "number": {"type": "integer", "minimum": 1, "maximum": 65535},
                        "protocol": {
                            "enum": ["HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS", "UDP"]
                        },
                        "name": {"type": "string", "minLength": 1, "maxLength": 256},
                        "targetPort": {"type": "integer", "minimum": 1, "maximum": 65535},
                    },
                    ("number", "name"),
                ),
            },
            "location": {"enum": ["MESH_EXTERNAL", "MESH_INTERNAL"]},
            "resolution": {"enum": ["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"]},
            "endpoints": {
                "type": "array",
                "items": strict(
                    {
                        "address": {"type": "string", "maxLength": 256},
                        "ports": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "labels": LABELS,
                        "network": {"type": "string"},
                        "locality": {"type": "string"},
                        "weight": {"type": "integer", "minimum": 0},
                        "serviceAccount": {"type": "string"},
                    }
                ),
            },
            "workloadSelector": strict({"labels": LABELS}),
            "exportTo": STRINGS,
            "subjectAltNames": STRINGS,
        },
        ("hosts",),
    ),
)
EXT_AUTHZ_GRPC = strict(
    {
        "service": {"type": "string", "pattern": r"^([a-z0-9-]+/)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "timeout": {"type": "string", "pattern": DURATION},
        "failOpen": {"type": "boolean"},
        "statusOnError": {"type": "string", "pattern": r"^[1-5][0-9][0-9]$"},
        "includeRequestBodyInCheck": strict(
            {
                "maxRequestBytes": {"type": "integer", "minimum": 0},
                "allowPartialMessage": {"type": "boolean"},
                "packAsBytes": {"type": "boolean"},
            }
        ),
    },
    ("service", "port"),
)
EXTENSION_PROVIDERS = {
    "type": "array",
    "minItems": 1,
    "items": strict(
        {"name": {"type": "string", "minLength": 1}, "envoyExtAuthzGrpc": EXT_AUTHZ_GRPC},
        ("name", "envoyExtAuthzGrpc"),
    ),
}
ISTIO_OPERATOR = strict(
    {
        "apiVersion": {"const": "install.istio.io/v1alpha1"},
        "kind": {"const": "IstioOperator"},
        "metadata": METADATA,
        "spec": strict(
            {
                "meshConfig": strict(
                    {"extensionProviders": EXTENSION_PROVIDERS}, ("extensionProviders",)
                )
            },
            ("meshConfig",),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)
ISTIOD_VALUES = strict(
    {"meshConfig": strict({"extensionProviders": EXTENSION_PROVIDERS}, ("extensionProviders",))},
    ("meshConfig",),
)
SCHEMAS = {"AuthorizationPolicy": AUTHORIZATION_POLICY, "ServiceEntry": SERVICE_ENTRY}


def schema_errors(schema: dict[str, Any], doc: Any) -> list[str]:
    jsonschema.Draft7Validator.check_schema(schema)
    return [
        f"{e.json_path}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(doc)
    ]


def semantic_errors(doc: dict[str, Any]) -> list[str]:
    """What Istio's validation rejects beyond the schema (for the fields used here)."""
    spec = doc["spec"]
    problems: list[str] = []
    if doc["kind"] == "AuthorizationPolicy":
        if spec.get("action") == "CUSTOM" and not spec.get("provider", {}).get("name"):
            problems.append("action CUSTOM requires provider.name")
        if spec.get("provider") and spec.get("action") != "CUSTOM":
            problems.append("provider is only allowed with action CUSTOM")
        if spec.get("selector") and (spec.get("targetRef") or spec.get("targetRefs")):
            problems.append("selector and targetRef(s) are mutually exclusive")
        for rule in spec.get("rules", []):
            for to in rule.get("to", []):
                for path in to.get("operation", {}).get("paths", []):
                    if path != "*" and "*" in path.strip("*"):
                        problems.append(f"path {path!r}: '*' only as a prefix or suffix")
    if doc["kind"] == "ServiceEntry":
        ports = spec.get("ports", [])
        for key in ("name", "number"):
            values = [p[key] for p in ports if key in p]
            if len(values) != len(set(values)):
                problems.append(f"duplicate port {key}")
        if spec.get("resolution") == "STATIC":
            endpoints = spec.get("endpoints", [])
            if not endpoints and not spec.get("workloadSelector"):
                problems.append("resolution STATIC needs endpoints or a workloadSelector")
            for endpoint in endpoints:
                address = endpoint.get("address", "")
                if not address.startswith("unix://"):
                    try:
                        ipaddress.ip_address(address)
                    except ValueError:
                        problems.append(f"STATIC endpoint {address!r} is not an IP address")
        for host in spec["hosts"]:
            if "*" in host and spec.get("resolution") == "STATIC":
                problems.append(f"wildcard host {host!r} with STATIC resolution")
        for target in spec.get("exportTo", []):
            if target not in {".", "*", "~"} and not re.fullmatch(r"[a-z0-9-]+", target):
                problems.append(f"exportTo {target!r}")
    return problems


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_all(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


@pytest.fixture(scope="module")
def providers() -> dict[str, dict[str, Any]]:
    (operator,) = load_all(ISTIO / "meshconfig-extension-provider.yaml")
    listed = operator["spec"]["meshConfig"]["extensionProviders"]
    return {p["name"]: p["envoyExtAuthzGrpc"] for p in listed}


@pytest.fixture(scope="module")
def chart_values() -> dict[str, Any]:
    loaded = load(CHART / "values.yaml")
    assert isinstance(loaded, dict)
    return loaded


def test_the_istio_directory_holds_what_the_readme_lists() -> None:
    names = {p.name for p in ISTIO.iterdir()}
    assert {
        "README.md",
        "meshconfig-extension-provider.yaml",
        "istiod-values.yaml",
        "serviceentry-localhost.yaml",
        "authorizationpolicy.yaml",
    } <= names
    readme = (ISTIO / "README.md").read_text(encoding="utf-8")
    for name in names - {"README.md"}:
        assert name in readme, name
    for needle in ("1337", "0660", "fsGroup", "127.0.0.1:9001", "600s"):
        assert needle in readme, needle


def test_every_yaml_file_is_valid_yaml() -> None:
    for path in sorted(ISTIO.glob("*.yaml")):
        assert load_all(path), path.name


def test_mesh_config_extension_providers(providers: dict[str, dict[str, Any]]) -> None:
    (operator,) = load_all(ISTIO / "meshconfig-extension-provider.yaml")
    assert schema_errors(ISTIO_OPERATOR, operator) == []
    assert set(providers) == {"paygress", "paygress-standalone"}
    for name, grpc in providers.items():
        # Explicit (Istio's default is 600s), fail closed, and "try again" rather than 403.
        assert grpc["timeout"] == "3s", name
        assert grpc["failOpen"] is False, name
        assert grpc["statusOnError"] == "503", name
        assert grpc["port"] == 9001, name
    assert providers["paygress-standalone"]["service"] == "paygress.paygress.svc.cluster.local"


def test_istiod_values_carry_the_same_providers() -> None:
    (operator,) = load_all(ISTIO / "meshconfig-extension-provider.yaml")
    values = load(ISTIO / "istiod-values.yaml")
    assert schema_errors(ISTIOD_VALUES, values) == []
    assert values["meshConfig"] == operator["spec"]["meshConfig"]


def test_timeout_matches_the_plain_envoy_example(providers: dict[str, dict[str, Any]]) -> None:
    envoy = (REPO / "deploy" / "envoy" / "envoy.yaml").read_text(encoding="utf-8")
    (timeout,) = re.findall(r"^\s*timeout:\s*(\S+)\s*$", envoy, re.MULTILINE)
    assert {p["timeout"] for p in providers.values()} == {timeout}


@pytest.mark.parametrize("name", ["serviceentry-localhost.yaml", "authorizationpolicy.yaml"])
def test_istio_resources_are_valid(name: str) -> None:
    (doc,) = load_all(ISTIO / name)
    assert schema_errors(SCHEMAS[doc["kind"]], doc) == []
    assert semantic_errors(doc) == []


BROKEN: list[tuple[str, str, dict[str, Any]]] = [
    ("authorizationpolicy.yaml", "custom without provider", {"provider": None}),
    ("authorizationpolicy.yaml", "unknown action", {"action": "PAY"}),
    ("authorizationpolicy.yaml", "misspelt field", {"rule": []}),
    (
        "authorizationpolicy.yaml",
        "both selector and targetRef",
        {"targetRef": {"kind": "Gateway", "name": "g"}},
    ),
    ("serviceentry-localhost.yaml", "static without endpoints", {"endpoints": None}),
    ("serviceentry-localhost.yaml", "hostname endpoint", {"endpoints": [{"address": "localhost"}]}),
    (
        "serviceentry-localhost.yaml",
        "unknown protocol",
        {"ports": [{"name": "g", "number": 9001, "protocol": "GRPCS"}]},
    ),
    (
        "serviceentry-localhost.yaml",
        "port without name",
        {"ports": [{"number": 9001, "protocol": "GRPC"}]},
    ),
]


@pytest.mark.parametrize(("name", "why", "change"), BROKEN, ids=[b[1] for b in BROKEN])
def test_validators_catch(name: str, why: str, change: dict[str, Any]) -> None:
    (doc,) = load_all(ISTIO / name)
    for key, value in change.items():
        if value is None:
            doc["spec"].pop(key, None)
        else:
            doc["spec"][key] = value
    assert schema_errors(SCHEMAS[doc["kind"]], doc) + semantic_errors(doc), why


def test_service_entry_names_the_sidecar_provider(
    providers: dict[str, dict[str, Any]], chart_values: dict[str, Any]
) -> None:
    (entry,) = load_all(ISTIO / "serviceentry-localhost.yaml")
    spec = entry["spec"]
    local = providers["paygress"]
    assert local["service"] in spec["hosts"]
    assert spec["resolution"] == "STATIC"
    assert spec["endpoints"] == [{"address": "127.0.0.1"}]
    # Visible to the gateway's namespace only: elsewhere 127.0.0.1 is another pod.
    assert spec["exportTo"] == ["."]
    (port,) = spec["ports"]
    assert port["number"] == local["port"] == chart_values["ports"]["grpc"]
    assert port["protocol"] == "GRPC"  # an HTTP/2 cluster, as ext_authz gRPC needs
    assert chart_values["istio"]["serviceEntry"]["host"] == local["service"]


def test_authorization_policy_targets_the_chart_gateway(
    providers: dict[str, dict[str, Any]], chart_values: dict[str, Any]
) -> None:
    (policy,) = load_all(ISTIO / "authorizationpolicy.yaml")
    (entry,) = load_all(ISTIO / "serviceentry-localhost.yaml")
    spec = policy["spec"]
    assert spec["action"] == "CUSTOM"
    assert (
        spec["provider"]["name"]
        == "paygress"
        == chart_values["istio"]["authorizationPolicy"]["provider"]
    )
    assert spec["provider"]["name"] in providers
    assert spec["selector"]["matchLabels"] == chart_values["gateway"]["labels"]
    assert policy["metadata"]["namespace"] == entry["metadata"]["namespace"]


def _covered(path_prefix: str, policy_paths: list[str]) -> bool:
    for pattern in policy_paths:
        if pattern == "*":
            return True
        if pattern.endswith("*") and path_prefix.startswith(pattern[:-1]):
            return True
    return False


POLICIES = [
    ("deploy/istio/authorizationpolicy.yaml", "values-sidecar.yaml"),
    ("examples/values-sidecar.yaml", "values-sidecar.yaml"),
    ("examples/values-standalone.yaml", "values-standalone.yaml"),
]


@pytest.mark.parametrize(("policy_source", "example_name"), POLICIES)
def test_policy_checks_every_priced_route(policy_source: str, example_name: str) -> None:
    """Istio sends only the policy's matches to Paygress: anything priced outside is free."""
    example = load(CHART / "examples" / example_name)
    if policy_source.startswith("deploy/"):
        rules = load_all(REPO / policy_source)[0]["spec"]["rules"]
    else:
        rules = load(CHART / policy_source)["istio"]["authorizationPolicy"]["rules"]
    paths = [p for rule in rules for to in rule["to"] for p in to["operation"].get("paths", [])]
    for route in example["config"]["routes"]:
        prefix = route["match"]["path_prefix"]
        assert _covered(prefix, paths), f"route {route['name']} ({prefix}) would be free"
    if example["config"].get("tiers"):
        kube = example.get("kubernetes", {})
        for path in (
            kube.get("statusPath") or "/.well-known/paygress/pods/",
            kube.get("offersPath") or "/.well-known/paygress/offers",
        ):
            assert _covered(path, paths), f"{path} never reaches Paygress"


def test_chart_renders_the_same_istio_objects_as_the_files() -> None:
    helm = find_helm()
    if helm is None:
        pytest.skip("no helm binary on PATH and no helm-python-sdk installed")
    (sidecar,) = [p for p in EXAMPLES if p.name == "values-sidecar.yaml"]
    docs = documents(helm.template(CHART, sidecar))
    by_kind = {d["kind"]: d for d in docs if d["kind"] in SCHEMAS}
    assert set(by_kind) == set(SCHEMAS)
    for kind, doc in by_kind.items():
        assert schema_errors(SCHEMAS[kind], doc) == [], kind
        assert semantic_errors(doc) == [], kind
    (entry,) = load_all(ISTIO / "serviceentry-localhost.yaml")
    (policy,) = load_all(ISTIO / "authorizationpolicy.yaml")
    assert by_kind["ServiceEntry"]["spec"] == entry["spec"]
    assert by_kind["AuthorizationPolicy"]["spec"] == policy["spec"]
