"""Paid sessions in the gate: a time grant's allow carries one (built once, with the paid end as
its cache lifetime), a counted grant's never; a request presenting a session is judged by it."""

from __future__ import annotations

import json
from typing import Any

from paygress.cashu.nut13 import Seed
from paygress.core.gate import Gate, GateSettings
from paygress.core.model import Allow, Answer, HttpRequest
from paygress.core.pod_access import PodAccess, PodPaths
from paygress.core.ports import SessionClaims
from paygress.core.pricing import Pricing
from paygress.core.session_access import MAX_SESSION_BYTES, SessionAccess, SessionSettings
from paygress.sessions import SessionSigner

from .fakes import MINT, FakeStore, FakeWallet, make_token
from .test_gate import API, TIMED, Clock
from .test_pod_access import PODS, TIER, FakePods

SIGNER = SessionSigner.from_seed(
    Seed.from_mnemonic(
        "legal winner thank year wave sausage worth useful legal winner thank yellow"
    )
)


class CountingSigner:
    """The real signer, counting signatures."""

    def __init__(self) -> None:
        self.signed = 0

    def sign(self, claims: SessionClaims, issued_at: int) -> str:
        self.signed += 1
        return SIGNER.sign(claims, issued_at)

    def read(self, token: str) -> SessionClaims | None:
        return SIGNER.read(token)


def make(cookie: str = "") -> tuple[Gate, SessionAccess, CountingSigner, FakePods, Clock]:
    store, wallet, pods, clock = FakeStore(), FakeWallet(), FakePods(), Clock()
    wallet.store = store
    signer = CountingSigner()
    sessions = SessionAccess(signer, SessionSettings(cookie=cookie, pod_max_seconds=60), clock)
    access = PodAccess(
        pods, PodPaths(), "sat", (MINT,), (TIER,), clock, owner_key=b"k" * 32, sessions=sessions
    )
    gate = Gate(
        Pricing((API, TIMED, PODS)),
        GateSettings("sat", (MINT,)),
        wallet,
        store,
        clock=clock,
        pods=access,
        sessions=sessions,
    )
    return gate, sessions, signer, pods, clock


def req(path: str, **headers: str) -> HttpRequest:
    return HttpRequest("GET", "h", path, headers)


def session_of(decision: Allow) -> str:
    return dict(decision.response_headers)["x-paygress-session"]


def reason(decision: object) -> str:
    assert isinstance(decision, Answer), decision
    data: dict[str, Any] = json.loads(decision.body)
    return str(data["reason"])


async def test_a_time_grant_answers_with_one_session_until_its_paid_end() -> None:
    gate, _, signer, _, clock = make()
    token = make_token((8, 2))  # 10 sat at 5 sat per 60 s: 120 s
    first = await gate.check(req("/live/a", **{"x-cashu": token}))
    assert isinstance(first, Allow)
    session = session_of(first)
    claims = SIGNER.read(session)
    assert claims is not None
    paid_end = clock.now + 120
    assert claims == SessionClaims("timed", claims.grant, int(paid_end) - 2, 10, "sat")
    assert first.cache_until == paid_end
    again = await gate.check(req("/live/b", **{"x-cashu": token}))
    assert again is first and signer.signed == 1  # the cached allow, signed once


async def test_counted_grants_get_no_session_and_no_cache_lifetime() -> None:
    gate, _, signer, _, _ = make()
    decision = await gate.check(req("/api/x", **{"x-cashu": make_token((8,))}))
    assert isinstance(decision, Allow)
    assert "x-paygress-session" not in dict(decision.response_headers)
    assert decision.cache_until == 0 and signer.signed == 0


async def test_a_session_is_judged_without_a_token_by_route_and_paid_end() -> None:
    gate, _, _, _, clock = make()
    paid = await gate.check(req("/live/a", **{"x-cashu": make_token((8, 2))}))
    assert isinstance(paid, Allow)
    session = session_of(paid)
    claims = SIGNER.read(session)
    assert claims is not None

    ok = await gate.check(req("/live/x", **{"x-paygress-session": session}))
    assert isinstance(ok, Allow) and ok.reason == "session"
    upstream = dict(ok.upstream_headers)
    assert upstream["x-paygress-route"] == "timed"
    assert upstream["x-paygress-expires"] == str(claims.expires_at)
    assert upstream["x-paygress-grant"] == claims.grant
    assert ok.remove_headers == ("x-paygress-session",)  # the session does not go upstream
    assert ok.cache_until == claims.expires_at

    spoofed = await gate.check(
        req("/live/x", **{"x-paygress-session": session, "x-envoy-original-dst-host": "1.1.1.1:1"})
    )
    assert isinstance(spoofed, Allow)
    assert "x-envoy-original-dst-host" in spoofed.remove_headers

    assert reason(await gate.check(req("/api/x", **{"x-paygress-session": session}))) == (
        "session_invalid"  # another route's session
    )
    counted = SIGNER.sign(SessionClaims("api", "g", claims.expires_at, 9, "sat"), 1)
    assert reason(await gate.check(req("/api/x", **{"x-paygress-session": counted}))) == (
        "session_invalid"  # never issued for a counted route, and never taken for one
    )
    assert reason(await gate.check(req("/live/x", **{"x-paygress-session": "e30.e30.x"}))) == (
        "session_invalid"
    )
    clock.now = claims.expires_at
    expired = await gate.check(req("/live/x", **{"x-paygress-session": session}))
    assert reason(expired) == "session_expired"
    assert isinstance(expired, Answer) and expired.status == 402
    assert "x-cashu" in dict(expired.headers)  # with the payment request, as any 402


