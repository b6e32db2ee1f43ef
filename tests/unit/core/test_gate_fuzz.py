"""Property tests of the whole gate: whatever a client sends, `Gate.check` answers and
never gives priced access away.

The wallet is the in-memory FakeWallet (it grants every token it is handed at face value), so
an Allow on a priced route is only legitimate after a redemption that returned a grant.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import cbor2
from coincurve import PrivateKey
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from paygress.cashu.models import Proof, Token
from paygress.cashu.token import encode_token_v3, encode_token_v4
from paygress.core.gate import TRUSTED_HEADERS, Gate, GateSettings
from paygress.core.hosts import BadHost
from paygress.core.model import Allow, Answer, Decision, Grant, HttpRequest, Received
from paygress.core.ports import Verified
from paygress.core.pricing import Mode, Pricing, RouteRule

from .fakes import KEYSET, MINT, FakeStore, FakeWallet

API = RouteRule(name="api", price=4, path_prefix="/api/")
TIMED = RouteRule(name="timed", price=5, mode=Mode.PER_SECOND, grants=60, path_prefix="/live/")
HOSTED = RouteRule(
    name="hosted", price=3, hosts=("paid.test",), methods=("POST",), path_regex=r"/v\d+/"
)
RULES = (API, TIMED, HOSTED)
PRICED_PATHS = {"/api/x": API, "/live/feed": TIMED}
FREE_PATHS = ("/public", "/", "/apix", "/live")
NOW = 1_700_000_000.0
MAX_TOKEN_BYTES = 4096

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIGHT = settings(FUZZ, max_examples=150)  # the properties around the main one

# Valid compressed points (a proof's C must parse as one).
POINTS = tuple(PrivateKey((i + 1).to_bytes(32, "big")).public_key.format().hex() for i in range(4))


class RecordingWallet(FakeWallet):
    """A FakeWallet that remembers the grants it handed out."""

    def __init__(self) -> None:
        super().__init__()
        self.granted: list[Grant] = []

    async def redeem(
        self,
        verified: Verified,
        fingerprint: str,
        grant_for: Callable[[Received], Grant],
        admit: Callable[[], None],
    ) -> Grant:
        grant = await super().redeem(verified, fingerprint, grant_for, admit)
        self.granted.append(grant)
        return grant


def make_gate() -> tuple[Gate, RecordingWallet]:
    store = FakeStore()
    wallet = RecordingWallet()
    wallet.store = store
    gate = Gate(
        Pricing(RULES),
        GateSettings(unit="sat", mints=(MINT,), max_token_bytes=MAX_TOKEN_BYTES, max_proofs=8),
        wallet,
        store,
        clock=lambda: NOW,
    )
    return gate, wallet


# -- strategies --------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def repeated(prefix: str, char: str, count: int) -> str:
    return prefix + char * count


huge_text = st.builds(
    repeated,
    st.sampled_from(["", "cashuA", "cashuB", "cashu:cashuB"]),
    st.characters(),
    st.integers(min_value=MAX_TOKEN_BYTES - 8, max_value=80_000),
)

cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=3) | st.integers(-3, 3), inner, max_size=4)
    ),
    max_leaves=16,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=16,
)


def maybe(valid: st.SearchStrategy[Any], junk: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the valid value, sometimes something else."""
    return st.one_of(valid, valid, valid, junk)


mints = maybe(
    st.sampled_from([MINT, MINT + "/", "HTTP://MINT.test"]),
    st.sampled_from(["http://evil.test", "ftp://mint.test", "", "http://mint.test?x=1"])
    | st.text(max_size=30),
)
units = maybe(st.just("sat"), st.sampled_from(["msat", "usd", "SAT", ""]) | st.text(max_size=8))
amounts = maybe(
    st.integers(min_value=1, max_value=64),
    st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from([0, 2**63, True]),
)
secrets_ = maybe(st.text(min_size=1, max_size=64), st.text(max_size=2000) | st.integers())
points_hex = maybe(st.sampled_from(POINTS), st.text(alphabet="0123456789abcdef", max_size=70))
points_bytes = maybe(st.sampled_from(POINTS).map(bytes.fromhex), st.binary(max_size=40))
keyset_ids = maybe(st.just(KEYSET), st.text(alphabet="0123456789abcdefg", max_size=70))


