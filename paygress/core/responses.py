"""Builders for the denials the client sees: 402 with a NUT-18 request, 400 with a reason, 503."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from paygress.cashu.nut18 import Nut10Option, PaymentRequest, encode_payment_request
from paygress.core.model import Answer, Headers
from paygress.core.pricing import Mode, RouteRule

JSON = ("content-type", "application/json")


@lru_cache(maxsize=1024)
def payment_request(
    rule: RouteRule, unit: str, mints: tuple[str, ...], amount: int, lock: str | None = None
) -> str:
    """The NUT-18 `creqA…` request for one payment of `amount` (the route's price plus the
    mint's fee of paying it), asking to lock the proofs to `lock` (NUT-11 P2PK) when given
    (cached per rule, amount and lock)."""
    return encode_payment_request(
        PaymentRequest(
            amount=amount,
            unit=unit,
            mints=mints,
            description=rule.description or f"{rule.name}: {rule.describe(unit)}",
            id=None,
            single_use=None,
            nut10=Nut10Option("P2PK", lock) if lock else None,
        )
    )


def offer(
    rule: RouteRule, unit: str, mints: tuple[str, ...], amount: int, lock: str | None = None
) -> dict[str, Any]:
    """The facts of a payment in plain JSON: `amount` to send, of which `price` buys."""
    facts: dict[str, Any] = {
        "route": rule.name,
        "amount": amount,
        "price": rule.price,
        "mint_fee": amount - rule.price,
        "unit": unit,
        "mints": list(mints),
        "mode": rule.mode.value,
        "buys": rule.describe(unit),
        "request": payment_request(rule, unit, mints, amount, lock),
    }
    if lock:
        facts["lock"] = {"kind": "P2PK", "pubkey": lock}
    return facts


def how_to_pay(rule: RouteRule, unit: str, amount: int, lock: str | None = None) -> str:
    what = "requests" if rule.mode is Mode.PER_REQUEST else "seconds of access"
    fee = (
        f" ({rule.price} {unit} plus the mint's fee of {amount - rule.price} {unit} for "
        "spending it, when sent in the fewest proofs)"
        if amount > rule.price
        else ""
    )
    return (
        f"Send a Cashu token worth {amount} {unit}{fee} from one of the listed mints "
        "in the X-Cashu request header (or 'Authorization: Cashu <token>'). "
        f"Paying more buys more {what}: {rule.describe(unit)}; "
        "send the same token again on later requests until it is used up."
        + (
            f" A token locked to {lock} (NUT-11 P2PK) and carrying DLEQ proofs (NUT-12) is "
            "accepted at once, without waiting for the mint."
            if lock
            else ""
        )
    )


def deny(
    status: int,
    error: str,
    reason: str,
    message: str,
    *,
    rule: RouteRule | None = None,
    unit: str = "sat",
    mints: tuple[str, ...] = (),
    amount: int | None = None,
    lock: str | None = None,
    extra_headers: Headers = (),
) -> Answer:
    """A JSON denial; with `rule`, it carries an X-Cashu payment request for `amount` (the
    price when not given), locked to `lock` if given, and the offer."""
    body: dict[str, Any] = {"error": error, "reason": reason, "message": message}
    headers: list[tuple[str, str]] = [JSON, *extra_headers]
    if rule is not None:
        asked = rule.price if amount is None else amount
        body["payment"] = offer(rule, unit, mints, asked, lock)
        body["how_to_pay"] = how_to_pay(rule, unit, asked, lock)
        headers.append(("x-cashu", payment_request(rule, unit, mints, asked, lock)))
    return Answer(
        status=status,
        reason=reason,
        headers=tuple(headers),
        body=json.dumps(body, separators=(",", ":")).encode(),
    )
