"""Paid sessions end to end: client → real Envoy on deploy/envoy/envoy-sessions.yaml (jwt_authn,
then ext_authz only without a valid session) → Paygress → real mint.

Calls to Paygress are counted where they land: Paygress's own `paygress_checks_total` (every
decision it makes, whichever port asked) and Envoy's ext_authz counters. A valid session must
cost zero of either; anything else about a session (expired, tampered, another route's,
another key's, `alg: none`, a counted route's) falls through to Paygress and its 402.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml

from paygress.cashu.nut13 import Seed
from paygress.core.free_clients import DEFAULT_KEY_HEADER
from paygress.core.gate import TRUSTED_HEADERS
from paygress.core.pod_access import KEY_HEADER as POD_KEY_HEADER
from paygress.core.ports import SessionClaims
from paygress.core.strip import unwanted_names
from paygress.sessions import SessionSigner, jwks
from tests.integration import test_pods_e2e as pods_e2e
from tests.integration.raw_http import fetch_raw, get
from tests.peers.envoy import EnvoyProxy
from tests.peers.kubeapi import FakeKubeApi
from tests.peers.mint import NutshellMint
from tests.peers.paygress import UNTHROTTLED, PaygressProcess, checks_at
from tests.peers.procs import LOOPBACK, REPO_ROOT, free_port
from tests.peers.proxy import CountingProxy
from tests.peers.upstream import EchoUpstream
from tests.peers.wallet import CashuWallet

SESSIONS_YAML = REPO_ROOT / "deploy" / "envoy" / "envoy-sessions.yaml"
MNEMONIC = "letter advice cage absurd amount doctor acoustic avoid letter advice cage above"
SIGNER = SessionSigner.from_seed(Seed.from_mnemonic(MNEMONIC))
JWKS = json.dumps(jwks(Seed.from_mnemonic(MNEMONIC)))
COOKIE = "paygress-session"


def config(mint_url: str, state: Path, metrics_port: int) -> dict[str, Any]:
    return {
        "state_dir": str(state),
        "mints": [mint_url],
        "drain_seconds": 0,
        "flush_interval_seconds": 0.2,
        "log_level": "WARNING",
        "metrics": {"listen": f"{LOOPBACK}:{metrics_port}"},
        "payments": {"unproven_swaps": UNTHROTTLED},
        "sessions": {"cookie": COOKIE},
        "routes": [
            # 1 sat buys 4 s: a session's life is seconds, so expiry is seen in a test
            {
                "name": "stream",
                "match": {"path_prefix": "/stream/"},
                "mode": "per_second",
                "price": 1,
                "grants": 4,
            },
            # the Envoy config's other session route (a tier there; any time route here)
            {
                "name": "pods",
                "match": {"path_prefix": "/pod/"},
                "mode": "per_second",
                "price": 1,
                "grants": 60,
            },
            {"name": "api", "match": {"path_prefix": "/api/"}, "price": 1},
        ],
    }


@dataclass
class Stack:
    mint: NutshellMint
    proxy: CountingProxy
    paygress: PaygressProcess
    envoy: EnvoyProxy
    upstream: EchoUpstream
    wallet: CashuWallet
    http: httpx.AsyncClient
    metrics_url: str

    async def token(self, amount: int) -> str:
        return await self.wallet.token(self.mint.url, amount, token_mint=self.proxy.url)

    async def checks(self) -> int:
        return await checks_at(self.http, self.metrics_url)

    async def authz_calls(self) -> int:
        """Check calls Envoy made (answered or not)."""
        stats = await self.envoy.stats("ext_authz")
        return sum(
            v
            for k, v in stats.items()
            if re.fullmatch(r"http\.ingress_http\.ext_authz\.(ok|denied|error)", k)
        )


@contextlib.asynccontextmanager
async def session_stack(
    workdir: Path, mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet
) -> AsyncIterator[Stack]:
    metrics_port = free_port()
    proxy = await CountingProxy.to_url(mint.url).start()
    paygress = await PaygressProcess(
        config(proxy.url, workdir / "state", metrics_port), MNEMONIC, workdir / "paygress"
    ).start()
    envoy = await EnvoyProxy(
        workdir / "envoy",
        upstream=upstream.address,
        paygress_socket=paygress.socket_path,
        config_path=SESSIONS_YAML,
        jwks=JWKS,
    ).start()
    try:
        async with httpx.AsyncClient(base_url=envoy.url, trust_env=False, timeout=15) as http:
            yield Stack(
                mint,
                proxy,
                paygress,
                envoy,
                upstream,
                wallet,
                http,
                f"http://{LOOPBACK}:{metrics_port}/metrics",
            )
    finally:
        await envoy.stop()
        await paygress.stop()
        await proxy.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet
) -> AsyncIterator[Stack]:
    async with session_stack(
        Path(tempfile.mkdtemp(prefix="pg-sessions-")), mint, upstream, wallet
    ) as s:
        yield s


async def pay(
    http: httpx.AsyncClient, path: str, token: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    """The answer to a payment, once the mint has settled it (a busy machine's mint may take
    longer than payments.timeout_seconds: 503 payment_pending, and the same token again)."""
    sent = headers if headers is not None else {"X-Cashu": token}
    for _ in range(20):
        r = await http.get(path, headers=sent)
        if r.status_code != 503 or "payment_pending" not in r.text:
            return r
        await asyncio.sleep(0.5)
    return r


async def paid_session(stack: Stack, amount: int, path: str = "/stream/a") -> tuple[str, str]:
    """(token, session): a payment through Envoy and the session its answer carries."""
    token = await stack.token(amount)
    r = await pay(stack.http, path, token)
    assert r.status_code == 200, r.text
    return token, r.headers["x-paygress-session"]


def claims_of(session: str) -> dict[str, Any]:
    body = session.split(".")[1]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return data


async def test_a_paid_session_passes_envoy_with_no_call_to_paygress(stack: Stack) -> None:
    token, session = await paid_session(stack, 6)  # 5 sat after the fee: 20 s
    claims = claims_of(session)
    assert (claims["aud"], claims["iss"], claims["paid"]) == ("stream", "paygress", 5)
    checks, calls, served = await stack.checks(), await stack.authz_calls(), stack.upstream.count
    for i in range(20):
        r = await stack.http.get(f"/stream/{i}", headers={"X-Paygress-Session": session})
        assert r.status_code == 200, r.text
    assert (await stack.checks(), await stack.authz_calls()) == (checks, calls), "no check"
    assert stack.upstream.count == served + 20
    seen = r.json()["headers"]
    assert seen["x-paygress-route"] == "stream"
    assert seen["x-paygress-expires"] == str(claims["exp"])
    assert (seen["x-paygress-paid"], seen["x-paygress-unit"]) == ("5", "sat")
    assert seen["x-paygress-grant"] == claims["sub"]
    assert "x-paygress-session" not in seen, "the session is not forwarded upstream"

    # Client-sent copies of the claim headers never pass, nor a token sent along.
    forged = {
        "X-Paygress-Session": session,
        "X-Paygress-Route": "evil",
        "X-Paygress-Paid": "1000000",
        "X-Envoy-Original-Dst-Host": "169.254.169.254:80",
        "X-Cashu": token,
    }
    r = await stack.http.get("/stream/x", headers=forged)
    assert r.status_code == 200
    seen = r.json()["headers"]
    assert (seen["x-paygress-route"], seen["x-paygress-paid"]) == ("stream", "5")
    assert "x-envoy-original-dst-host" not in seen and "x-cashu" not in seen
    assert (await stack.checks(), await stack.authz_calls()) == (checks, calls)

    # ...nor without a session: then Paygress is asked, and strips them.
    r = await stack.http.get("/stream/x", headers={"X-Paygress-Route": "stream"})
    assert r.status_code == 402 and r.json()["reason"] == "payment_required"
    r = await stack.http.get("/public", headers={"X-Paygress-Route": "stream"})
    assert r.status_code == 200 and "x-paygress-route" not in r.json()["headers"]


async def test_the_session_cookie_works_for_browsers(stack: Stack) -> None:
    token = await stack.token(2)
    r = await pay(stack.http, "/stream/a", token)
    session = r.headers["x-paygress-session"]
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={session}; Path=/; Expires=")
    assert "HttpOnly" in cookie and "Secure" in cookie
    checks = await stack.checks()
    r = await stack.http.get("/stream/c", headers={"Cookie": f"theme=dark; {COOKIE}={session}"})
    assert r.status_code == 200 and r.json()["headers"]["x-paygress-route"] == "stream"
    assert await stack.checks() == checks


def signed(**changes: Any) -> str:
    """A session signed with the stack's own key (what only Paygress can make)."""
    now = int(time.time())
    base = SessionClaims("stream", "0123456789abcdef", now + 60, 1, "sat")
    return SIGNER.sign(replace(base, **changes), now)


