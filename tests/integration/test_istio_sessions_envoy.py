"""deploy/istio/sessions.yaml's design, run through real Envoy: the filters Istio generates for
its RequestAuthentication and CUSTOM AuthorizationPolicy, transcribed from istiod's code
(pilot/pkg/security/authn/policy_applier.go: one jwt_authn provider per jwtRule, required for
every path with `allow_missing`; pilot/pkg/security/authz/builder: the CUSTOM rules as RBAC
shadow rules, ext_authz enabled by their metadata), in front of Paygress.

No Istio runs here: this shows the Envoy behaviour the Istio objects rely on (the claim header
set from a verified session and stripped from everyone else's requests, the 401 for a bad
session, Envoy's 60 s clock skew), with the objects' own values.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio

from paygress.core.ports import SessionClaims
from tests.integration.test_sessions import (
    JWKS,
    MNEMONIC,
    SIGNER,
    Stack,
    claims_of,
    config,
    paid_session,
)
from tests.peers.envoy import EXT_AUTHZ_FILTER, EnvoyProxy, http_connection_managers
from tests.peers.mint import NutshellMint
from tests.peers.paygress import PaygressProcess
from tests.peers.procs import LOOPBACK, REPO_ROOT, free_port
from tests.peers.proxy import CountingProxy
from tests.peers.upstream import EchoUpstream
from tests.peers.wallet import CashuWallet

SESSIONS_YAML = REPO_ROOT / "deploy" / "istio" / "sessions.yaml"
RBAC = "envoy.filters.http.rbac"
SHADOW_PREFIX = "istio_ext_authz_"


def istio_objects() -> tuple[dict[str, Any], dict[str, Any]]:
    import yaml

    docs = {d["kind"]: d for d in yaml.safe_load_all(SESSIONS_YAML.read_text()) if d}
    return docs["RequestAuthentication"]["spec"], docs["AuthorizationPolicy"]["spec"]


def jwt_filter(authn: dict[str, Any]) -> dict[str, Any]:
    """convertToEnvoyJwtConfig for one jwtRule."""
    (rule,) = authn["jwtRules"]
    provider = {
        "issuer": rule["issuer"],
        "audiences": rule.get("audiences", []),
        "local_jwks": {"inline_string": JWKS},  # (the test seed's, for the example's)
        "from_headers": [{"name": h["name"]} for h in rule.get("fromHeaders", [])],
        "from_cookies": rule.get("fromCookies", []),
        "forward": rule.get("forwardOriginalToken", False),
        "payload_in_metadata": "payload",
        "claim_to_headers": [
            {"header_name": c["header"], "claim_name": c["claim"]}
            for c in rule.get("outputClaimToHeaders", [])
        ],
    }
    requirement = {
        "requires_any": {"requirements": [{"provider_name": "origins-0"}, {"allow_missing": {}}]}
    }
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"origins-0": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": requirement}],
            "bypass_cors_preflight": True,
        },
    }


def _path(pattern: str) -> dict[str, Any]:
    if pattern == "*":
        return {"any": True}
    if pattern.endswith("*"):
        return {"url_path": {"path": {"prefix": pattern[:-1]}}}
    return {"url_path": {"path": {"exact": pattern}}}


def rbac_filter(policy: dict[str, Any]) -> dict[str, Any]:
    """The CUSTOM policy's rules as RBAC shadow rules (action DENY: a match = ask Paygress)."""
    policies = {}
    for i, rule in enumerate(policy["rules"]):
        permissions = []
        for to in rule.get("to", [{"operation": {}}]):
            op = to["operation"]
            ands: list[dict[str, Any]] = []
            if op.get("hosts"):
                hosts = [
                    {"header": {"name": ":authority", "string_match": {"exact": h}}}
                    for h in op["hosts"]
                    if "*" not in h
                ]
                hosts += [
                    {"header": {"name": ":authority", "string_match": {"prefix": h.rstrip("*")}}}
                    for h in op["hosts"]
                    if h.endswith("*")
                ]
                ands.append({"or_rules": {"rules": hosts}})
            if op.get("paths"):
                ands.append({"or_rules": {"rules": [_path(p) for p in op["paths"]]}})
            if op.get("notPaths"):
                ands.append(
                    {"not_rule": {"or_rules": {"rules": [_path(p) for p in op["notPaths"]]}}}
                )
            permissions.append({"and_rules": {"rules": ands}} if ands else {"any": True})
        principals: list[dict[str, Any]] = [{"any": True}]
        for when in rule.get("when", []):
            name = when["key"].removeprefix("request.headers[").removesuffix("]")
            matches = [
                {"header": {"name": name, "string_match": {"exact": v}}} for v in when["notValues"]
            ]
            principals = [{"not_id": {"or_ids": {"ids": matches}}}]
        policies[f"istio-ext-authz-ns[paygress]-policy[paygress]-rule[{i}]"] = {
            "permissions": permissions,
            "principals": principals,
        }
    return {
        "name": RBAC,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "shadow_rules": {"action": "DENY", "policies": policies},
            "shadow_rules_stat_prefix": SHADOW_PREFIX,
        },
    }


