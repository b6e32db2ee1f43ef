import asyncio
import json
import time
from typing import Any

import pytest

from paygress.cashu.nut18 import decode_payment_request
from paygress.core.gate import Gate, GateSettings
from paygress.core.model import Allow, Answer, Grant, HttpRequest
from paygress.core.ports import PaymentRejected, TryAgainLater
from paygress.core.pricing import Mode, Pricing, RouteRule

from .fakes import MINT, FakeStore, FakeWallet, make_token

API = RouteRule(name="api", price=4, path_prefix="/api/")
TIMED = RouteRule(name="timed", price=5, mode=Mode.PER_SECOND, grants=60, path_prefix="/live/")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make_gate(fee: int = 0, fee_ppk: int = 0) -> tuple[Gate, FakeWallet, FakeStore, Clock]:
    store = FakeStore()
    wallet = FakeWallet(fee, fee_ppk)
    wallet.store = store
    clock = Clock()
    gate = Gate(
        Pricing((API, TIMED)),
        GateSettings(unit="sat", mints=(MINT,), max_token_bytes=4096, max_proofs=8),
        wallet,
        store,
        clock=clock,
    )
    return gate, wallet, store, clock


def req(path: str = "/api/x", **headers: str) -> HttpRequest:
    return HttpRequest(method="GET", host="h", path=path, headers=headers)


def body(decision: Answer) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(decision.body)
    return data


async def test_free_route_allows_without_payment() -> None:
    gate, wallet, *_ = make_gate()
    decision = await gate.check(req("/public"))
    assert isinstance(decision, Allow) and decision.reason == "free"
    assert wallet.calls == 0


async def test_free_route_strips_spoofed_paid_headers() -> None:
    gate, *_ = make_gate()
    decision = await gate.check(req("/public", **{"x-paygress-paid": "1000"}))
    assert isinstance(decision, Allow) and decision.remove_headers == ("x-paygress-paid",)
    chosen = {"x-envoy-original-dst-host": "169.254.169.254:80"}
    decision = await gate.check(req("/public", **chosen))
    assert isinstance(decision, Allow)
    assert decision.remove_headers == ("x-envoy-original-dst-host",), "no client-chosen dst"


async def test_priced_route_without_payment_is_402_with_request() -> None:
    gate, *_ = make_gate()
    decision = await gate.check(req())
    assert isinstance(decision, Answer) and decision.status == 402
    headers = dict(decision.headers)
    pr = decode_payment_request(headers["x-cashu"])
    assert (pr.amount, pr.unit, pr.mints) == (4, "sat", (MINT,))
    data = body(decision)
    assert data["reason"] == "payment_required"
    assert data["payment"]["amount"] == 4
    assert "X-Cashu" in str(data["how_to_pay"])


@pytest.mark.parametrize("header", ["x-cashu", "authorization-cashu", "authorization-bearer"])
async def test_paid_token_buys_requests_until_exhausted(header: str) -> None:
    gate, wallet, _, _ = make_gate()
    token = make_token((8, 4))  # 12 sat at 4 sat per request: 3 requests
    if header == "x-cashu":
        headers = {"x-cashu": token}
    else:
        scheme = "Cashu" if header.endswith("cashu") else "Bearer"
        headers = {"authorization": f"{scheme} {token}"}
    remaining = []
    for _ in range(3):
        decision = await gate.check(req(**headers))
        assert isinstance(decision, Allow), decision
        remaining.append(dict(decision.upstream_headers)["x-paygress-remaining"])
        assert dict(decision.upstream_headers)["x-paygress-paid"] == "12"
        assert decision.remove_headers[0] in ("x-cashu", "authorization")
    assert remaining == ["2", "1", "0"]
    decision = await gate.check(req(**headers))
    assert isinstance(decision, Answer) and decision.status == 402
    assert body(decision)["reason"] == "exhausted"
    assert wallet.calls == 1


