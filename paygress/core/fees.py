"""What a payment must be worth so that the price survives the mint's input fee (NUT-02).

A mint charges `input_fee_ppk` parts per thousand per proof spent, rounded up per swap, and
the operator's wallet pays it when it swaps a client's token. So a 402 asks for the price
plus the fee of the smallest token that covers both, sent in the fewest proofs (one per power
of two): paying exactly that buys exactly the price's worth, for every price.
"""

from __future__ import annotations


def minimal_proofs_fee(amount: int, fee_ppk: int) -> int:
    """The input fee of `amount` sent in the fewest proofs."""
    return (amount.bit_count() * fee_ppk + 999) // 1000


def asked_amount(price: int, fee_ppk: int) -> int:
    """The least amount that, sent in the fewest proofs, is worth `price` after the fee."""
    amount = price
    while amount - minimal_proofs_fee(amount, fee_ppk) < price:
        amount += 1
    return amount