def unsigned(session: str, header: dict[str, Any]) -> str:
    head = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return f"{head}.{session.split('.')[1]}."


def tampered(session: str) -> str:
    """One signature character changed (not the last: its low bits are padding)."""
    i = len(session) - 10
    return session[:i] + ("A" if session[i] != "A" else "B") + session[i + 1 :]


BAD: dict[str, tuple[Callable[[], str], str, str]] = {
    "expired": (lambda: signed(expires_at=int(time.time()) - 2), "/stream/x", "session_expired"),
    "tampered": (lambda: tampered(signed()), "/stream/x", "session_invalid"),
    "another route's": (lambda: signed(), "/pod/x", "session_invalid"),
    "another key's": (
        lambda: SessionSigner.from_seed(Seed.from_mnemonic(pods_e2e.MNEMONIC)).sign(
            SessionClaims("stream", "g", int(time.time()) + 60, 1, "sat"), 0
        ),
        "/stream/x",
        "session_invalid",
    ),
    "alg none": (
        lambda: unsigned(signed(), {"alg": "none", "typ": "JWT"}),
        "/stream/x",
        "session_invalid",
    ),
    "a counted route's": (lambda: signed(route="api"), "/api/x", "session_invalid"),
    "not a JWT": (lambda: "not.a.jwt", "/stream/x", "session_invalid"),
}