async def test_v3_and_v4_encodings_of_one_payment_share_a_grant() -> None:
    from paygress.cashu.token import encode_token_v3, parse_token

    gate, wallet, *_ = make_gate()
    v4 = make_token((8,))
    v3 = encode_token_v3(parse_token(v4))
    assert isinstance(await gate.check(req(**{"x-cashu": v4})), Allow)
    assert isinstance(await gate.check(req(**{"x-cashu": v3})), Allow)
    assert isinstance(await gate.check(req(**{"x-cashu": v4})), Answer)  # 8 sat = 2 requests
    assert wallet.calls == 1


async def test_per_second_grant_expires() -> None:
    gate, _, _, clock = make_gate()
    token = make_token((8, 2))  # 10 sat at 5 sat per 60 s: 120 s
    decision = await gate.check(req("/live/a", **{"x-cashu": token}))
    assert isinstance(decision, Allow)
    assert dict(decision.response_headers)["x-paygress-expires"] == str(int(clock.now + 120))
    clock.now += 119
    assert isinstance(await gate.check(req("/live/a", **{"x-cashu": token})), Allow)
    clock.now += 2
    decision = await gate.check(req("/live/a", **{"x-cashu": token}))
    assert isinstance(decision, Answer) and body(decision)["reason"] == "expired"


async def test_token_paid_for_one_route_does_not_open_another() -> None:
    gate, *_ = make_gate()
    token = make_token((8, 2))
    assert isinstance(await gate.check(req("/api/a", **{"x-cashu": token})), Allow)
    decision = await gate.check(req("/live/a", **{"x-cashu": token}))
    assert isinstance(decision, Answer) and body(decision)["reason"] == "wrong_route"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("cashuBnotbase64!!", "malformed"),
        ("garbage", "malformed"),
        (make_token((2,)), "insufficient"),
        (make_token((8,), mint="https://evil.example"), "mint_not_accepted"),
        (make_token((8,), unit="usd"), "wrong_unit"),
        (make_token((1,) * 9), "too_many_proofs"),
        ("cashuB" + "A" * 5000, "too_large"),
    ],
)
async def test_bad_tokens_get_400_with_reason_and_fresh_request(token: str, reason: str) -> None:
    gate, wallet, *_ = make_gate()
    decision = await gate.check(req(**{"x-cashu": token}))
    assert isinstance(decision, Answer) and decision.status == 400
    assert body(decision)["reason"] == reason
    assert dict(decision.headers)["x-cashu"].startswith("creqA")
    assert wallet.calls == 0


async def test_bearer_that_is_not_cashu_is_no_payment() -> None:
    gate, *_ = make_gate()
    decision = await gate.check(req(authorization="Bearer eyJhbGciOi"))
    assert isinstance(decision, Answer) and decision.status == 402


async def test_the_402_asks_for_the_price_plus_the_mint_fee_of_paying_it() -> None:
    gate, *_ = make_gate(fee=1, fee_ppk=100)
    decision = await gate.check(req())
    assert isinstance(decision, Answer)
    offer = body(decision)["payment"]
    assert (offer["amount"], offer["price"], offer["mint_fee"]) == (5, 4, 1)
    assert decode_payment_request(dict(decision.headers)["x-cashu"]).amount == 5
    # Paying exactly that, in the fewest proofs, buys exactly what the price buys.
    decision = await gate.check(req(**{"x-cashu": make_token((4, 1))}))
    assert isinstance(decision, Allow)
    assert dict(decision.upstream_headers)["x-paygress-paid"] == "4"
    assert dict(decision.upstream_headers)["x-paygress-remaining"] == "0"


async def test_the_fee_comes_out_of_what_the_token_buys() -> None:
    gate, wallet, *_ = make_gate(fee=1, fee_ppk=100)
    decision = await gate.check(req(**{"x-cashu": make_token((8, 1))}))  # 9 - 1 = 8: 2 requests
    assert isinstance(decision, Allow)
    assert dict(decision.upstream_headers)["x-paygress-remaining"] == "1"
    calls = wallet.calls
    decision = await gate.check(req(**{"x-cashu": make_token((4,))}))  # 4 - 1 = 3 < 4
    assert isinstance(decision, Answer) and body(decision)["reason"] == "insufficient_after_fees"
    assert "Send 5 sat" in body(decision)["message"]
    assert wallet.calls == calls, "refused before any swap"


