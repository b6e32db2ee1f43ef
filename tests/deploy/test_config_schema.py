"""Paygress's config rules are written twice: in paygress/config.py (the service) and in the
chart's values.schema.json (`config`, checked before anything renders). These tests hold the two
together, key by key:

- the keys: every key Paygress knows is in the schema or set by the chart, and the schema has
  no key Paygress does not know (Paygress's "unknown key (known: ...)" error lists its keys);
- the values: for every key, a set of probe values (valid, at and beyond each bound, of the
  wrong type) is given to both; a value the schema accepts must be accepted by Paygress (but
  for the cross-field rules in PAYGRESS_ONLY), and where the schema is stricter than Paygress,
  schema_stricter() must name the reason.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from paygress.config import ConfigError, parse_config
from tests.deploy.paths import CHART

SCHEMA = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
CONFIG_SCHEMA = {**SCHEMA["properties"]["config"], "definitions": SCHEMA["definitions"]}
# The keys of Paygress's config that the chart renders itself (templates/_helpers.tpl).
CHART_OWNED = {"listen", "state_dir", "metrics", "dry_run", "kubernetes"}
# values.kubernetes (camelCase) -> the config's kubernetes block.
KUBERNETES_VALUES = {
    "namespace": "namespace",
    "kubeconfig": "kubeconfig",
    "reaperIntervalSeconds": "reaper_interval_seconds",
    "graceSeconds": "grace_seconds",
    "statusPath": "status_path",
    "offersPath": "offers_path",
}
MINT = "https://mint.example.com"
ROUTE = {"name": "r", "price": 1, "match": {"path_prefix": "/a/"}}
TIER = {"id": "small", "cpu": "1", "memory": "1Gi", "images": ["x"], "rate_msat_per_second": 1}
FREE_CLIENT = {"name": "c", "cidrs": ["10.0.0.0/8"]}
NUMBERS = (
    "mint_timeout_seconds", "retry_after_seconds", "drain_seconds", "flush_interval_seconds",
    "shutdown_timeout_seconds", "payments.timeout_seconds", "payments.refusals_max",
    "payments.refusals_seconds", "payments.keyset_refresh_seconds", "payments.swap_retry_seconds",
    "payments.unproven_swaps.per_mint_per_minute", "payments.unproven_swaps.per_mint_burst",
    "payments.unproven_swaps.per_client_per_minute", "payments.unproven_swaps.per_client_burst",
    "limits.max_token_bytes", "limits.max_proofs", "routes[].price", "routes[].grants",
    "tiers[].port", "tiers[].rate_msat_per_second", "tiers[].min_seconds", "tiers[].max_seconds",
    "offline.locktime_margin_seconds", "offline.max_queue", "offline.batch_proofs",
    "offline.interval_seconds", "sessions.key_generation", "sessions.pod_max_seconds",
    "sessions.expiry_margin_seconds", "store.timeout_seconds", "store.lease_requests", "workers",
)  # fmt: skip
BOOLEANS = (
    "payments.require_dleq",
    "routes[].match.case_insensitive",
    "store.check_persistence",
    "offline.accept_locked",
    "sessions.enabled",
)
LISTS = (
    "routes[].match.hosts",
    "routes[].match.methods",
    "tiers[].images",
    "free_clients.clients[].cidrs",
    "free_clients.clients[].routes",
)


def schema_stricter(path: str, value: Any) -> str | None:
    """Why the schema may refuse a value that Paygress takes; None: it may not."""
    if path in NUMBERS and isinstance(value, str):
        return "Paygress also reads numbers from strings (env overrides); values are typed"
    if path in NUMBERS and value is True:
        return "Paygress reads a YAML boolean as the number 1 (float(True)); a typo in values"
    if path in BOOLEANS and isinstance(value, str):
        return "Paygress also reads booleans from strings (env overrides); values are typed"
    if path in LISTS and isinstance(value, str):
        return "Paygress reads one string as a one-item list; the chart asks for the list"
    if path == "routes[].match.methods" and value not in ([], ["x"]):
        return "Paygress takes any string as a method; the schema asks for letters"
    if path == "routes[].name" and " " in value:
        return "the schema keeps route names free of spaces (they are metric and header values)"
    return None


# Rules JSON Schema cannot state (they compare two fields): the chart renders the value and
# Paygress refuses to start with an error that names the key. Keyed by (path, repr(value)).
PAYGRESS_ONLY = {
    ("tiers[].max_seconds", "1"): "must not be less than min_seconds (default 60)",
    ("tiers[].max_seconds", "2"): "must not be less than min_seconds (default 60)",
    ("free_clients.clients[].routes", "['x']"): "must name a route of config.routes",
    ("free_clients.clients[].routes", "['/a/']"): "must name a route of config.routes",
    ("free_clients.clients[].routes", "['https://mint.example.com']"): "must name a route",
    ("workers", "2"): "several workers need store.backend: redis (the chart fails too)",
    ("store.backend", "'redis'"): "the redis backend needs store.url (or the chart's Secret)",
}


def known_keys(raw: dict[str, Any]) -> set[str]:
    """The keys Paygress knows where `raw` puts an unknown one, from its error message."""
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, env={})
    found = re.search(r"unknown key \(known: ([^)]*)\)", str(caught.value))
    assert found, f"not an unknown-key error: {caught.value}"
    return set(found.group(1).split(", "))


def schema_keys(node: dict[str, Any]) -> set[str]:
    while "$ref" in node:
        node = SCHEMA["definitions"][node["$ref"].rsplit("/", 1)[-1]]
    return set(node["properties"])


BOGUS = "no_such_key"
LEVELS = [
    ("top", {BOGUS: 1}, set(CONFIG_SCHEMA["properties"]) | CHART_OWNED),
    ("limits", {"limits": {BOGUS: 1}}, schema_keys(CONFIG_SCHEMA["properties"]["limits"])),
    (
        "routes[]",
        {"mints": [MINT], "routes": [{**ROUTE, BOGUS: 1}]},
        schema_keys(SCHEMA["definitions"]["route"]),
    ),
    (
        "routes[].match",
        {"mints": [MINT], "routes": [{**ROUTE, "match": {BOGUS: 1}}]},
        schema_keys(SCHEMA["definitions"]["routeMatch"]),
    ),
    ("tiers[]", {"tiers": [{**TIER, BOGUS: 1}]}, schema_keys(SCHEMA["definitions"]["tier"])),
    ("kubernetes", {"kubernetes": {BOGUS: 1}}, set(KUBERNETES_VALUES.values())),
    ("payments", {"payments": {BOGUS: 1}}, schema_keys(CONFIG_SCHEMA["properties"]["payments"])),
    ("offline", {"offline": {BOGUS: 1}}, schema_keys(CONFIG_SCHEMA["properties"]["offline"])),
    ("sessions", {"sessions": {BOGUS: 1}}, schema_keys(CONFIG_SCHEMA["properties"]["sessions"])),
    ("store", {"store": {BOGUS: 1}}, schema_keys(CONFIG_SCHEMA["properties"]["store"])),
    (
        "payments.unproven_swaps",
        {"payments": {"unproven_swaps": {BOGUS: 1}}},
        schema_keys(CONFIG_SCHEMA["properties"]["payments"]["properties"]["unproven_swaps"]),
    ),
    (
        "free_clients",
        {"free_clients": {BOGUS: 1}},
        schema_keys(CONFIG_SCHEMA["properties"]["free_clients"]),
    ),
    (
        "free_clients.clients[]",
        {"free_clients": {"clients": [{**FREE_CLIENT, BOGUS: 1}]}},
        schema_keys(SCHEMA["definitions"]["freeClient"]),
    ),
]


@pytest.mark.parametrize(("level", "raw", "ours"), LEVELS, ids=[lv[0] for lv in LEVELS])
def test_the_schema_and_paygress_know_the_same_keys(
    level: str, raw: dict[str, Any], ours: set[str]
) -> None:
    paygress = known_keys(raw)
    assert sorted(paygress - ours) == [], f"{level}: Paygress knows keys the chart cannot set"
    assert sorted(ours - paygress) == [], f"{level}: the chart has keys Paygress refuses"


def test_the_chart_kubernetes_values_cover_the_kubernetes_block() -> None:
    values = SCHEMA["properties"]["kubernetes"]["properties"]
    assert set(values) == set(KUBERNETES_VALUES)


# ------------------------------------------------------------------------------ values


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = SCHEMA["definitions"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def probes(node: dict[str, Any]) -> list[Any]:
    """Values around what a schema node allows."""
    node = _resolve(node)
    if "enum" in node:
        return [*node["enum"], "bogus", ""]
    kind = node.get("type")
    if kind == "integer":
        low = node.get("minimum", 0)
        found = [low - 1, low, low + 1, str(low + 1), 1.5, True, None]
        if "maximum" in node:
            found += [node["maximum"], node["maximum"] + 1]
        return found
    if kind == "boolean":
        return [True, False, "true", "yes", 1, None]
    if kind == "number":
        low = node.get("minimum", 0)
        return [low - 1, low, 0.5, 2, "1", True, None]
    if kind == "string":
        return ["", "x", "/a/", "small", "Small", "500m", "1 core", MINT, "ftp://x", 5, None]
    if kind == "array":
        return [[], ["x"], ["/a/"], [MINT], "x", [1], [""], None]
    if "anyOf" in node:  # quantity
        return ["500m", "1", 1, 0.5, "1 core", "1Gi", True, None]
    return [None, 1, "x"]


def leaves() -> Iterator[tuple[str, dict[str, Any], str, dict[str, Any]]]:
    """(where, base config, key, schema node) for every scalar key of the schema's config."""
    top = CONFIG_SCHEMA["properties"]
    for key, node in top.items():
        if key in {
            "routes", "tiers", "limits", "payments", "free_clients", "store", "offline",
            "sessions",
        }:  # fmt: skip
            continue
        yield "", {"mints": [MINT]}, key, node
    for key, node in top["limits"]["properties"].items():
        yield "limits.", {"limits": {}}, key, node
    for block in ("offline", "sessions"):
        for key, node in top[block]["properties"].items():
            yield f"{block}.", {block: {}}, key, node
    for key, node in top["store"]["properties"].items():
        yield "store.", {"store": {}}, key, node
    payments = top["payments"]["properties"]
    for key, node in payments.items():
        if key != "unproven_swaps":
            yield "payments.", {"payments": {}}, key, node
    for key, node in payments["unproven_swaps"]["properties"].items():
        yield "payments.unproven_swaps.", {"payments": {"unproven_swaps": {}}}, key, node
    route = SCHEMA["definitions"]["route"]["properties"]
    for key, node in route.items():
        if key not in {"match", "tier"}:
            yield "routes[].", {"mints": [MINT], "routes": [copy.deepcopy(ROUTE)]}, key, node
    for key, node in SCHEMA["definitions"]["routeMatch"]["properties"].items():
        base = {"mints": [MINT], "routes": [{**ROUTE, "match": {}}]}
        yield "routes[].match.", base, key, node
    for key, node in SCHEMA["definitions"]["tier"]["properties"].items():
        yield "tiers[].", {"tiers": [copy.deepcopy(TIER)]}, key, node
    for key, node in top["free_clients"]["properties"].items():
        if key != "clients":
            yield "free_clients.", {"free_clients": {}}, key, node
    for key, node in SCHEMA["definitions"]["freeClient"]["properties"].items():
        base = {"mints": [MINT], "routes": [ROUTE], "free_clients": {"clients": [FREE_CLIENT]}}
        yield "free_clients.clients[].", copy.deepcopy(base), key, node


