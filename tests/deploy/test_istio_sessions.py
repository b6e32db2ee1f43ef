"""Paid sessions and the HTTP provider under Istio (deploy/istio/sessions.yaml,
meshconfig-http-provider.yaml) and the chart's rendering of them.

What can be checked here, without a cluster: the objects against Istio's schemas (transcribed
strictly from Istio's CRDs and MeshConfig, as tests/deploy/test_istio.py does), the rules Istio's
validation adds for CUSTOM policies (no `request.auth.*`, no `source.*` principals), and that
the pieces agree: with the plain-Envoy configs that the integration tests run through real
Envoy, with Paygress's own header names and defaults, and with `paygress jwks`.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from paygress.cashu.nut13 import Seed
from paygress.core.gate import TRUSTED_HEADERS
from paygress.core.session_access import SESSION_HEADER
from paygress.sessions import DEFAULT_ISSUER, jwks
from tests.deploy.chart_render import RenderError, documents, find_helm
from tests.deploy.paths import CHART, ISTIO, REPO
from tests.deploy.test_istio import (
    AUTHORIZATION_POLICY,
    DURATION,
    METADATA,
    STRINGS,
    TARGET_REF,
    _covered,
    load_all,
    resource,
    schema_errors,
    semantic_errors,
    strict,
)
from tests.peers.envoy import JWT_FILTER, ext_authz_config, http_connection_managers, load_config

EXAMPLE_MNEMONIC = "abandon " * 11 + "about"
ENVOY = REPO / "deploy" / "envoy"
HEADER_NAME = {"type": "string", "minLength": 1, "pattern": "^[-_A-Za-z0-9]+$"}

# security.istio.io/v1 RequestAuthentication (Istio's CRD, crd-all.gen.yaml), strict.
REQUEST_AUTHENTICATION = resource(
    "security.istio.io/v1",
    "RequestAuthentication",
    strict(
        {
            "selector": strict({"matchLabels": {"type": "object"}}),
            "targetRef": TARGET_REF,
            "targetRefs": {"type": "array", "items": TARGET_REF, "maxItems": 16},
            "jwtRules": {
                "type": "array",
                "maxItems": 4096,
                "items": strict(
                    {
                        "issuer": {"type": "string", "minLength": 1},
                        "audiences": STRINGS,
                        "jwksUri": {"type": "string", "minLength": 1, "maxLength": 2048},
                        "jwks_uri": {"type": "string", "minLength": 1, "maxLength": 2048},
                        "jwks": {"type": "string"},
                        "fromHeaders": {
                            "type": "array",
                            "items": strict(
                                {
                                    "name": {"type": "string", "minLength": 1},
                                    "prefix": {"type": "string"},
                                },
                                ("name",),
                            ),
                        },
                        "fromParams": STRINGS,
                        "fromCookies": STRINGS,
                        "outputPayloadToHeader": {"type": "string"},
                        "forwardOriginalToken": {"type": "boolean"},
                        "outputClaimToHeaders": {
                            "type": "array",
                            "items": strict(
                                {
                                    "header": HEADER_NAME,
                                    "claim": {"type": "string", "minLength": 1},
                                },
                                ("header", "claim"),
                            ),
                        },
                        "spaceDelimitedClaims": STRINGS,
                        "timeout": {"type": "string", "pattern": DURATION},
                        "presence": {"enum": ["OPTIONAL", "REQUIRED"]},
                    },
                    ("issuer",),
                ),
            },
        }
    ),
)
# MeshConfig.ExtensionProvider.EnvoyExternalAuthorizationHttpProvider, strict.
EXT_AUTHZ_HTTP = strict(
    {
        "service": {"type": "string", "pattern": r"^([a-z0-9-]+/)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "timeout": {"type": "string", "pattern": DURATION},
        "pathPrefix": {"type": "string", "pattern": "^/"},
        "failOpen": {"type": "boolean"},
        "statusOnError": {"type": "string", "pattern": r"^[1-5][0-9][0-9]$"},
        "includeRequestHeadersInCheck": STRINGS,
        "includeAdditionalHeadersInCheck": {
            "type": "object",
            "additionalProperties": {"type": "string"},
        },
        "includeRequestBodyInCheck": {"type": "object"},
        "headersToUpstreamOnAllow": STRINGS,
        "headersToDownstreamOnAllow": STRINGS,
        "headersToDownstreamOnDeny": STRINGS,
    },
    ("service", "port"),
)
HTTP_OPERATOR = strict(
    {
        "apiVersion": {"const": "install.istio.io/v1alpha1"},
        "kind": {"const": "IstioOperator"},
        "metadata": METADATA,
        "spec": strict(
            {
                "meshConfig": strict(
                    {
                        "extensionProviders": {
                            "type": "array",
                            "items": strict(
                                {"name": {"type": "string"}, "envoyExtAuthzHttp": EXT_AUTHZ_HTTP},
                                ("name", "envoyExtAuthzHttp"),
                            ),
                        }
                    }
                )
            }
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)


def custom_errors(doc: dict[str, Any]) -> list[str]:
    """pilot's validation of CUSTOM policies (pkg/config/validation): no request.auth.* and
    no source.* conditions, no request or source principals."""
    problems: list[str] = []
    if doc["spec"].get("action") != "CUSTOM":
        return problems
    for rule in doc["spec"].get("rules", []):
        for when in rule.get("when", []):
            key = when["key"]
            if key.startswith("request.auth.") or key in (
                "source.namespace", "source.serviceAccount", "source.trustDomain",
                "source.principal",
            ):  # fmt: skip
                problems.append(f"{key} is not supported with CUSTOM")
        for source in rule.get("from", []):
            for field in ("requestPrincipals", "notRequestPrincipals", "principals"):
                if source.get("source", {}).get(field):
                    problems.append(f"from.{field} is not supported with CUSTOM")
    return problems


def sessions_file() -> tuple[dict[str, Any], dict[str, Any]]:
    docs = {d["kind"]: d for d in load_all(ISTIO / "sessions.yaml")}
    return docs["RequestAuthentication"], docs["AuthorizationPolicy"]


def jwt_provider() -> dict[str, Any]:
    for hcm in http_connection_managers(load_config(ENVOY / "envoy-sessions.yaml")):
        for http_filter in hcm["http_filters"]:
            if http_filter["name"] == JWT_FILTER:
                provider: dict[str, Any] = http_filter["typed_config"]["providers"]["paygress"]
                return provider
    raise AssertionError("no jwt_authn provider in envoy-sessions.yaml")


def session_rules(policy: dict[str, Any]) -> dict[str, list[str]]:
    """route -> paths of the rules that ask Paygress unless that route's session was verified."""
    found: dict[str, list[str]] = {}
    for rule in policy["spec"]["rules"]:
        for when in rule.get("when", []):
            if when["key"] == "request.headers[x-paygress-route]":
                (route,) = when["notValues"]
                found[route] = [p for to in rule["to"] for p in to["operation"]["paths"]]
    return found


