from paygress.core.refusals import Refusals


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_refusals_expire_and_are_bounded() -> None:
    clock = Clock()
    refusals: Refusals[str] = Refusals(max_entries=3, ttl_seconds=10, clock=clock)
    for key in "abcd":
        refusals.add(key, f"no {key}")
    assert len(refusals) == 3 and refusals.get("a") is None  # the oldest went first
    assert refusals.get("b") == "no b"
    refusals.add("e", "no e")  # "b" was just used: "c" goes
    assert refusals.get("c") is None and refusals.get("b") == "no b"
    assert refusals.any_of(["x", "d", "e"]) == "no d"
    clock.now = 10.0
    assert refusals.get("b") is None and len(refusals) == 2
