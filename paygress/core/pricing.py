"""Route rules: which requests cost what. First match wins; unmatched requests are free."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from paygress.core.hosts import BadHost, normalize_host
from paygress.core.tiers import Tier

if TYPE_CHECKING:
    from paygress.core.free_clients import FreeClients


class Mode(enum.StrEnum):
    """What a payment buys: a number of requests, or time."""

    PER_REQUEST = "per_request"
    PER_SECOND = "per_second"
    POD = "pod"


@dataclass(frozen=True, slots=True)
class RouteRule:
    """A priced route. `price` (in the unit) buys `grants` requests or seconds.

    Matching: `hosts` in their canonical spelling (see `hosts.normalize_host`); `methods`
    uppercase, and a rule listing GET also prices HEAD (every server answers HEAD with GET's
    handler); with `case_insensitive`, `path_prefix` and `path_regex` ignore letter case, for
    upstreams that route that way (Express, ASP.NET, IIS)."""

    name: str
    price: int
    mode: Mode = Mode.PER_REQUEST
    grants: int = 1
    hosts: tuple[str, ...] = ()
    path_prefix: str | None = None
    path_regex: str | None = None
    methods: tuple[str, ...] = ()
    description: str = ""
    tier: Tier | None = None
    case_insensitive: bool = False
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        hosts = tuple(dict.fromkeys(normalize_host(h) for h in self.hosts))
        if "" in hosts:
            raise BadHost(f"route {self.name}: an empty host matches nothing")
        object.__setattr__(self, "hosts", hosts)
        methods = tuple(dict.fromkeys(m.upper() for m in self.methods))
        if "GET" in methods and "HEAD" not in methods:
            methods += ("HEAD",)
        object.__setattr__(self, "methods", methods)
        if self.case_insensitive and self.path_prefix is not None:
            object.__setattr__(self, "path_prefix", self.path_prefix.lower())
        if self.path_regex is not None:
            flags = re.IGNORECASE if self.case_insensitive else 0
            object.__setattr__(self, "_regex", re.compile(self.path_regex, flags))

    def fits(self, method: str, path: str) -> bool:
        """True when the method (uppercase) and the normalized path (lowercased for a
        case-insensitive rule) fit this rule; the host is the caller's part."""
        if self.methods and method not in self.methods:
            return False
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return False
        return self._regex is None or self._regex.match(path) is not None

    def buys(self, amount: int) -> int:
        """Requests or seconds that `amount` pays for (rounded down)."""
        return amount * self.grants // self.price

    def describe(self, unit: str) -> str:
        """Plain words for what a payment buys, e.g. '1 request per 10 sat'."""
        if self.tier is not None:
            t = self.tier
            return (
                f"a {t.id} pod ({t.cpu} CPU, {t.memory}) at {t.rate_msat_per_second} msat per "
                f"second, {t.min_seconds} to {t.max_seconds} s; at least {t.min_payment} {unit}"
            )
        what = "request" if self.mode is Mode.PER_REQUEST else "second"
        plural = "" if self.grants == 1 else "s"
        return f"{self.grants} {what}{plural} per {self.price} {unit}"