async def test_mint_rejection_and_outage() -> None:
    gate, wallet, *_ = make_gate()
    wallet.error = PaymentRejected("already_spent", "spent")
    decision = await gate.check(req(**{"x-cashu": make_token((8,))}))
    assert isinstance(decision, Answer) and decision.status == 400
    assert body(decision)["reason"] == "already_spent"
    wallet.error = TryAgainLater("mint_unavailable", "down")
    decision = await gate.check(req(**{"x-cashu": make_token((8,))}))
    assert isinstance(decision, Answer) and decision.status == 503
    assert dict(decision.headers)["retry-after"] == "5"


async def test_concurrent_requests_with_one_token_redeem_once() -> None:
    gate, wallet, *_ = make_gate()
    wallet.delay = 0.05
    token = make_token((64, 16))  # 80 sat: 20 requests
    decisions = await asyncio.gather(*(gate.check(req(**{"x-cashu": token})) for _ in range(25)))
    allowed = [d for d in decisions if isinstance(d, Allow)]
    assert wallet.calls == 1
    assert len(allowed) == 20
    assert {body(d)["reason"] for d in decisions if isinstance(d, Answer)} == {"exhausted"}


async def test_drain_at_shutdown_is_bounded() -> None:
    gate, wallet, _, _ = make_gate()
    wallet.delay = 60  # a mint that never answers
    task = asyncio.create_task(gate.check(req(**{"x-cashu": make_token((8,))})))
    await asyncio.sleep(0.01)
    began = time.monotonic()
    await gate.drain(within=0.1)
    assert time.monotonic() - began < 1
    for pending in (task, *gate._inflight.values()):  # what the process exit would end
        pending.cancel()


async def test_cancelled_request_does_not_cancel_redemption() -> None:
    gate, wallet, store, _ = make_gate()
    wallet.delay = 0.05
    token = make_token((8,))
    task = asyncio.create_task(gate.check(req(**{"x-cashu": token})))
    await asyncio.sleep(0.01)
    task.cancel()
    await gate.drain(within=5)
    assert len(store.grants) == 1
    assert isinstance(await gate.check(req(**{"x-cashu": token})), Allow)
    assert wallet.calls == 1


async def test_usage_survives_restart_through_the_store() -> None:
    gate, wallet, store, clock = make_gate()
    token = make_token((8,))
    assert isinstance(await gate.check(req(**{"x-cashu": token})), Allow)
    await gate.flush()
    restarted = Gate(gate.pricing, gate.settings, wallet, store, clock=clock)
    await restarted.start()
    assert isinstance(await restarted.check(req(**{"x-cashu": token})), Allow)
    await restarted.flush()
    again = Gate(gate.pricing, gate.settings, wallet, store, clock=clock)
    await again.start()
    decision = await again.check(req(**{"x-cashu": token}))
    assert isinstance(decision, Answer) and body(decision)["reason"] == "exhausted"
    assert wallet.calls == 1


async def test_flush_evicts_used_up_grants_from_memory() -> None:
    gate, *_ = make_gate()
    token = make_token((4,))
    await gate.check(req(**{"x-cashu": token}))
    assert len(gate.book) == 1
    await gate.flush()
    assert len(gate.book) == 0
    decision = await gate.check(req(**{"x-cashu": token}))
    assert isinstance(decision, Answer) and body(decision)["reason"] == "exhausted"


async def test_context_extension_misconfiguration_is_a_denial_not_a_crash() -> None:
    gate, *_ = make_gate()
    request = HttpRequest("GET", "h", "/", {}, {"paygress.price": "lots"})
    decision = await gate.check(request)
    assert isinstance(decision, Answer) and decision.status == 500