def test_the_session_objects_are_valid_istio() -> None:
    authn, policy = sessions_file()
    assert schema_errors(REQUEST_AUTHENTICATION, authn) == []
    assert schema_errors(AUTHORIZATION_POLICY, policy) == []
    assert semantic_errors(policy) == [] and custom_errors(policy) == []
    assert authn["spec"]["selector"] == policy["spec"]["selector"]
    (plain,) = load_all(ISTIO / "authorizationpolicy.yaml")
    assert policy["metadata"]["name"] == plain["metadata"]["name"], "applied instead of it"


def test_custom_refuses_what_would_read_the_session_directly() -> None:
    _, policy = sessions_file()
    broken = copy.deepcopy(policy)
    broken["spec"]["rules"][-1]["when"] = [{"key": "request.auth.audiences", "notValues": ["x"]}]
    assert custom_errors(broken)


def test_the_example_keys_are_what_paygress_jwks_prints_for_the_example_seed() -> None:
    authn, _ = sessions_file()
    expected = jwks(Seed.from_mnemonic(EXAMPLE_MNEMONIC))
    assert json.loads(authn["spec"]["jwtRules"][0]["jwks"]) == expected
    assert json.loads(jwt_provider()["local_jwks"]["inline_string"]) == expected


def test_istio_verifies_what_envoy_verifies_and_reports_the_same_claims() -> None:
    authn, policy = sessions_file()
    (rule,) = authn["spec"]["jwtRules"]
    provider = jwt_provider()
    assert rule["issuer"] == provider["issuer"] == DEFAULT_ISSUER
    assert [h["name"] for h in rule["fromHeaders"]] == [
        h["name"] for h in provider["from_headers"]
    ] == [SESSION_HEADER]  # fmt: skip
    assert rule["fromCookies"] == provider["from_cookies"]
    # Istio never asks Paygress about a verified session; Envoy's composite still may (a `;`
    # in the path, a token in Authorization), so it keeps the session for Paygress and the
    # session routes remove it before the upstream.
    assert rule["forwardOriginalToken"] is False and provider["forward"] is True
    istio_claims = {c["header"]: c["claim"] for c in rule["outputClaimToHeaders"]}
    envoy_claims = {c["header_name"]: c["claim_name"] for c in provider["claim_to_headers"]}
    assert envoy_claims == {**istio_claims, "x-envoy-original-dst-host": "dst"}  # pods: Envoy
    assert set(envoy_claims) <= set(TRUSTED_HEADERS), "Paygress strips client copies too"
    # every audience has its rule, and its rule keys on the claim header of its audience
    assert istio_claims["x-paygress-route"] == "aud"
    assert set(session_rules(policy)) == set(rule["audiences"])


