import pytest

from paygress.core.pricing import Mode, Pricing, RouteRule, normalize_mint_url

API = RouteRule(name="api", price=10, path_prefix="/api/", methods=("GET", "POST"))
VIDEO = RouteRule(
    name="video", price=5, mode=Mode.PER_SECOND, grants=60, hosts=("video.example.com",)
)
REGEX = RouteRule(name="report", price=3, path_regex=r"^/reports/\d+$")
PRICING = Pricing((API, VIDEO, REGEX))


@pytest.mark.parametrize(
    ("method", "host", "path", "expected"),
    [
        ("GET", "any", "/api/x", "api"),
        ("POST", "any", "/api/x?q=1", "api"),
        ("DELETE", "any", "/api/x", None),
        ("GET", "any", "/apix", None),
        ("GET", "video.example.com", "/watch", "video"),
        ("GET", "VIDEO.example.com:8443", "/watch", "video"),
        ("GET", "other.example.com", "/watch", None),
        ("GET", "x", "/reports/42", "report"),
        ("GET", "x", "/reports/42?download=1", "report"),
        ("GET", "x", "/reports/abc", None),
        ("GET", "x", "/", None),
    ],
)
def test_first_matching_rule_wins(method: str, host: str, path: str, expected: str | None) -> None:
    rule = PRICING.match(method, host, path)
    assert (rule.name if rule else None) == expected


def test_first_match_wins_over_later_rules() -> None:
    broad = RouteRule(name="all", price=1, path_prefix="/")
    assert Pricing((API, broad)).match("GET", "h", "/api/a").name == "api"  # type: ignore[union-attr]
    assert Pricing((broad, API)).match("GET", "h", "/api/a").name == "all"  # type: ignore[union-attr]


def test_buys_rounds_down_and_describes() -> None:
    assert API.buys(25) == 2
    assert VIDEO.buys(7) == 84  # 7 sat at 5 sat per 60 s
    assert API.describe("sat") == "1 request per 10 sat"
    assert VIDEO.describe("sat") == "60 seconds per 5 sat"


def test_context_extensions_override_price() -> None:
    rule = PRICING.match("GET", "h", "/free", {"paygress.price": "7", "paygress.grants": "3"})
    assert rule is not None
    assert (rule.price, rule.grants, rule.mode) == (7, 3, Mode.PER_REQUEST)
    assert PRICING.match("GET", "h", "/api/x", {"paygress.price": "0"}) is None


def test_context_extension_names_a_file_route() -> None:
    rule = PRICING.match("GET", "h", "/anything", {"paygress.route": "video"})
    assert rule is VIDEO


def test_unrelated_context_extensions_are_ignored() -> None:
    assert PRICING.match("GET", "h", "/api/x", {"virtual_host": "x"}) is API


@pytest.mark.parametrize(
    "context",
    [
        {"paygress.price": "-1"},
        {"paygress.price": "abc"},
        {"paygress.price": "5", "paygress.mode": "per_hour"},
        {"paygress.price": "5", "paygress.grants": "0"},
        {"paygress.route": "nope"},
    ],
)
def test_bad_context_extensions_raise(context: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="context extension"):
        PRICING.match("GET", "h", "/", context)


def test_normalize_mint_url() -> None:
    assert normalize_mint_url("HTTPS://Mint.Example.com/") == "https://mint.example.com"
    assert normalize_mint_url("http://127.0.0.1:3338/cashu/") == "http://127.0.0.1:3338/cashu"
    for bad in ("ftp://x", "mint.example.com", "https://u:p@x", "https://x/?a=1"):
        with pytest.raises(ValueError):
            normalize_mint_url(bad)


@pytest.mark.parametrize(
    "path",
    [
        "/api/x",
        "/%61pi/x",
        "//api/x",
        "/public/../api/x",
        "/api%2Fx",
        "/./api/x",
        "/api//x",
        "/public/%2E%2E/api/x",
        "\\api\\x",
    ],
)
def test_every_spelling_of_a_priced_path_is_priced(path: str) -> None:
    rule = PRICING.match("GET", "h", path)
    assert rule is not None and rule.name == "api", path


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/", "/"),
        ("", "/"),
        ("/a/b/", "/a/b/"),
        ("/a/./b/../c", "/a/c"),
        ("/../../etc", "/etc"),
        ("/a%20b?q=%2F", "/a b"),
        ("/a/b/..", "/a/"),
    ],
)
def test_normalize_path(raw: str, normal: str) -> None:
    from paygress.core.pricing import normalize_path

    assert normalize_path(raw) == normal