def as_istio(config: dict[str, Any]) -> None:
    authn, policy = istio_objects()
    for hcm in http_connection_managers(config):
        filters = hcm["http_filters"]
        at = next(i for i, f in enumerate(filters) if f["name"] == EXT_AUTHZ_FILTER)
        filters[at]["typed_config"]["filter_enabled_metadata"] = {
            "filter": RBAC,
            "path": [{"key": SHADOW_PREFIX + "shadow_effective_policy_id"}],
            "value": {"string_match": {"prefix": "istio-ext-authz"}},
        }
        filters[at:at] = [jwt_filter(authn), rbac_filter(policy)]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet
) -> AsyncIterator[Stack]:
    work = Path(tempfile.mkdtemp(prefix="pg-istio-sessions-"))
    metrics_port = free_port()
    proxy = await CountingProxy.to_url(mint.url).start()
    settings = config(proxy.url, work / "state", metrics_port)
    settings["sessions"] = {"expiry_margin_seconds": 61}  # Istio's skew: 60 s
    paygress = await PaygressProcess(settings, MNEMONIC, work / "paygress").start()
    envoy = await EnvoyProxy(
        work / "envoy",
        upstream=upstream.address,
        paygress_socket=paygress.socket_path,
        mutate=as_istio,
    ).start()
    try:
        async with httpx.AsyncClient(base_url=envoy.url, trust_env=False, timeout=15) as http:
            yield Stack(
                mint, proxy, paygress, envoy, upstream, wallet, http,
                f"http://{LOOPBACK}:{metrics_port}/metrics",
            )  # fmt: skip
    finally:
        await envoy.stop()
        await paygress.stop()
        await proxy.stop()


def session(route: str = "stream", expires_in: int = 120) -> str:
    now = int(time.time())
    return SIGNER.sign(SessionClaims(route, "0123456789abcdef", now + expires_in, 1, "sat"), now)


async def test_a_verified_session_skips_paygress_and_nothing_else_does(stack: Stack) -> None:
    _, paid = await paid_session(stack, 21)  # 20 sat after the fee: 80 s, 19 s of session
    assert claims_of(paid)["exp"] <= time.time() + 80 - 61, "signed 61 s before the paid end"
    checks = await stack.checks()
    for i in range(5):
        r = await stack.http.get(f"/stream/{i}", headers={"X-Paygress-Session": session()})
        assert r.status_code == 200 and r.json()["headers"]["x-paygress-route"] == "stream"
    assert await stack.checks() == checks, "no check for a verified session"

    # The rule's header, sent by the client without a session: stripped, so Paygress is asked.
    r = await stack.http.get("/stream/x", headers={"X-Paygress-Route": "stream"})
    assert r.status_code == 402 and await stack.checks() == checks + 1
    # A session for an audience the RequestAuthentication does not list: Istio refuses it (403,
    # jwt_authn's answer to a wrong audience); a listed route's session on another priced
    # route's path (the policy's api rule): Paygress is asked, without it (verified sessions are
    # not forwarded), and asks for payment.
    r = await stack.http.get("/stream/x", headers={"X-Paygress-Session": session("pods")})
    assert r.status_code == 403
    on_api = {"X-Paygress-Session": session(), "Host": "api.example.com"}
    r = await stack.http.get("/api/x", headers=on_api)
    assert r.status_code == 402 and r.json()["reason"] == "payment_required"
    assert await stack.checks() == checks + 2


async def test_a_bad_session_is_istios_401_and_the_skew_is_60_seconds(stack: Stack) -> None:
    checks = await stack.checks()
    late = session(expires_in=-30)  # 30 s past exp: inside Envoy's default skew
    r = await stack.http.get("/stream/x", headers={"X-Paygress-Session": late})
    assert r.status_code == 200, "why Paygress must sign exp 61 s early under Istio"
    for bad in (session(expires_in=-100), session()[:-12] + "A" * 12, json.dumps({})):
        r = await stack.http.get("/stream/x", headers={"X-Paygress-Session": bad})
        assert r.status_code == 401, r.text  # never a pass; not Paygress's 402 either
    assert await stack.checks() == checks