def test_no_rule_sends_a_session_route_to_paygress_regardless() -> None:
    _, policy = sessions_file()
    routes = session_rules(policy)
    for rule in policy["spec"]["rules"]:
        if rule.get("when"):
            continue
        for to in rule["to"]:
            operation = to["operation"]
            for paths in routes.values():
                for path in paths:
                    prefix = path.rstrip("*")
                    unconditional = _covered(prefix, operation.get("paths", ["*"]))
                    excluded = _covered(prefix, operation.get("notPaths", []))
                    hosts = operation.get("hosts")  # a host-specific rule elsewhere is fine
                    assert not unconditional or excluded or hosts, (path, operation)


def provider_patterns(names: list[str]) -> list[dict[str, str]]:
    """pilot's generateHeaders: "x-*" a prefix, anything else exact."""
    return [{"prefix": n[:-1]} if n.endswith("*") else {"exact": n} for n in names]


def test_the_istio_http_provider_is_the_tested_envoy_http_filter() -> None:
    (operator,) = load_all(ISTIO / "meshconfig-http-provider.yaml")
    assert schema_errors(HTTP_OPERATOR, operator) == []
    (provider,) = operator["spec"]["meshConfig"]["extensionProviders"]
    http = provider["envoyExtAuthzHttp"]
    envoy = ext_authz_config(load_config(ENVOY / "envoy-http-authz.yaml"))
    service = envoy["http_service"]
    assert http["pathPrefix"] == service["path_prefix"]
    assert http["timeout"] == service["server_uri"]["timeout"]
    assert http["failOpen"] is envoy["failure_mode_allow"] is False
    assert (
        http["statusOnError"] == "503" and envoy["status_on_error"]["code"] == "ServiceUnavailable"
    )
    assert (
        provider_patterns(http["includeRequestHeadersInCheck"])
        == envoy["allowed_headers"]["patterns"]
    )
    added = {h["key"]: h["value"] for h in service["authorization_request"]["headers_to_add"]}
    assert http["includeAdditionalHeadersInCheck"] == added
    response = service["authorization_response"]
    for istio_key, envoy_key in (
        ("headersToUpstreamOnAllow", "allowed_upstream_headers"),
        ("headersToDownstreamOnAllow", "allowed_client_headers_on_success"),
        ("headersToDownstreamOnDeny", "allowed_client_headers"),
    ):
        assert provider_patterns(http[istio_key]) == response[envoy_key]["patterns"], istio_key
    assert http["port"] == yaml.safe_load((CHART / "values.yaml").read_text())["ports"]["http"]


