import pytest

from paygress.core.fees import asked_amount, minimal_proofs_fee


@pytest.mark.parametrize("fee_ppk", [0, 1, 100, 250, 999, 1000, 2500])
@pytest.mark.parametrize("price", range(1, 130))
def test_paying_the_asked_amount_in_the_fewest_proofs_covers_the_price(
    price: int, fee_ppk: int
) -> None:
    asked = asked_amount(price, fee_ppk)
    assert asked - minimal_proofs_fee(asked, fee_ppk) >= price
    # ...and nothing smaller does: the 402 never asks for more than it must.
    assert all(a - minimal_proofs_fee(a, fee_ppk) < price for a in range(price, asked))


def test_examples() -> None:
    assert asked_amount(1, 0) == 1
    assert [asked_amount(p, 100) for p in (1, 2, 3, 64)] == [2, 3, 4, 65]
    assert minimal_proofs_fee(7, 100) == 1  # 3 proofs, 300 ppk, rounded up
    assert minimal_proofs_fee(7, 1000) == 3
