import re

import pytest

from paygress.core.tiers import Tier, pod_name

SMALL = Tier(
    id="small",
    cpu="500m",
    memory="512Mi",
    images=("nginx:1", "jupyter:2"),
    port=8080,
    rate_msat_per_second=1500,  # 1.5 sat/s
    min_seconds=60,
    max_seconds=3600,
)


def test_min_payment_rounds_up_to_whole_sats() -> None:
    assert SMALL.min_payment == 90  # 60 s x 1.5 sat
    odd = Tier(
        "t", "1", "1Gi", ("i",), 80, rate_msat_per_second=333, min_seconds=10, max_seconds=20
    )
    assert odd.min_payment == 4  # 3.33 sat rounds up


@pytest.mark.parametrize(
    ("paid", "lifetime"),
    [(89, None), (90, 60), (91, 60), (150, 100), (5400, 3600), (10_000, 3600)],
)
def test_lifetime_is_paid_msat_over_rate_rounded_down_and_clamped(
    paid: int, lifetime: int | None
) -> None:
    assert SMALL.lifetime_for(paid) == lifetime


def test_seconds_for_has_no_clamp() -> None:
    assert SMALL.seconds_for(3) == 2  # 3000 msat / 1500
    assert SMALL.seconds_for(1) == 0


def test_image_choice_is_from_the_allow_list_only() -> None:
    assert SMALL.image(None) == "nginx:1"
    assert SMALL.image("jupyter:2") == "jupyter:2"
    assert SMALL.image("evil/miner:latest") is None


def test_pod_names_are_dns_1123_and_stable() -> None:
    name = pod_name("Small_GPU.tier", "ab" * 32)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63
    assert name == pod_name("Small_GPU.tier", "ab" * 32)
    assert name != pod_name("Small_GPU.tier", "cd" * 32)


def test_offer_lists_what_a_client_needs() -> None:
    offer = SMALL.offer("sat")
    assert offer["min_payment"] == 90 and offer["images"] == ["nginx:1", "jupyter:2"]