@pytest.mark.parametrize("kind", list(BAD))
async def test_a_bad_session_falls_through_to_paygress_and_its_402(stack: Stack, kind: str) -> None:
    make, path, why = BAD[kind]
    session = make()
    for header in ({"X-Paygress-Session": session}, {"Cookie": f"{COOKIE}={session}"}):
        checks, calls = await stack.checks(), await stack.authz_calls()
        r = await stack.http.get(path, headers=header)
        assert r.status_code == 402, r.text
        assert r.json()["reason"] == why and "x-cashu" in r.headers
        assert (await stack.checks(), await stack.authz_calls()) == (checks + 1, calls + 1)


# A verified session is what sets x-paygress-route, and its presence is what spares a request
# the ext_authz call: a client-sent copy must never do the same, with or without a session.
FORGED_ROUTE: dict[str, tuple[str, Callable[[], list[tuple[str, str]]]]] = {
    "no session, its own route": ("/stream/x", lambda: [("X-Paygress-Route", "stream")]),
    "no session, a route without jwt_authn": ("/api/x", lambda: [("x-paygress-route", "stream")]),
    "no session, the pod route": ("/pod/x", lambda: [("X-PAYGRESS-ROUTE", "pods")]),
    "twice": ("/api/x", lambda: [("X-Paygress-Route", "stream"), ("X-Paygress-Route", "pods")]),
    "a tampered session": (
        "/stream/x",
        lambda: [("X-Paygress-Session", tampered(signed())), ("X-Paygress-Route", "stream")],
    ),
    "another route's session": (
        "/pod/x",
        lambda: [("X-Paygress-Session", signed()), ("X-Paygress-Route", "pods")],
    ),
    "a valid session where it does not apply": (
        "/api/x",
        lambda: [("X-Paygress-Session", signed()), ("X-Paygress-Route", "stream")],
    ),
}