async def test_dry_run_allows_everything_but_records_the_real_decision() -> None:
    from paygress.metrics import PrometheusMetrics

    metrics = PrometheusMetrics()
    store, wallet = FakeStore(), FakeWallet()
    gate = Gate(
        Pricing((API,)),
        GateSettings(unit="sat", mints=(MINT,), dry_run=True),
        wallet,
        store,
        metrics=metrics,
    )
    decision = await gate.check(req(**{"x-cashu": "garbage"}))
    assert isinstance(decision, Allow) and decision.reason == "dry_run"
    assert dict(decision.upstream_headers)["x-paygress-dry-run"] == "400 malformed"
    assert metrics.checks.decisions.get(("deny", "malformed"), 0) == 1
    forged = req(**{"x-cashu": make_token((2,)), "x-paygress-paid": "1000"})
    decision = await gate.check(forged)
    assert isinstance(decision, Allow)
    assert set(decision.remove_headers) == {"x-cashu", "x-paygress-paid"}, "dry run strips"


async def test_blank_x_cashu_does_not_hide_an_authorization_token() -> None:
    gate, *_ = make_gate()
    decision = await gate.check(req(**{"x-cashu": "  ", "authorization": f"Cashu {make_token()}"}))
    assert isinstance(decision, Allow)


async def test_unexpected_errors_deny_with_503_instead_of_raising() -> None:
    gate, wallet, *_ = make_gate()
    wallet.error = RuntimeError("bug")  # type: ignore[assignment]
    decision = await gate.check(req(**{"x-cashu": make_token((8,))}))
    assert isinstance(decision, Answer) and decision.status == 503
    assert body(decision)["reason"] == "internal_error"


async def test_time_grant_answer_is_built_once_and_follows_top_ups() -> None:
    gate, _, _, clock = make_gate()
    token = make_token((10,))
    first = await gate.check(req("/live/a", **{"x-cashu": token}))
    again = await gate.check(req("/live/b", **{"x-cashu": token}))
    assert isinstance(first, Allow) and again is first, "the same answer, not rebuilt"
    expires = dict(first.upstream_headers)["x-paygress-expires"]
    assert expires == str(int(clock.now) + 120)
    forged = await gate.check(req("/live/c", **{"x-cashu": token, "x-paygress-pod": "p"}))
    assert isinstance(forged, Allow) and forged.remove_headers == ("x-cashu", "x-paygress-pod")
    grant = next(iter(gate.book._by_id.values()))
    grant.expires_at += 60  # a top-up moves the end
    later = await gate.check(req("/live/d", **{"x-cashu": token}))
    assert isinstance(later, Allow) and later is not first
    assert dict(later.response_headers)["x-paygress-expires"] == str(int(clock.now) + 180)


# -- hostile input costs nothing at the mint twice ---------------------------------------------


async def test_a_token_refused_for_good_is_refused_from_memory_on_replay() -> None:
    gate, wallet, *_ = make_gate()
    wallet.error = PaymentRejected(
        "mint_rejected", "The mint refused the token: bad proofs", by_mint=True
    )
    token = make_token((8,))
    first = await gate.check(req(**{"x-cashu": token}))
    assert isinstance(first, Answer) and body(first)["reason"] == "mint_rejected"
    for _ in range(10):
        again = await gate.check(req(**{"x-cashu": token}))
        assert isinstance(again, Answer) and body(again)["reason"] == "mint_rejected"
    assert (wallet.calls, wallet.verifies) == (1, 1)
    # The same proofs in another encoding are refused from memory too.
    from paygress.cashu.token import encode_token_v3, parse_token

    v3 = encode_token_v3(parse_token(token))
    again = await gate.check(req(**{"x-cashu": v3}))
    assert isinstance(again, Answer) and body(again)["reason"] == "mint_rejected"
    assert wallet.verifies == 1


