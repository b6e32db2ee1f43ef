"""Route rules: which requests cost what. First match wins; unmatched requests are free."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from paygress.core.tiers import Tier


class Mode(enum.StrEnum):
    """What a payment buys: a number of requests, or time."""

    PER_REQUEST = "per_request"
    PER_SECOND = "per_second"
    POD = "pod"


@dataclass(frozen=True, slots=True)
class RouteRule:
    """A priced route. `price` (in the unit) buys `grants` requests or seconds."""

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
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.path_regex is not None:
            object.__setattr__(self, "_regex", re.compile(self.path_regex))

    def matches(self, method: str, host: str, path: str) -> bool:
        """True when the request's method, host (port ignored) and path fit this rule."""
        if self.methods and method not in self.methods:
            return False
        if self.hosts and _bare_host(host) not in self.hosts:
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


def _bare_host(host: str) -> str:
    host = host.lower()
    if host.startswith("["):  # [::1]:8080
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Pricing:
    """Ordered route rules plus the per-route overrides Envoy may send as context extensions."""

    OVERRIDE_PREFIX = "paygress."

    def __init__(self, rules: tuple[RouteRule, ...]) -> None:
        self.rules = rules
        self.tiers = {r.tier.id: r.tier for r in rules if r.tier is not None}
        self._by_name = {r.name: r for r in rules}

    def match(
        self, method: str, host: str, path: str, context: Mapping[str, str] | None = None
    ) -> RouteRule | None:
        """The rule for this request, or None when it is free.

        Context extensions (`paygress.route`, `paygress.price`, `paygress.mode`,
        `paygress.grants`) override the file rules for plain-Envoy users; raises ValueError
        when they are malformed.
        """
        if context and any(k.startswith(self.OVERRIDE_PREFIX) for k in context):
            return self._from_context(method, host, path, context)
        path = normalize_path(path)
        for rule in self.rules:
            if rule.matches(method, host, path):
                return rule
        return None

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
    too), slashes merged, dot segments resolved. `/%61pi/x`, `//api/x`, `/public/../api/x` and
    `/api%2Fx` all price as `/api/x`: whatever form an upstream decodes, the price follows."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    if "%" in path:
        path = unquote(path, errors="replace")
    if "//" not in path and "/." not in path and "\\" not in path:
        return path or "/"
    path = path.replace("\\", "/")
    out: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    trailing = "/" if path.endswith(("/", "/.", "/..")) and out else ""
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