@pytest.mark.parametrize("kind", list(FORGED_ROUTE))
async def test_a_client_sent_route_header_is_judged_by_paygress(stack: Stack, kind: str) -> None:
    path, make = FORGED_ROUTE[kind]
    checks, calls = await stack.checks(), await stack.authz_calls()
    r = await stack.http.get(path, headers=make())
    assert r.status_code == 402, r.text
    assert "x-cashu" in r.headers
    assert (await stack.checks(), await stack.authz_calls()) == (checks + 1, calls + 1)
    # The composite filter passes a request on untouched when it fails to create ext_authz.
    stats = await stack.envoy.stats("composite")
    assert stats["http.ingress_http.composite.filter_delegation_error"] == 0
    assert stats["http.ingress_http.composite.filter_delegation_success"] > 0


async def test_underscored_copies_of_paid_headers_never_reach_the_upstream(stack: Stack) -> None:
    """With a valid session Paygress is not asked, so Envoy itself drops header names with
    `_`, which a CGI-style upstream would read as the x-paygress-* headers."""
    r = await stack.http.get(
        "/stream/x",
        headers={"X-Paygress-Session": signed(), "X_Paygress_Paid": "1000000", "X_Cashu": "x"},
    )
    assert r.status_code == 200, r.text
    seen = r.json()["headers"]
    assert seen["x-paygress-paid"] == "1" and not [k for k in seen if "_" in k]


def forged_trusted_headers() -> dict[str, str]:
    """Every client copy of a header an upstream trusts, and the client's own keys, as
    Paygress strips them (Envoy drops the `_` spellings itself)."""
    names = unwanted_names(TRUSTED_HEADERS, DEFAULT_KEY_HEADER, POD_KEY_HEADER)
    return {name: "forged" for name in sorted(names) if "_" not in name}


def test_envoy_strips_what_paygress_strips_from_a_request_it_is_not_asked_about() -> None:
    """Taken together, the early header mutation, jwt_authn's claim headers and each session
    route's removals cover Paygress's own list (tests keep no copy of it); the one exception
    is x-paygress-pod on a tier route, which Paygress sets there (a client's copy reaches only
    the payer's own pod)."""
    config = yaml.safe_load(SESSIONS_YAML.read_text(encoding="utf-8"))
    (listener,) = config["static_resources"]["listeners"]
    (hcm,) = listener["filter_chains"][0]["filters"]
    manager = hcm["typed_config"]
    (early,) = manager["early_header_mutation_extensions"]
    removed_early = {m["remove"] for m in early["typed_config"]["mutations"]}
    filters = {f["name"]: f["typed_config"] for f in manager["http_filters"]}
    provider = filters["envoy.filters.http.jwt_authn"]["providers"]["paygress"]
    from_claims = {c["header_name"] for c in provider["claim_to_headers"]}
    routes = {
        r["match"].get("prefix"): r for r in manager["route_config"]["virtual_hosts"][0]["routes"]
    }
    left = {
        prefix: set(forged_trusted_headers())
        - removed_early
        - from_claims
        - set(routes[prefix]["request_headers_to_remove"])
        for prefix in ("/stream/", "/pod/")
    }
    assert left == {"/stream/": set(), "/pod/": {"x-paygress-pod"}}
    # and nothing Paygress reads from a client is removed before it is asked
    assert not removed_early & {"x-paygress-pod", POD_KEY_HEADER, DEFAULT_KEY_HEADER}


async def test_forged_trusted_headers_never_reach_the_upstream_with_a_session(
    stack: Stack,
) -> None:
    checks = await stack.checks()
    forged = forged_trusted_headers()
    r = await stack.http.get("/stream/x", headers={"X-Paygress-Session": signed(), **forged})
    assert r.status_code == 200, r.text
    seen = r.json()["headers"]
    assert {k: seen[k] for k in forged if k in seen} == {
        "x-paygress-route": "stream",
        "x-paygress-grant": "0123456789abcdef",
        "x-paygress-paid": "1",
        "x-paygress-unit": "sat",
        "x-paygress-expires": seen["x-paygress-expires"],
    }
    assert seen["x-paygress-expires"] != "forged"
    assert await stack.checks() == checks


