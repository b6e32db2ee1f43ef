"""Client headers that must not reach the upstream on any route, whatever the payment: forged
copies of the headers Paygress sets, their `_`/`.` aliases, and the free-client API key.
(Tokens are the gate's part: `X-Cashu`, and Authorization only when it carries one.)

An upstream that maps header names to variables (CGI, WSGI, PHP, Rack: `HTTP_X_PAYGRESS_PAID`)
reads `X_Paygress_Paid` and `X.Paygress.Paid` as `X-Paygress-Paid`, so every such spelling of a
trusted name is stripped too. Envoy can drop names with `_` itself
(`headers_with_underscores_action`); names with `.` only Paygress removes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

_SEPARATORS = ("-", "_", ".")


def spellings(name: str) -> frozenset[str]:
    """`name` (lowercase, words between `-`) with every mix of `-`, `_` and `.` between its
    words: what an upstream that normalizes `_`/`.` to `-` reads as `name`."""
    words = name.split("-")
    return frozenset(
        words[0] + "".join(sep + word for sep, word in zip(seps, words[1:], strict=True))
        for seps in itertools.product(_SEPARATORS, repeat=len(words) - 1)
    )


def unwanted_names(trusted: Iterable[str], *secrets: str | None) -> frozenset[str]:
    """Every name to strip, as one set: a request is checked with one `isdisjoint` over its
    header names, which costs what looking up a few names one by one costs. `secrets` are
    the client's own credentials Paygress reads (the free-client key, the pod key): never
    for an upstream either."""
    names: set[str] = set()
    for name in trusted:
        # Paygress's own names get every alias; others (x-envoy-original-dst-host) are read
        # by Envoy itself, under that exact name only.
        names |= spellings(name) if name.startswith("x-paygress-") else {name}
    for secret in secrets:
        if secret:
            names |= spellings(secret)
    return frozenset(names)


def present(names: frozenset[str], headers: Mapping[str, str]) -> tuple[str, ...]:
    """Which of `names` the request has (sorted: decisions repeat, and equal decisions are
    encoded once)."""
    return tuple(sorted(names.intersection(headers)))
