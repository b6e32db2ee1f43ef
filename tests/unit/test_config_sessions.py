"""The `sessions` block of the config."""

from __future__ import annotations

import pytest

from paygress.config import ConfigError, parse_config


def test_sessions_are_on_by_default_with_envoys_clock_skew() -> None:
    s = parse_config({}).sessions
    assert (s.enabled, s.issuer, s.header, s.cookie) == (True, "paygress", "x-paygress-session", "")
    assert (s.key_generation, s.accept_generations, s.expiry_margin_seconds) == (0, (), 2)


def test_sessions_settings_are_read_and_checked() -> None:
    s = parse_config(
        {
            "sessions": {
                "header": "X-Session",
                "cookie": "pg",
                "key_generation": 2,
                "accept_generations": [1],
                "expiry_margin_seconds": 60,
                "pod_max_seconds": 120,
            }
        }
    ).sessions
    assert (s.header, s.cookie, s.key_generation, s.accept_generations) == (
        "x-session",
        "pg",
        2,
        (1,),
    )
    assert (s.expiry_margin_seconds, s.pod_max_seconds) == (60, 120)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("header", "x-cashu", "reads itself"),
        ("header", "x-paygress-paid", "reads itself"),
        ("header", "bad header", "must be a header name"),
        ("cookie", "a;b", "not a cookie name"),
        ("key_generation", -1, "integer >= 0"),
        ("accept_generations", "1", "list of integers"),
        ("accept_generations", [-1], r"accept_generations\[0\]"),
        ("pod_max_seconds", 5, "integer >= 10"),
        ("enabled", "maybe", "true or false"),
        ("bogus", 1, "sessions.bogus: unknown key"),
    ],
)
def test_bad_sessions_settings_name_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"sessions": {key: value}})