async def test_a_token_in_authorization_beside_a_session_is_judged_by_paygress(
    stack: Stack,
) -> None:
    """Envoy cannot remove Authorization only when it holds a token, so such a request goes to
    Paygress, where a token wins over a session (here: not a valid one, 400) and never reaches
    the upstream; an upstream's own Authorization passes with the session alone."""
    session = signed()
    checks, served = await stack.checks(), stack.upstream.count
    r = await stack.http.get(
        "/stream/x", headers={"X-Paygress-Session": session, "Authorization": "CASHU cashuBxyz"}
    )
    assert (r.status_code, r.json()["reason"]) == (400, "malformed"), r.text
    assert (await stack.checks(), stack.upstream.count) == (checks + 1, served)
    r = await stack.http.get(
        "/stream/x", headers={"X-Paygress-Session": session, "Authorization": "Bearer app"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["headers"]["authorization"] == "Bearer app"
    assert await stack.checks() == checks + 1


@pytest.mark.parametrize(
    ("target", "status"),
    [
        # Envoy decodes %2e%2e; to ..; after /stream/ matched; Tomcat/Jetty/Spring read it as
        # `..`: Paygress prices /api/x, which a stream session does not pay for.
        ("/stream/%2e%2e;/api/x", 402),
        ("/stream/.%2E;/api/x", 402),
        ("/stream/a/%2e%2e;jsessionid=1/%2e%2e;/api/x", 402),
        # A path parameter that stays on the route: Paygress accepts the session itself.
        ("/stream/x;jsessionid=1", 200),
    ],
)
async def test_a_path_with_a_semicolon_is_judged_by_paygress_even_with_a_session(
    stack: Stack, target: str, status: int
) -> None:
    checks = await stack.checks()
    answer, body = await fetch_raw(stack.envoy.url, get(target, **{"X-Paygress-Session": signed()}))
    assert answer == status, body
    if status == 402:
        assert json.loads(body)["reason"] == "session_invalid"
    assert await stack.checks() == checks + 1


async def test_health_is_answered_without_paygress(stack: Stack) -> None:
    checks, calls = await stack.checks(), await stack.authz_calls()
    r = await stack.http.get("/healthz")
    assert r.status_code == 200 and r.text == "ok\n"
    assert (await stack.checks(), await stack.authz_calls()) == (checks, calls)


async def test_paygress_down_sessions_work_until_their_end_new_payments_fail_closed(
    stack: Stack,
) -> None:
    _, session = await paid_session(stack, 3)  # 2 sat after the fee: 8 s
    end = claims_of(session)["exp"]
    fresh = await stack.token(2)
    headers = {"X-Paygress-Session": session}
    await stack.paygress.stop()
    try:
        assert (await stack.http.get("/stream/x", headers=headers)).status_code == 200
        r = await stack.http.get("/stream/x", headers={"X-Cashu": fresh})
        assert r.status_code == 503, "a new payment cannot be judged: fail closed"
        assert (await stack.http.get("/api/x")).status_code == 503
        while time.time() < end - 0.5:  # Envoy decides alone until the paid end...
            assert (await stack.http.get("/stream/y", headers=headers)).status_code == 200
            await asyncio.sleep(0.5)
        paid_end = end + 2  # (sessions.expiry_margin_seconds)
        await asyncio.sleep(max(0.0, paid_end + 0.05 - time.time()))
        r = await stack.http.get("/stream/z", headers=headers)
        assert r.status_code == 503, "...and not a moment past it"
    finally:
        await stack.paygress.start()
    r = await stack.http.get("/stream/z", headers=headers)
    assert r.status_code == 402 and r.json()["reason"] == "session_expired"
    r = await pay(stack.http, "/stream/x", fresh)
    assert r.status_code == 200 and "x-paygress-session" in r.headers


async def test_a_new_payment_brings_a_new_session(stack: Stack) -> None:
    token, first = await paid_session(stack, 2)
    r = await stack.http.get("/stream/a", headers={"X-Cashu": token})
    assert r.headers["x-paygress-session"] == first, "the same grant: the same session"
    _, second = await paid_session(stack, 2)
    assert second != first and claims_of(second)["sub"] != claims_of(first)["sub"]


async def test_a_pod_session_routes_to_the_pod_with_no_call_to_paygress(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    """Pods for payment on the strict fake API server (whose kubelet puts the pod at
    127.0.0.1, the tier's port the echo upstream's): the session's `dst` claim reaches the
    ORIGINAL_DST cluster through jwt_authn's claim_to_headers."""
    kube = await FakeKubeApi(namespaces=[pods_e2e.NS]).start()
    async with pods_e2e.fake_target(tmp, kube) as target:
        target.port = upstream.port
        metrics_port = free_port()
        proxy = await CountingProxy.to_url(mint.url).start()
        settings = pods_e2e.config(target, proxy.url, tmp / "state")
        settings["metrics"] = {"listen": f"{LOOPBACK}:{metrics_port}"}
        paygress = await PaygressProcess(settings, pods_e2e.MNEMONIC, tmp / "pg").start()
        envoy = await EnvoyProxy(
            tmp / "envoy",
            upstream=upstream.address,
            paygress_socket=paygress.socket_path,
            config_path=SESSIONS_YAML,
            jwks=json.dumps(jwks(Seed.from_mnemonic(pods_e2e.MNEMONIC))),
        ).start()
        try:
            async with httpx.AsyncClient(base_url=envoy.url, trust_env=False, timeout=15) as http:
                s = Stack(
                    mint, proxy, paygress, envoy, upstream, wallet, http,
                    f"http://{LOOPBACK}:{metrics_port}/metrics",
                )  # fmt: skip
                await pod_session_flow(s, target)
        finally:
            await envoy.stop()
            await paygress.stop()
            await proxy.stop()


async def pod_session_flow(stack: Stack, target: pods_e2e.Target) -> None:
    token = await stack.token(30 + pods_e2e.MINT_FEE)  # 30 s at 1 sat/s
    r = await pay(stack.http, "/pod/app", token)
    assert r.status_code == 503 and "x-paygress-session" not in r.headers  # no address yet
    name = r.json()["pod"]
    await target.run(name)
    r = await pods_e2e.wait_for(stack.http, "/pod/app", {"X-Cashu": token}, 0)
    session, key = r.headers["x-paygress-session"], r.headers["x-paygress-pod-key"]
    claims = claims_of(session)
    assert (claims["aud"], claims["pod"]) == ("pods", name)
    assert claims["dst"] == f"127.0.0.1:{stack.upstream.port}"
    assert claims["exp"] == int(r.headers["x-paygress-expires"]) - 2

    checks, served = await stack.checks(), stack.upstream.count
    to_pods = (await stack.envoy.stats("paid_pods"))["cluster.paid_pods.upstream_rq_total"]
    forged = {"X-Paygress-Session": session, "X-Envoy-Original-Dst-Host": "169.254.169.254:80"}
    for i in range(10):
        r = await stack.http.get(f"/pod/app/{i}", headers=forged)
        assert r.status_code == 200, r.text  # the echo upstream, standing in for the pod
        assert r.json()["headers"]["x-paygress-route"] == "pods"
    assert stack.upstream.count == served + 10, "every request reached the pod"
    stats = await stack.envoy.stats("paid_pods")
    assert stats["cluster.paid_pods.upstream_rq_total"] == to_pods + 10, "by ORIGINAL_DST"
    assert await stack.checks() == checks, "and none reached Paygress"
    # Without a session the client's own destination never counts: Paygress is asked.
    r = await stack.http.get("/pod/app", headers={"X-Envoy-Original-Dst-Host": "127.0.0.1:1"})
    assert r.status_code == 402 and await stack.checks() == checks + 1

    # A top-up (the payer, with the pod's key) brings a session to the new paid end.
    top_up = {"X-Cashu": await stack.token(4), "X-Paygress-Pod": name, "X-Paygress-Pod-Key": key}
    r = await pay(stack.http, "/pod/app", "", top_up)
    assert pods_e2e.routed(r), r.text
    assert r.headers["x-paygress-pod"] == name, "the top-up's X-Paygress-Pod reached Paygress"
    renewed = claims_of(r.headers["x-paygress-session"])
    assert renewed["exp"] == claims["exp"] + 3 and renewed["dst"] == claims["dst"]
