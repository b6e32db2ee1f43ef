from paygress.core.budget import BudgetSettings, SwapBudget, TokenBucket, client_key


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_its_rate_up_to_its_size() -> None:
    bucket = TokenBucket(rate=1.0, capacity=2, now=0.0)
    bucket.take(0.0)
    bucket.take(0.0)
    assert bucket.wait(0.0) == 1.0
    assert bucket.wait(0.5) == 0.5
    assert bucket.wait(100.0) == 0.0 and bucket.level == 2


def test_budget_is_per_client_and_per_mint() -> None:
    clock = Clock()
    budget = SwapBudget(BudgetSettings(6, 3, 60, 2), clock)
    assert [budget.admit("m", "10.0.0.1") for _ in range(3)] == [0.0, 0.0, 1.0]
    assert budget.admit("m", "10.0.0.2") == 0.0
    assert budget.admit("m", "10.0.0.3") > 0, "the mint's bucket (3) is empty too"
    assert budget.admit("other", "10.0.0.3") == 0.0
    clock.now = 10.0  # 6 per minute: one per 10 s for the mint
    assert budget.admit("m", "10.0.0.3") == 0.0


def test_client_buckets_are_bounded() -> None:
    budget = SwapBudget(BudgetSettings(1e9, 1000, 1, 1, max_clients=100), Clock())
    for i in range(10_000):
        budget.admit("m", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(budget) == 100


def test_ipv6_clients_are_counted_by_their_64() -> None:
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert client_key("2001:db8:0:1::1") != client_key("2001:db8::1")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key("") == "" and client_key("not-an-ip") == "not-an-ip"