async def test_proofs_the_mint_reported_spent_are_refused_from_memory_in_any_token() -> None:
    from paygress.cashu.models import Token
    from paygress.cashu.token import encode_token_v4, parse_token

    gate, wallet, *_ = make_gate()
    spent = parse_token(make_token((8,))).proofs[0]
    wallet.error = PaymentRejected("already_spent", "spent", by_mint=True, spent_ys=(spent.y(),))
    first = encode_token_v4(Token(MINT, "sat", (spent,), None, 4))
    assert isinstance(await gate.check(req(**{"x-cashu": first})), Answer)
    fresh = parse_token(make_token((4,))).proofs[0]
    mixed = encode_token_v4(Token(MINT, "sat", (fresh, spent), None, 4))
    decision = await gate.check(req(**{"x-cashu": mixed}))
    assert isinstance(decision, Answer) and body(decision)["reason"] == "already_spent"
    assert wallet.verifies == 1, "the second token never reached the wallet"


async def test_what_our_own_checks_refuse_is_the_token_not_its_proofs() -> None:
    from paygress.cashu.token import encode_token_v3, parse_token

    gate, wallet, *_ = make_gate()
    wallet.verify_error = PaymentRejected("invalid_dleq", "forged")
    token = make_token((8,))
    assert isinstance(await gate.check(req(**{"x-cashu": token})), Answer)
    assert isinstance(await gate.check(req(**{"x-cashu": token})), Answer)
    assert wallet.verifies == 1, "the same text is refused from memory"
    wallet.verify_error = None
    other = encode_token_v3(parse_token(token))  # the same proofs, written otherwise
    assert isinstance(await gate.check(req(**{"x-cashu": other})), Allow)


async def test_refusals_that_may_change_are_not_remembered() -> None:
    gate, wallet, *_ = make_gate()
    wallet.error = TryAgainLater("mint_unavailable", "down")
    token = make_token((8,))
    assert isinstance(await gate.check(req(**{"x-cashu": token})), Answer)
    wallet.error = None
    assert isinstance(await gate.check(req(**{"x-cashu": token})), Allow)


async def test_unproven_swaps_are_bounded_per_client_and_proven_ones_are_not() -> None:
    from paygress.core.budget import BudgetSettings, SwapBudget

    clock = Clock()
    store, wallet = FakeStore(), FakeWallet()
    wallet.store = store
    budget = SwapBudget(BudgetSettings(60, 10, 2, 2), clock)
    gate = Gate(
        Pricing((API,)), GateSettings("sat", (MINT,)), wallet, store, clock=clock, budget=budget
    )

    def from_(client: str, *, dleq: bool = False) -> HttpRequest:
        token = make_token((8,), dleq=dleq)
        return HttpRequest("GET", "h", "/api/x", {"x-cashu": token}, client=client)

    statuses = [(await gate.check(from_("198.51.100.9"))) for _ in range(4)]
    assert [isinstance(d, Allow) for d in statuses] == [True, True, False, False]
    limited = statuses[-1]
    assert isinstance(limited, Answer) and limited.status == 429
    assert body(limited)["reason"] == "swap_budget"
    assert int(dict(limited.headers)["retry-after"]) >= 1
    assert wallet.calls == 2, "no swap for the refused ones"
    assert isinstance(await gate.check(from_("198.51.100.10")), Allow), "another client"
    wallet.proven = True  # tokens with valid DLEQ proofs cost no budget
    for _ in range(3):
        assert isinstance(await gate.check(from_("198.51.100.9", dleq=True)), Allow)
    wallet.proven = False  # ...and made-up ones are refused by the wallet, not the budget
    wallet.verify_error = PaymentRejected("invalid_dleq", "forged")
    refused = await gate.check(from_("198.51.100.9", dleq=True))
    assert isinstance(refused, Answer) and body(refused)["reason"] == "invalid_dleq"
    wallet.verify_error = None
    clock.now += 30  # one more per 30 s at 2 per minute
    wallet.proven = False
    assert isinstance(await gate.check(from_("198.51.100.9")), Allow)