@st.composite
def v4_documents(draw: st.DrawFn) -> dict[Any, Any]:
    """A cashuB body shaped like a token, with any field possibly wrong or missing."""
    proofs = draw(
        st.lists(
            st.fixed_dictionaries(
                {"a": amounts, "s": secrets_, "c": points_bytes},
                optional={"d": cbor_values, "w": st.text(max_size=20) | cbor_values},
            ),
            max_size=10,
        )
    )
    kid = draw(maybe(st.just(bytes.fromhex(KEYSET)), st.binary(max_size=40) | st.text(max_size=5)))
    doc: dict[Any, Any] = {"m": draw(mints), "u": draw(units), "t": [{"i": kid, "p": proofs}]}
    for key in draw(st.sets(st.sampled_from(["m", "u", "t"]), max_size=1)):
        del doc[key]
    if draw(st.booleans()):
        doc[draw(st.text(max_size=2))] = draw(cbor_values)
    return doc


@st.composite
def v3_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A cashuA body shaped like a token, with any field possibly wrong or missing."""
    proofs = draw(
        st.lists(
            st.fixed_dictionaries(
                {"id": keyset_ids, "amount": amounts, "secret": secrets_, "C": points_hex},
                optional={"dleq": json_values, "witness": json_values},
            ),
            max_size=10,
        )
    )
    entries = [{"mint": draw(mints), "proofs": proofs}]
    if draw(st.booleans()):
        entries.append({"mint": draw(mints), "proofs": proofs[:1]})
    doc: dict[str, Any] = {"token": entries, "unit": draw(units)}
    if draw(st.booleans()):
        doc["memo"] = draw(json_values)
    return doc


@st.composite
def real_tokens(draw: st.DrawFn) -> str:
    """A well-formed token (which the FakeWallet would redeem), possibly damaged."""
    values = draw(st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=6))
    proofs = tuple(
        Proof(
            keyset_id=KEYSET,
            amount=amount,
            secret=f"{draw(st.integers(0, 2**32)):x}-{index}",
            C=draw(st.sampled_from(POINTS)),
        )
        for index, amount in enumerate(values)
    )
    mint = draw(st.sampled_from([MINT, MINT + "/", "https://evil.test"]))
    unit = draw(st.sampled_from(["sat", "sat", "usd"]))
    version = draw(st.sampled_from([3, 4]))
    token = Token(mint=mint, unit=unit, proofs=proofs, memo=None, version=version)
    text = encode_token_v4(token) if version == 4 else encode_token_v3(token)
    damage = draw(st.sampled_from(["none"] * 4 + ["cut", "flip", "wrap", "prefix", "case"]))
    if damage == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == "flip":
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(st.characters()) + text[at + 1 :]
    elif damage == "wrap":
        text = draw(st.sampled_from([" ", "\t", "\n", '"'])) + text + draw(st.text(max_size=3))
    elif damage == "prefix":
        text = "cashu:" + text
    elif damage == "case":
        text = text.swapcase()
    return text


prefixes = st.sampled_from(["cashuA", "cashuB", "cashuC", "cashu:cashuB", "CASHUB", "cashu", ""])

payloads = st.one_of(
    st.text(),
    huge_text,
    st.builds(str.__add__, prefixes, st.text(max_size=200)),
    st.builds(str.__add__, prefixes, st.binary(max_size=300).map(b64)),
    st.builds(str.__add__, prefixes, cbor_values.map(lambda v: b64(cbor2.dumps(v)))),
    st.builds(str.__add__, prefixes, json_values.map(lambda v: b64(json.dumps(v).encode()))),
    v4_documents().map(lambda d: "cashuB" + b64(cbor2.dumps(d))),
    v3_documents().map(lambda d: "cashuA" + b64(json.dumps(d).encode())),
    real_tokens(),
    real_tokens(),
    real_tokens(),
)

schemes = st.sampled_from(
    ["Cashu ", "cashu ", "CASHU  ", "Bearer ", "bearer ", " Bearer\t", "Basic ", "Cashu", ""]
)
header_names = st.sampled_from(
    [
        "x-paygress-paid",
        "x-paygress-grant",
        "x-paygress-remaining",
        "x_paygress_paid",
        "x.paygress-route",
        "x-other",
        "host",
        "cookie",
    ]
) | st.text(max_size=12).map(str.lower)


@st.composite
def request_headers(draw: st.DrawFn) -> dict[str, str]:
    """Arbitrary headers, with a payload in x-cashu and/or Authorization."""
    headers = draw(st.dictionaries(header_names, st.text(max_size=30), max_size=4))
    placement = draw(st.sampled_from(["x-cashu", "x-cashu", "authorization", "both", "neither"]))
    if placement in ("x-cashu", "both"):
        headers["x-cashu"] = draw(payloads)
    if placement in ("authorization", "both"):
        headers["authorization"] = draw(schemes) + draw(payloads)
    return headers


# -- checks ------------------------------------------------------------------------------------


def assert_client_error(decision: Answer, rule: RouteRule | None) -> dict[str, Any]:
    """A Answer the client can act on: 400/402 with a JSON body naming the reason."""
    assert decision.status in {400, 402}, decision
    body = json.loads(decision.body)
    assert isinstance(body, dict)
    assert body["reason"] == decision.reason
    assert isinstance(body["message"], str) and body["message"]
    headers = dict(decision.headers)
    assert headers["content-type"] == "application/json"
    if rule is not None:
        assert headers["x-cashu"].startswith("creqA")
        assert body["payment"]["route"] == rule.name
        assert body["payment"]["amount"] == rule.price
    return body


def token_of(headers: Mapping[str, str]) -> str | None:
    """The payload the request carries, as the gate reads it (x-cashu first)."""
    return headers.get("x-cashu") or headers.get("authorization")


def assert_no_echo(decision: Decision, headers: Mapping[str, str]) -> None:
    """Denials never repeat the token back (it is a bearer secret)."""
    sent = token_of(headers)
    if (
        isinstance(decision, Answer)
        and sent
        and sent.strip().startswith("cashu")
        and len(sent) > 16
    ):
        assert sent.strip() not in decision.body.decode()


# -- properties --------------------------------------------------------------------------------


@FUZZ
@given(headers=request_headers(), path=st.sampled_from(sorted(PRICED_PATHS)))
async def test_priced_route_never_allows_without_a_grant(
    headers: dict[str, str], path: str
) -> None:
    gate, wallet = make_gate()
    rule = PRICED_PATHS[path]
    decision = await gate.check(HttpRequest("GET", "svc.test", path, headers))
    event(f"{type(decision).__name__}: {decision.reason}")
    assert_no_echo(decision, headers)
    if isinstance(decision, Answer):
        assert_client_error(decision, rule)
        return
    assert decision.reason == "paid"
    assert wallet.calls >= 1 and wallet.granted, "allowed without a redemption"
    grant_ids = {g.id[:16] for g in wallet.granted}
    upstream = dict(decision.upstream_headers)
    assert upstream["x-paygress-grant"] in grant_ids
    assert upstream["x-paygress-route"] == rule.name
    assert int(upstream["x-paygress-paid"]) >= rule.price
    # The token never travels upstream; nor do headers the client forged.
    assert "x-cashu" not in headers or "x-cashu" in decision.remove_headers
    if not headers.get("x-cashu"):
        assert "authorization" in decision.remove_headers
    forged = {h for h in headers if h.startswith("x-paygress-")} - set(upstream)
    assert forged <= set(decision.remove_headers)


@LIGHT
@given(
    headers=request_headers(),
    repeats=st.integers(min_value=2, max_value=6),
)
async def test_repeated_requests_never_exceed_what_was_paid(
    headers: dict[str, str], repeats: int
) -> None:
    gate, wallet = make_gate()
    allowed = 0
    for _ in range(repeats):
        decision = await gate.check(HttpRequest("GET", "svc.test", "/api/x", headers))
        if isinstance(decision, Allow):
            allowed += 1
        else:
            assert_client_error(decision, API)
    assert wallet.calls <= 1  # one token: redeemed at most once, then served from memory
    bought = sum(API.buys(g.paid) for g in wallet.granted)
    assert allowed <= bought


@LIGHT
@given(headers=request_headers(), path=st.sampled_from(FREE_PATHS))
async def test_free_route_always_allows_and_strips_forged_headers(
    headers: dict[str, str], path: str
) -> None:
    gate, wallet = make_gate()
    decision = await gate.check(HttpRequest("GET", "svc.test", path, headers))
    assert isinstance(decision, Allow) and decision.reason == "free"
    assert decision.upstream_headers == ()
    expected = {h for h in headers if re.sub(r"[_.]", "-", h) in TRUSTED_HEADERS}
    if "x-cashu" in headers:  # a token never goes upstream, on a free route neither
        expected.add("x-cashu")
    scheme, _, rest = headers.get("authorization", "").strip().partition(" ")
    if (scheme.lower() == "cashu" and rest.strip()) or (
        scheme.lower() == "bearer" and rest.strip().startswith("cashu")
    ):
        expected.add("authorization")
    assert set(decision.remove_headers) == expected
    assert wallet.calls == 0


@FUZZ
@given(
    method=st.text() | st.sampled_from(["GET", "POST", "post", "PUT"]),
    host=st.text() | st.sampled_from(["paid.test", "PAID.test:8443", "[::1]:80", "a:b:c"]),
    path=st.text()
    | huge_text
    | st.sampled_from(["/api/", "/v1/x", "/v1/x?y", "/live/", "?/api/"])
    | st.builds(str.__add__, st.sampled_from(["/api/", "/live/", "/v2/"]), st.text()),
    # no payment: a random header name may happen to be "x-cashu" (hypothesis found it)
    headers=st.dictionaries(
        header_names.filter(lambda h: h not in ("x-cashu", "authorization")),
        st.text(max_size=30),
        max_size=4,
    ),
)
async def test_arbitrary_method_host_path_never_raise(
    method: str, host: str, path: str, headers: dict[str, str]
) -> None:
    gate, wallet = make_gate()
    try:
        rule = gate.pricing.match(method, host, path)
    except BadHost as exc:  # the host matters to a rule and is malformed or missing
        decision = await gate.check(HttpRequest(method, host, path, headers))
        assert isinstance(decision, Answer) and decision.status == 400
        assert json.loads(decision.body)["reason"] == exc.reason
        assert exc.reason in ("bad_host", "missing_host")
        return
    decision = await gate.check(HttpRequest(method, host, path, headers))
    if rule is None:
        assert isinstance(decision, Allow) and decision.reason == "free"
    else:
        assert isinstance(decision, Answer) and decision.status == 402
        assert assert_client_error(decision, rule)["reason"] == "payment_required"
    assert wallet.calls == 0


@LIGHT
@given(
    headers=request_headers(),
    context=st.dictionaries(
        st.sampled_from(["paygress.route", "paygress.price", "paygress.mode", "paygress.grants"])
        | st.text(max_size=10),
        st.sampled_from(["api", "timed", "nope", "0", "1", "7", "per_second", "per_request"])
        | st.text(max_size=20),
        max_size=4,
    ),
)
async def test_arbitrary_context_extensions_never_raise(
    headers: dict[str, str], context: dict[str, str]
) -> None:
    """Context extensions come from the operator's Envoy config: a bad one is a 500 naming
    the problem; anything else is the usual client-facing answer."""
    gate, wallet = make_gate()
    decision = await gate.check(HttpRequest("GET", "svc.test", "/api/x", headers, context))
    if isinstance(decision, Answer) and decision.status == 500:
        body = json.loads(decision.body)
        assert body["reason"] == "route_misconfigured"
        assert wallet.calls == 0
    elif isinstance(decision, Answer):
        assert_client_error(decision, None)
    elif decision.reason == "paid":
        assert wallet.granted