def with_value(base: dict[str, Any], where: str, key: str, value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(base)
    target: dict[str, Any] = raw
    if where in ("limits.", "offline.", "sessions."):
        target = raw[where[:-1]]
    elif where == "payments.":
        target = raw["payments"]
    elif where == "store.":
        target = raw["store"]
    elif where == "payments.unproven_swaps.":
        target = raw["payments"]["unproven_swaps"]
    elif where == "routes[].":
        target = raw["routes"][0]
    elif where == "routes[].match.":
        target = raw["routes"][0]["match"]
    elif where == "tiers[].":
        target = raw["tiers"][0]
    elif where == "free_clients.":
        target = raw["free_clients"]
    elif where == "free_clients.clients[].":
        target = raw["free_clients"]["clients"][0]
    if value is None:
        target.pop(key, None)
    else:
        target[key] = value
    return raw


CASES = [
    (f"{where}{key}", base, where, key, value)
    for where, base, key, node in leaves()
    for value in probes(node)
]


def _accepted_by_paygress(raw: dict[str, Any]) -> bool:
    try:
        parse_config(raw, env={})
    except ConfigError:
        return False
    return True


def test_every_key_is_probed() -> None:
    probed = {case[0] for case in CASES}
    assert {"mint_timeout_seconds", "routes[].price", "tiers[].cpu", "limits.max_proofs"} <= probed
    assert len(CASES) > 200


@pytest.mark.parametrize(
    ("path", "base", "where", "key", "value"), CASES, ids=[f"{c[0]}={c[4]!r}" for c in CASES]
)
def test_a_value_the_schema_accepts_starts_paygress(
    path: str, base: dict[str, Any], where: str, key: str, value: Any
) -> None:
    raw = with_value(base, where, key, value)
    schema_ok = jsonschema.Draft7Validator(CONFIG_SCHEMA).is_valid(raw)
    paygress_ok = _accepted_by_paygress(raw)
    if schema_ok and not paygress_ok:
        assert (path, repr(value)) in PAYGRESS_ONLY, (
            f"the chart renders {path}={value!r}, which Paygress refuses"
        )
    if paygress_ok and not schema_ok:
        assert schema_stricter(path, value), (
            f"the schema refuses {path}={value!r}, which Paygress takes: "
            "loosen the schema or give the reason in schema_stricter()"
        )