def count_reads(sessions: SessionAccess) -> list[str]:
    """The tokens the signer is asked to read from now on."""
    reads: list[str] = []
    real = sessions.tokens.read

    def counting(token: str) -> SessionClaims | None:
        reads.append(token)
        return real(token)

    sessions.tokens.read = counting  # type: ignore[method-assign]
    return reads


async def test_a_forged_session_is_checked_once() -> None:
    gate, sessions, _, _, _ = make()
    reads = count_reads(sessions)
    for _ in range(3):
        assert reason(await gate.check(req("/live/x", **{"x-paygress-session": "a.b.c"}))) == (
            "session_invalid"
        )
    assert reads == ["a.b.c"]


async def test_a_session_too_long_to_be_ours_is_refused_unread_and_not_remembered() -> None:
    gate, sessions, _, _, _ = make()
    reads = count_reads(sessions)
    for n in range(50):
        forged = f"a.{'b' * (MAX_SESSION_BYTES + n)}.c"
        assert reason(await gate.check(req("/live/x", **{"x-paygress-session": forged}))) == (
            "session_invalid"
        )
    assert reads == []
    assert sessions._read == {}


async def test_a_token_wins_over_a_session() -> None:
    gate, *_ = make()
    decision = await gate.check(
        req("/live/x", **{"x-cashu": make_token((8, 2)), "x-paygress-session": "junk"})
    )
    assert isinstance(decision, Allow) and decision.reason == "paid"


async def test_the_session_cookie_is_set_and_read_when_configured() -> None:
    gate, *_ = make(cookie="paygress-session")
    paid = await gate.check(req("/live/a", **{"x-cashu": make_token((8, 2))}))
    assert isinstance(paid, Allow)
    session = session_of(paid)
    cookie = dict(paid.response_headers)["set-cookie"]
    assert cookie.startswith(f"paygress-session={session}; Path=/; Expires=")
    assert cookie.endswith("HttpOnly; Secure; SameSite=Lax")
    jar = f"theme=dark; paygress-session={session}; other=1"
    ok = await gate.check(req("/live/x", cookie=jar))
    assert isinstance(ok, Allow) and ok.reason == "session"


async def test_a_pod_session_names_the_address_and_lives_at_most_pod_max_seconds() -> None:
    gate, _, signer, pods, clock = make()
    token = make_token((512, 128))  # 640 s at 1 sat/s
    starting = await gate.check(req("/pod/x", **{"x-cashu": token}))
    assert isinstance(starting, Answer) and starting.status == 503
    assert "x-paygress-session" not in dict(starting.headers)  # no address yet, no session
    name = json.loads(starting.body)["pod"]
    pods.run(name)
    routed = await gate.check(req("/pod/x", **{"x-cashu": token}))
    assert isinstance(routed, Allow)
    claims = SIGNER.read(session_of(routed))
    assert claims is not None
    assert (claims.route, claims.pod, claims.destination) == ("pods", name, "10.1.2.3:8080")
    assert claims.expires_at == int(clock.now) + 60  # pod_max_seconds, not the paid end
    again = await gate.check(req("/pod/x", **{"x-cashu": token}))
    assert isinstance(again, Allow) and session_of(again) == session_of(routed)
    assert signer.signed == 1
    clock.now += 31  # less than half its life left: a fresh one
    later = await gate.check(req("/pod/x", **{"x-cashu": token}))
    assert isinstance(later, Allow) and session_of(later) != session_of(routed)

    by_session = await gate.check(req("/pod/y", **{"x-paygress-session": session_of(later)}))
    assert isinstance(by_session, Allow)
    assert dict(by_session.upstream_headers)["x-envoy-original-dst-host"] == "10.1.2.3:8080"
    pods.pods[name] = pods.pods[name].__class__(name, "Running", ip="10.9.9.9", ready=True)
    moved = await gate.check(req("/pod/y", **{"x-paygress-session": session_of(later)}))
    assert reason(moved) == "session_invalid"  # the pod is elsewhere now: send the token