class Pricing:
    """Ordered route rules plus the per-route overrides Envoy may send as context extensions."""

    OVERRIDE_PREFIX = "paygress."

    def __init__(
        self, rules: tuple[RouteRule, ...], free_clients: FreeClients | None = None
    ) -> None:
        self.rules = rules
        self.free_clients = free_clients
        self.tiers = {r.tier.id: r.tier for r in rules if r.tier is not None}
        self._by_name = {r.name: r for r in rules}
        self._any_case_insensitive = any(r.case_insensitive for r in rules)
        self._any_methods = any(r.methods for r in rules)
        self._hosts: dict[str, str] = {}  # raw Host -> canonical, for hosts seen recently

    def match(
        self, method: str, host: str, path: str, context: Mapping[str, str] | None = None
    ) -> RouteRule | None:
        """The rule for this request, or None when it is free.

        Context extensions (`paygress.route`, `paygress.price`, `paygress.mode`,
        `paygress.grants`) override the file rules for plain-Envoy users; raises ValueError
        when they are malformed.

        The host is only read when a rule with `hosts` fits the method and path: then a
        malformed host raises BadHost (`bad_host`), and so does a request without any host
        (`missing_host`, e.g. HTTP/1.0 without Host), since it cannot be told apart from a
        request for the paid host. Rules without `hosts` match any host, or none.
        """
        if context and any(k.startswith(self.OVERRIDE_PREFIX) for k in context):
            return self._from_context(method, host, path, context)
        path = normalize_path(path)
        lower = path.lower() if self._any_case_insensitive else path
        if self._any_methods:
            method = method.upper()
        for rule in self.rules:
            if not rule.fits(method, lower if rule.case_insensitive else path):
                continue
            if not rule.hosts or self._canonical_host(host) in rule.hosts:
                return rule
        return None

    def _canonical_host(self, raw: str) -> str:
        host = self._hosts.get(raw)
        if host is None:
            host = normalize_host(raw)
            if not host:
                raise BadHost("A Host header is required here.", "missing_host")
            if len(self._hosts) >= 1024:
                self._hosts.clear()
            self._hosts[raw] = host
        return host

    def _from_context(
        self, method: str, host: str, path: str, context: Mapping[str, str]
    ) -> RouteRule | None:
        name = context.get("paygress.route")
        base = self._by_name.get(name) if name else None
        if name and base is None and "paygress.price" not in context:
            raise ValueError(f"context extension paygress.route names unknown route {name!r}")
        if "paygress.price" not in context:
            return base if base is not None else self.match(method, host, path)
        price = _positive_int(context["paygress.price"], "paygress.price", allow_zero=True)
        if price == 0:
            return None
        mode_text = context.get("paygress.mode", base.mode.value if base else "per_request")
        try:
            mode = Mode(mode_text)
        except ValueError:
            raise ValueError(
                f"context extension paygress.mode: unknown mode {mode_text!r}"
            ) from None
        grants = _positive_int(context.get("paygress.grants", "1"), "paygress.grants")
        return RouteRule(
            name=name or f"ctx:{price}:{mode.value}:{grants}",
            price=price,
            mode=mode,
            grants=grants,
            description=base.description if base else "",
        )


def normalize_path(path: str) -> str:
    """The path a rule is matched against: no query, percent-escapes decoded (an encoded slash
    too), `;` path parameters removed, slashes merged, dot segments resolved. `/%61pi/x`,
    `//api/x`, `/public/../api/x`, `/api%2Fx`, `/api;v=1/x` and `/public/..;/api/x` all price
    as `/api/x`: whatever form an upstream decodes, the price follows.

    Path parameters are removed rather than refused: Tomcat, Jetty and Spring drop them
    (`/api;jsessionid=1/x` is `/api/x` there, and `..;` is `..`), so the price must too; an
    upstream that keeps them serves another path (`api;` is then a segment of its own), which
    costs what `/api/x` costs. Refusing them would break clients that send session ids or
    matrix parameters. A rule's prefix therefore never contains `;` (the config refuses it)."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    if "%" in path:
        path = unquote(path, errors="replace")
    if "//" not in path and "/." not in path and "\\" not in path and ";" not in path:
        return path or "/"
    path = path.replace("\\", "/")
    out: list[str] = []
    segment = ""
    for segment in path.split("/"):
        segment = segment.split(";", 1)[0]
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    # `/a/b/`, `/a/b/.` and `/a/b/c/..` (also `..;x`) all name the directory `/a/b/`.
    trailing = "/" if segment in ("", ".", "..") and out else ""
    return "/" + "/".join(out) + trailing


def _positive_int(text: str, key: str, *, allow_zero: bool = False) -> int:
    if not text.isdigit() or (int(text) == 0 and not allow_zero) or len(text) > 18:
        raise ValueError(f"context extension {key} must be a positive integer, not {text!r}")
    return int(text)


def normalize_mint_url(url: str) -> str:
    """Canonical form for comparing mint URLs: lowercase scheme and host, no trailing slash."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url[:80]!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"mint URL must not carry credentials, query or fragment: {url[:80]!r}")
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc.lower()}{path}"