# -- the chart ---------------------------------------------------------------------------------

SESSION_VALUES: dict[str, Any] = {
    "image": {"repository": "registry.example.com/paygress"},
    "mode": "sidecar",
    "seed": {"existingSecret": "paygress-seed"},
    "config": {
        "mints": ["https://mint.example.com"],
        "sessions": {"expiry_margin_seconds": 61, "cookie": "paygress-session"},
        "routes": [
            {
                "name": "stream",
                "match": {"path_prefix": "/stream/"},
                "mode": "per_second",
                "price": 1,
                "grants": 30,
            },
            {"name": "api", "match": {"path_prefix": "/api/"}, "price": 2},
        ],
    },
    "sessions": {
        "jwks": json.dumps(jwks(Seed.from_mnemonic(EXAMPLE_MNEMONIC)), separators=(",", ":"))
    },
    "istio": {
        "requestAuthentication": {"enabled": True},
        "authorizationPolicy": {
            "enabled": True,
            "sessionRoutes": [{"route": "stream", "paths": ["/stream/*"]}],
        },
    },
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    helm = find_helm()
    if helm is None:
        pytest.skip("no helm binary on PATH and no helm-python-sdk installed")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "values.yaml"
        path.write_text(yaml.safe_dump(values), encoding="utf-8")
        return documents(helm.template(CHART, path))


def test_the_chart_renders_the_session_objects_as_the_file_has_them() -> None:
    docs = render(SESSION_VALUES)
    by_kind = {d["kind"]: d for d in docs if d["kind"] in ("RequestAuthentication",)}
    (policy,) = [d for d in docs if d["kind"] == "AuthorizationPolicy"]
    authn = by_kind["RequestAuthentication"]
    assert schema_errors(REQUEST_AUTHENTICATION, authn) == []
    assert schema_errors(AUTHORIZATION_POLICY, policy) == []
    assert semantic_errors(policy) == [] and custom_errors(policy) == []
    file_authn, file_policy = sessions_file()
    assert authn["spec"] == file_authn["spec"]
    assert session_rules(policy) == session_rules(file_policy)
    # the default rule (every path) no longer covers the session route unconditionally
    (everything,) = [r for r in policy["spec"]["rules"] if not r.get("when")]
    assert everything["to"][0]["operation"] == {"paths": ["/*"], "notPaths": ["/stream/*"]}
    (jwks_map,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-jwks")
    ]
    assert json.loads(jwks_map["data"]["jwks.json"]) == json.loads(
        SESSION_VALUES["sessions"]["jwks"]
    )


@pytest.mark.parametrize(
    ("why", "change"),
    [
        ("needs sessions.jwks", {"sessions": {"jwks": ""}}),
        ("expiry_margin_seconds >= 61", {"config": {"sessions": {"expiry_margin_seconds": 2}}}),
        (
            "sessionRoutes needs istio.requestAuthentication",
            {"istio": {"requestAuthentication": {"enabled": False}}},
        ),
        (
            "needs istio.authorizationPolicy.sessionRoutes",
            {"istio": {"authorizationPolicy": {"sessionRoutes": []}}},
        ),
    ],
)
def test_the_chart_refuses_unsafe_session_values(why: str, change: dict[str, Any]) -> None:
    values = copy.deepcopy(SESSION_VALUES)
    for key, part in change.items():
        for sub, value in part.items():
            if isinstance(value, dict):
                values[key][sub].update(value)
            else:
                values[key][sub] = value
    with pytest.raises(RenderError, match=why):
        render(values)
