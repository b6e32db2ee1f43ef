import pytest

from paygress.core.hosts import BadHost
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


# -- hosts -------------------------------------------------------------------------------------

HOSTED = RouteRule(name="hosted", price=2, hosts=("PAID.example.com.",), path_prefix="/h/")
ANYHOST = RouteRule(name="anyhost", price=1, path_prefix="/h/")


def test_a_rule_keeps_its_hosts_in_the_canonical_spelling() -> None:
    assert HOSTED.hosts == ("paid.example.com",)
    with pytest.raises(BadHost):
        RouteRule(name="x", price=1, hosts=("a:80:80",))


@pytest.mark.parametrize(
    "host",
    [
        "paid.example.com",
        "PAID.Example.Com",
        "paid.example.com.",
        "paid.example.com:8443",
        "paid.example.com.:80",
        "paid.example.com:",
    ],
)
def test_every_spelling_of_a_priced_host_is_priced(host: str) -> None:
    assert Pricing((HOSTED,)).match("GET", host, "/h/x") is HOSTED


@pytest.mark.parametrize("host", ["paid.example.com:80:80", "paid.example.com%2e", "a,b", "::1"])
def test_a_malformed_host_is_refused_where_a_host_bound_rule_fits(host: str) -> None:
    pricing = Pricing((HOSTED,))
    with pytest.raises(BadHost) as info:
        pricing.match("GET", host, "/h/x")
    assert info.value.reason == "bad_host"
    # Elsewhere the host decides nothing: not read, not refused.
    assert pricing.match("GET", host, "/public") is None


def test_no_host_is_refused_by_a_host_bound_rule_and_matches_a_host_less_one() -> None:
    with pytest.raises(BadHost) as info:
        Pricing((HOSTED, ANYHOST)).match("GET", "", "/h/x")
    assert info.value.reason == "missing_host"
    # A host-less rule matches a request without a host as before.
    assert Pricing((ANYHOST,)).match("GET", "", "/h/x") is ANYHOST
    assert Pricing((HOSTED,)).match("GET", "", "/public") is None


def test_another_host_falls_through_to_later_rules() -> None:
    assert Pricing((HOSTED, ANYHOST)).match("GET", "other.example.com", "/h/x") is ANYHOST
    assert Pricing((HOSTED,)).match("GET", "other.example.com", "/h/x") is None


def test_ipv6_hosts_match_in_any_spelling() -> None:
    rule = RouteRule(name="v6", price=1, hosts=("[2001:db8::1]",))
    for host in ("[2001:DB8::1]", "[2001:db8:0:0::1]:443"):
        assert Pricing((rule,)).match("GET", host, "/") is rule


def test_the_canonical_hosts_seen_are_remembered_within_bounds() -> None:
    pricing = Pricing((HOSTED,))
    for i in range(3000):
        assert pricing.match("GET", f"h{i}.example.com", "/h/x") is None
    assert len(pricing._hosts) <= 1024
    assert pricing.match("GET", "PAID.example.com.", "/h/x") is HOSTED


# -- path parameters, letter case, methods -----------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api;/x",
        "/api;jsessionid=0123/x",
        "/public/..;/api/x",
        "/public/..;x=1/api/x",
        "/;/api/x",
        "/api%3B/x",
        "/api/x;.css",
        "/public/.;/../api/x",
    ],
)
def test_path_parameters_do_not_dodge_a_price(path: str) -> None:
    rule = PRICING.match("GET", "h", path)
    assert rule is not None and rule.name == "api", path


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/api;v=1/x", "/api/x"),
        ("/a/b/..;", "/a/"),
        ("/a/b/.;x", "/a/b/"),
        ("/a;b", "/a"),
        ("/;", "/"),
    ],
)
def test_normalize_path_removes_path_parameters(raw: str, normal: str) -> None:
    from paygress.core.pricing import normalize_path

    assert normalize_path(raw) == normal


CASELESS = RouteRule(name="caseless", price=1, path_prefix="/Shop/", case_insensitive=True)
CASELESS_RE = RouteRule(
    name="caseless-re", price=1, path_regex=r"^/Reports/\d+$", case_insensitive=True
)


@pytest.mark.parametrize("path", ["/shop/x", "/SHOP/x", "/Shop/X", "/%53hop/x", "//SHOP/./x"])
def test_a_case_insensitive_rule_prices_every_letter_case(path: str) -> None:
    assert Pricing((CASELESS,)).match("GET", "h", path) is CASELESS


def test_a_case_insensitive_regex_ignores_case() -> None:
    pricing = Pricing((CASELESS_RE,))
    assert pricing.match("GET", "h", "/reports/7") is CASELESS_RE
    assert pricing.match("GET", "h", "/REPORTS/7") is CASELESS_RE
    assert pricing.match("GET", "h", "/reports/x") is None


def test_rules_are_case_sensitive_unless_asked() -> None:
    assert PRICING.match("GET", "h", "/API/x") is None


def test_a_rule_that_lists_get_prices_head_too() -> None:
    assert API.methods == ("GET", "POST", "HEAD")
    post_only = RouteRule(name="post", price=1, methods=("post",))
    assert post_only.methods == ("POST",)
    pricing = Pricing((post_only, API))
    assert pricing.match("HEAD", "h", "/api/x") is API
    assert pricing.match("get", "h", "/api/x") is API, "method case does not dodge a price"
    assert Pricing((post_only,)).match("HEAD", "h", "/api/x") is None