async def test_a_slow_redemption_answers_payment_pending_and_settles_later() -> None:
    store, wallet = FakeStore(), FakeWallet()
    wallet.store = store
    wallet.delay = 0.3
    settings = GateSettings("sat", (MINT,), payment_timeout_seconds=0.05)
    gate = Gate(Pricing((API,)), settings, wallet, store)
    token = make_token((8,))
    pending = await gate.check(req(**{"x-cashu": token}))
    assert isinstance(pending, Answer) and pending.status == 503
    assert body(pending)["reason"] == "payment_pending"
    assert dict(pending.headers)["retry-after"] == "5"
    await gate.drain(within=5)
    assert isinstance(await gate.check(req(**{"x-cashu": token})), Allow)
    assert wallet.calls == 1


async def test_a_token_redeemed_meanwhile_by_another_path_is_served_not_refused() -> None:
    """The background task (or another replica) settles the token's swap while this request
    redeems it: the mint then says spent, but the store has the grant."""
    gate, wallet, store, _ = make_gate()
    token = make_token((8,))
    other, *_ = make_gate()
    await other.check(req(**{"x-cashu": token}))  # the other path pays...
    [grant] = other.store.grants.values()  # type: ignore[attr-defined]
    wallet.store = None
    store.grants[grant.id] = grant  # ...into the shared store, after our lookup
    wallet.error = PaymentRejected("already_spent", "spent")
    real_get = store.get_grant
    calls = 0

    async def racing_get(grant_id: str) -> Grant | None:
        nonlocal calls
        calls += 1
        return None if calls == 1 else await real_get(grant_id)

    store.get_grant = racing_get  # type: ignore[method-assign]
    decision = await gate.check(req(**{"x-cashu": token}))
    assert isinstance(decision, Allow), decision
    assert gate.refusals.get(grant.id) is None


# -- a shared store that cannot be reached ---------------------------------------------------


async def test_a_store_outage_fails_closed_by_default() -> None:
    gate, wallet, store, _ = make_gate()
    token = make_token((8, 8))  # 4 requests
    assert isinstance(await gate.check(req(**{"x-cashu": token})), Allow)
    store.available = False
    decision = await gate.check(req(**{"x-cashu": token}))
    assert isinstance(decision, Answer) and decision.status == 503
    assert body(decision)["reason"] == "store_unavailable"
    assert dict(decision.headers)["retry-after"] == "5"
    fresh = await gate.check(req(**{"x-cashu": make_token((8,))}))
    assert isinstance(fresh, Answer) and body(fresh)["reason"] == "store_unavailable"
    assert wallet.calls == 1, "no swap that could not be recorded"
    store.available = True
    assert isinstance(await gate.check(req(**{"x-cashu": token})), Allow)


async def test_a_store_outage_can_serve_what_this_process_holds() -> None:
    store, wallet, clock = FakeStore(), FakeWallet(), Clock()
    wallet.store = store
    gate = Gate(
        Pricing((API, TIMED)),
        GateSettings(unit="sat", mints=(MINT,), on_store_outage="cached"),
        wallet,
        store,
        clock=clock,
    )
    per_request, timed = make_token((8, 8)), make_token((10,))
    assert isinstance(await gate.check(req(**{"x-cashu": per_request})), Allow)
    assert isinstance(await gate.check(req(**{"x-cashu": per_request})), Allow)  # 1, then 2
    assert isinstance(await gate.check(req("/live/x", **{"x-cashu": timed})), Allow)
    store.available = False
    assert isinstance(await gate.check(req("/live/x", **{"x-cashu": timed})), Allow)
    assert isinstance(await gate.check(req(**{"x-cashu": per_request})), Allow)
    decision = await gate.check(req(**{"x-cashu": per_request}))
    assert isinstance(decision, Answer) and body(decision)["reason"] == "store_unavailable"
    assert sum(store.held.values()) == 3, "never more than it leased before the outage"
