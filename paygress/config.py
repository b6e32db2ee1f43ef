"""Configuration: a YAML file (path by flag or PAYGRESS_CONFIG) with PAYGRESS_* env overrides.

Secrets never live here: the wallet mnemonic comes from PAYGRESS_MNEMONIC or
PAYGRESS_MNEMONIC_FILE (see `load_mnemonic`).
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from paygress.core.free_clients import DEFAULT_KEY_HEADER, FreeClient, FreeClients
from paygress.core.gate import (
    DEFAULT_MAX_PROOFS,
    DEFAULT_MAX_TOKEN_BYTES,
    TRUSTED_HEADERS,
    GateSettings,
)
from paygress.core.hosts import BadHost, normalize_host
from paygress.core.pod_access import IMAGE_HEADER
from paygress.core.pod_access import KEY_HEADER as POD_KEY_HEADER
from paygress.core.pricing import Mode, Pricing, RouteRule, normalize_mint_url
from paygress.core.tiers import Tier
from paygress.event_loop import CHOICES

DEFAULT_SOCKET = "/run/paygress/paygress.sock"
DEFAULT_ADMIN_SOCKET = "/run/paygress/admin.sock"
DEFAULT_STATE_DIR = "/var/lib/paygress"

T = TypeVar("T")
Parser = Callable[[Any, str], Any]


class ConfigError(ValueError):
    """A configuration problem, with the offending key path (or variable) in the message."""


def setting(default: T, parse: Parser) -> T:
    """A config key: its default (stated here only) and the function that validates it."""
    return field(default=default, metadata={"parse": parse})


def section(cls: type[T]) -> T:
    """A nested mapping of keys, described by the dataclass `cls`."""
    return field(default_factory=cls, metadata={"section": cls})


def _optional(parse: Parser) -> Parser:
    """A key that may be absent, null or empty (off)."""
    return lambda value, where: None if value in (None, "") else parse(value, where)


def _at_least(parse: Callable[[Any, str, int], T], minimum: int) -> Parser:
    return lambda value, where: parse(value, where, minimum)


# One table of environment overrides: variable -> key path. They are merged into the file's
# mapping before validation, so an override is checked exactly like the key it replaces, and
# an error names the variable.
ENV_OVERRIDES: dict[str, str] = {
    "PAYGRESS_SOCKET": "listen.socket",
    "PAYGRESS_SOCKET_MODE": "listen.socket_mode",
    "PAYGRESS_ADMIN_SOCKET": "listen.admin_socket",
    "PAYGRESS_TCP": "listen.tcp",
    "PAYGRESS_HTTP": "listen.http",
    "PAYGRESS_METRICS": "metrics.listen",
    "PAYGRESS_STATE_DIR": "state_dir",
    "PAYGRESS_MINTS": "mints",  # comma-separated
    "PAYGRESS_DRAIN_SECONDS": "drain_seconds",
    "PAYGRESS_LOG_LEVEL": "log_level",
    "PAYGRESS_EVENT_LOOP": "event_loop",
    "PAYGRESS_DRY_RUN": "dry_run",
    "PAYGRESS_REQUIRE_DLEQ": "payments.require_dleq",
    "PAYGRESS_ACCEPT_LOCKED": "offline.accept_locked",
    "PAYGRESS_API_KEY_HEADER": "free_clients.api_key_header",
    "PAYGRESS_NAMESPACE": "kubernetes.namespace",
    "PAYGRESS_KUBECONFIG": "kubernetes.kubeconfig",
    "PAYGRESS_STORE_BACKEND": "store.backend",
    "PAYGRESS_REDIS_URL": "store.url",
    "PAYGRESS_WORKERS": "workers",
}
_LIST_OVERRIDES = frozenset({"mints"})
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True, slots=True)
class ListenConfig:
    socket: str = setting(DEFAULT_SOCKET, lambda v, w: _str(v, w))
    socket_mode: int = setting(0o660, lambda v, w: _file_mode(v, w))
    # The wallet admin (balance, withdraw, restore): never on the proxy's socket.
    admin_socket: str = setting(DEFAULT_ADMIN_SOCKET, lambda v, w: _str(v, w))
    admin_socket_mode: int = setting(0o600, lambda v, w: _file_mode(v, w))
    tcp: str | None = setting(None, _optional(lambda v, w: _tcp(v, w)))
    http: str | None = setting(None, _optional(lambda v, w: _tcp(v, w)))
    # Forward-auth: how many proxies in front append to X-Forwarded-For (the client's address
    # is that many entries from the right); 0 reads the connection's peer.
    http_trusted_hops: int = setting(1, lambda v, w: _int(v, w))


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str | None = setting(None, _optional(lambda v, w: _tcp(v, w)))


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_token_bytes: int = setting(
        DEFAULT_MAX_TOKEN_BYTES, _at_least(lambda v, w, m: _int(v, w, m), 64)
    )
    max_proofs: int = setting(DEFAULT_MAX_PROOFS, _at_least(lambda v, w, m: _int(v, w, m), 1))


def _gate_default(name: str) -> Any:
    """A gate setting's default, as the core states it."""
    return next(f.default for f in fields(GateSettings) if f.name == name)


@dataclass(frozen=True, slots=True)
class UnprovenSwapsConfig:
    """The swap budget of tokens without DLEQ proofs (see paygress/core/budget.py). Keep
    `per_mint_per_minute` below the mint's own per-address limit of transactions."""

    per_mint_per_minute: float = setting(60.0, lambda v, w: _float(v, w))
    per_mint_burst: int = setting(10, _at_least(lambda v, w, m: _int(v, w, m), 1))
    per_client_per_minute: float = setting(6.0, lambda v, w: _float(v, w))
    per_client_burst: int = setting(3, _at_least(lambda v, w, m: _int(v, w, m), 1))


@dataclass(frozen=True, slots=True)
class PaymentsConfig:
    """How first payments are checked and redeemed."""

    # A check waits this long for a redemption, then answers 503 payment_pending.
    timeout_seconds: float = setting(
        _gate_default("payment_timeout_seconds"), lambda v, w: _float(v, w)
    )
    # Refuse tokens whose proofs do not all carry DLEQ proofs (NUT-12).
    require_dleq: bool = setting(False, lambda v, w: _bool(v, w))
    # Tokens refused for good are refused again from memory: at most this many, this long.
    refusals_max: int = setting(
        _gate_default("refusals_max"), _at_least(lambda v, w, m: _int(v, w, m), 1)
    )
    refusals_seconds: float = setting(_gate_default("refusals_seconds"), lambda v, w: _float(v, w))
    # An unknown keyset id asks the mint for its keysets at most this often.
    keyset_refresh_seconds: float = setting(60.0, lambda v, w: _float(v, w))
    # Swaps whose outcome is not known yet are tried again this often (backing off to 60 s).
    swap_retry_seconds: float = setting(5.0, lambda v, w: _float(v, w))
    unproven_swaps: UnprovenSwapsConfig = section(UnprovenSwapsConfig)


@dataclass(frozen=True, slots=True)
class OfflineConfig:
    """Tokens locked to the operator's key (NUT-11) and proven by DLEQ proofs (NUT-12) are
    accepted without a mint call, queued, and swapped in the background."""

    accept_locked: bool = setting(True, lambda v, w: _bool(v, w))
    # A lock that expires (its locktime) sooner than this is swapped at once instead.
    locktime_margin_seconds: float = setting(600.0, lambda v, w: _float(v, w))
    # Locked proofs waiting for their swap; beyond this, tokens are swapped at once.
    max_queue: int = setting(10_000, _at_least(lambda v, w, m: _int(v, w, m), 1))
    # Proofs swapped together (whole tokens), and how often the queue is worked.
    batch_proofs: int = setting(64, _at_least(lambda v, w, m: _int(v, w, m), 1))
    interval_seconds: float = setting(2.0, lambda v, w: _float(v, w))


@dataclass(frozen=True, slots=True)
class SessionsConfig:
    """Paid sessions: the allow of a time grant (per_second routes, pods) carries a signed
    session (an ES256 JWT) that the proxy can verify itself (see paygress/sessions.py)."""

    enabled: bool = setting(True, lambda v, w: _bool(v, w))
    issuer: str = setting("paygress", lambda v, w: _str(v, w))
    header: str = setting("x-paygress-session", lambda v, w: _session_header(v, w))
    cookie: str = setting("", lambda v, w: _cookie_name(v, w))  # "" = no cookie
    # Key rotation: the key signing new sessions, and older generations still accepted.
    key_generation: int = setting(0, lambda v, w: _int(v, w))
    accept_generations: tuple[int, ...] = setting((), lambda v, w: _int_list(v, w))
    pod_max_seconds: int = setting(300, _at_least(lambda v, w, m: _int(v, w, m), 10))
    # exp is signed this long before the paid end: the proxy's clock skew plus one second
    # (deploy/envoy: skew 1, margin 2; Istio's RequestAuthentication: skew 60, margin 61).
    expiry_margin_seconds: int = setting(2, lambda v, w: _int(v, w))


@dataclass(frozen=True, slots=True)
class FreeClientsConfig:
    """Clients that pass priced routes without paying: by source address, API key, or both
    (see paygress/core/free_clients.py)."""

    # The request header that carries a listed client's API key; removed before the upstream.
    api_key_header: str = setting(DEFAULT_KEY_HEADER, lambda v, w: _header_name(v, w))
    clients: tuple[FreeClient, ...] = setting((), lambda v, w: _free_clients(v, w))


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where grants and the wallet live: SQLite in `state_dir` (one process), or Redis shared by
    every replica and worker of one seed. The Redis password comes from PAYGRESS_REDIS_PASSWORD
    or PAYGRESS_REDIS_PASSWORD_FILE, never from this file."""

    backend: str = setting("sqlite", lambda v, w: _choice(v, w, ("sqlite", "redis")))
    url: str | None = setting(None, _optional(lambda v, w: _redis_url(v, w)))
    # Keys are "{prefix}:…": one Redis Cluster hash slot per gateway; one prefix per seed.
    prefix: str = setting("paygress", lambda v, w: _str(v, w))
    timeout_seconds: float = setting(1.0, lambda v, w: _float(v, w))
    tls_ca_file: str | None = setting(None, _optional(lambda v, w: _str(v, w)))
    tls_cert_file: str | None = setting(None, _optional(lambda v, w: _str(v, w)))
    tls_key_file: str | None = setting(None, _optional(lambda v, w: _str(v, w)))
    # Refuse a Redis that may lose answered writes (appendonly, appendfsync always, noeviction).
    check_persistence: bool = setting(True, lambda v, w: _bool(v, w))
    # What cached grants do while the store cannot be reached: closed (503) or cached.
    on_outage: str = setting("closed", lambda v, w: _choice(v, w, ("closed", "cached")))
    # The most requests of a per_request grant one process leases at once: what a process that
    # dies can cost a payer, per grant.
    lease_requests: int = setting(
        _gate_default("lease_max_requests"), _at_least(lambda v, w, m: _int(v, w, m), 1)
    )


@dataclass(frozen=True, slots=True)
class KubernetesConfig:
    """Where and how pods for payment are made (used when a route names a tier)."""

    namespace: str = setting("default", lambda v, w: _dns_label(v, w))
    kubeconfig: str | None = setting(None, _optional(lambda v, w: _str(v, w)))
    reaper_interval_seconds: float = setting(5.0, lambda v, w: _float(v, w))
    grace_seconds: int = setting(30, lambda v, w: _int(v, w))
    status_path: str = setting("/.well-known/paygress/pods/", lambda v, w: _str(v, w))
    offers_path: str = setting("/.well-known/paygress/offers", lambda v, w: _str(v, w))


@dataclass(frozen=True, slots=True)
class Config:
    listen: ListenConfig = section(ListenConfig)
    state_dir: str = setting(DEFAULT_STATE_DIR, lambda v, w: _str(v, w))
    unit: str = setting("sat", lambda v, w: _str(v, w))
    mints: tuple[str, ...] = setting((), lambda v, w: _mints(v, w))
    tiers: tuple[Tier, ...] = setting((), lambda v, w: _tiers(v, w))
    routes: tuple[RouteRule, ...] = field(default=(), metadata={"late": True})
    free_clients: FreeClientsConfig = section(FreeClientsConfig)
    limits: LimitsConfig = section(LimitsConfig)
    # The most one call to a mint may take, all in (connect, send, a trickling answer).
    mint_timeout_seconds: float = setting(1.0, lambda v, w: _float(v, w))
    payments: PaymentsConfig = section(PaymentsConfig)
    offline: OfflineConfig = section(OfflineConfig)
    sessions: SessionsConfig = section(SessionsConfig)
    retry_after_seconds: int = setting(5, _at_least(lambda v, w, m: _int(v, w, m), 1))
    drain_seconds: float = setting(5.0, lambda v, w: _float(v, w))
    # After the drain: how long redemptions under way may take to finish before the process
    # exits anyway (their swap records stay and are recovered at the next start).
    shutdown_timeout_seconds: float = setting(10.0, lambda v, w: _float(v, w))
    flush_interval_seconds: float = setting(1.0, lambda v, w: _float(v, w))
    log_level: str = setting("INFO", lambda v, w: _choice(v, w, _LOG_LEVELS).upper())
    event_loop: str = setting("auto", lambda v, w: _choice(v, w, CHOICES))
    metrics: MetricsConfig = section(MetricsConfig)
    dry_run: bool = setting(False, lambda v, w: _bool(v, w))
    kubernetes: KubernetesConfig = section(KubernetesConfig)
    store: StoreConfig = section(StoreConfig)
    # Worker processes on this node (each its own socket, one shared TCP/HTTP port); more than
    # one needs the Redis store.
    workers: int = setting(1, _at_least(lambda v, w, m: _int(v, w, m), 1))

    @property
    def database_path(self) -> Path:
        return Path(self.state_dir) / "paygress.db"

    @property
    def metrics_listen(self) -> str | None:
        return self.metrics.listen

    def pricing(self) -> Pricing:
        """The routes and the free clients, as the gate reads them."""
        free = self.free_clients
        listed = FreeClients(free.clients, free.api_key_header) if free.clients else None
        return Pricing(self.routes, listed)


_SECRET_KEYS = {"mnemonic", "seed", "seed_words", "private_key"}
_ROUTE_KEYS = {"name", "match", "price", "mode", "grants", "description", "tier"}
_TIER_KEYS = {
    "id",
    "description",
    "cpu",
    "memory",
    "images",
    "port",
    "rate_msat_per_second",
    "min_seconds",
    "max_seconds",
}
_FREE_CLIENT_KEYS = {"name", "cidrs", "api_key_sha256", "routes"}
_MATCH_KEYS = {"hosts", "path_prefix", "path_regex", "methods", "case_insensitive"}


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Reads the YAML file (if any), then applies PAYGRESS_* environment overrides."""
    env = os.environ if env is None else env
    path = path or env.get("PAYGRESS_CONFIG")
    raw: dict[str, Any] = {}
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        raw = loaded or {}
    return parse_config(raw, env)


def parse_config(raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """Validates a config mapping (with `env` overrides merged in); every error names the key
    that is wrong, or the variable it came from."""
    secrets = _SECRET_KEYS & set(raw)
    store_raw = raw.get("store")
    if isinstance(store_raw, dict) and "password" in store_raw:
        raise ConfigError(
            "store.password: secrets do not belong in the config file; "
            "set PAYGRESS_REDIS_PASSWORD or PAYGRESS_REDIS_PASSWORD_FILE instead"
        )
    if secrets:
        raise ConfigError(
            f"{sorted(secrets)[0]}: secrets do not belong in the config file; "
            "set PAYGRESS_MNEMONIC or PAYGRESS_MNEMONIC_FILE instead"
        )
    merged, sources = _merge_env(raw, env or {})

    def where(path: str) -> str:
        return f"{sources[path]} ({path})" if path in sources else path

    config = _build(Config, merged, "", where)
    tiers = {t.id: t for t in config.tiers}
    routes_raw = merged.get("routes", [])
    if not isinstance(routes_raw, list):
        raise ConfigError("routes: must be a list")
    routes = tuple(_route(r, i, config.unit, tiers) for i, r in enumerate(routes_raw))
    names = [r.name for r in routes]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(f"routes: duplicate route name {sorted(dupes)[0]!r}")
    if routes and not config.mints:
        raise ConfigError(f"{where('mints')}: priced routes need at least one accepted mint")
    _check_free_routes(config.free_clients.clients, {r.name: r for r in routes})
    if config.store.backend == "redis" and not config.store.url:
        raise ConfigError(f"{where('store.url')}: the redis backend needs a URL")
    if config.workers > 1 and config.store.backend != "redis":
        raise ConfigError(
            f"{where('workers')}: several worker processes share grants and the wallet through "
            "the redis store (store.backend: redis)"
        )
    return replace(config, routes=routes)


def _check_free_routes(clients: tuple[FreeClient, ...], routes: Mapping[str, RouteRule]) -> None:
    for i, client in enumerate(clients):
        for name in sorted(client.routes):
            rule = routes.get(name)
            where = f"free_clients.clients[{i}] ({client.name}).routes"
            if rule is None:
                raise ConfigError(f"{where}: no route {name!r} in routes")
            if rule.mode is Mode.POD:
                raise ConfigError(f"{where}: {name!r} sells pods, which are never free")


def _merge_env(
    raw: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The file's mapping with the environment's overrides in place, and which key came from
    which variable."""
    merged = copy.deepcopy(dict(raw))
    sources: dict[str, str] = {}
    for var, path in ENV_OVERRIDES.items():
        if var not in env:
            continue
        value: Any = env[var]
        if path in _LIST_OVERRIDES:
            value = [item for item in value.split(",") if item.strip()]
        *parents, leaf = path.split(".")
        node = merged
        for part in parents:
            child = node.setdefault(part, {})
            node = _mapping(child, part)
        node[leaf] = value
        sources[path] = var
    return merged, sources


def _build(cls: type[T], raw: Mapping[str, Any], prefix: str, where: Callable[[str], str]) -> T:
    """A config dataclass from its mapping: unknown keys refused, each key validated by its
    own parser, absent keys left at the dataclass's default."""
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    _no_unknown(raw, set(known), prefix)
    values: dict[str, Any] = {}
    for name, spec in known.items():
        path = prefix + name
        if "section" in spec.metadata:
            values[name] = _build(
                spec.metadata["section"],
                _mapping(raw.get(name, {}), where(path)),
                path + ".",
                where,
            )
        elif "parse" in spec.metadata and name in raw:
            values[name] = spec.metadata["parse"](raw[name], where(path))
    return cls(**values)


def _mints(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be a list of mint URLs")
    return tuple(_mint(m, f"{where}[{i}]") for i, m in enumerate(value))


def _tiers(value: Any, where: str) -> tuple[Tier, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be a list")
    tiers = tuple(_tier(t, i) for i, t in enumerate(value))
    ids = [t.id for t in tiers]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{where}: duplicate tier id")
    return tiers


def _free_clients(value: Any, where: str) -> tuple[FreeClient, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be a list")
    clients = tuple(_free_client(c, f"{where}[{i}]") for i, c in enumerate(value))
    names = [c.name for c in clients]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{where}: duplicate name {dupes[0]!r}")
    return clients


def _free_client(raw: Any, where: str) -> FreeClient:
    raw = _mapping(raw, where)
    _no_unknown(raw, _FREE_CLIENT_KEYS, f"{where}.")
    name = _str(raw.get("name"), f"{where}.name")
    if not _HEADER_VALUE.fullmatch(name):
        raise ConfigError(
            f"{where}.name: letters, digits, '.', '_' and '-' only (it is sent upstream)"
        )
    where = f"{where} ({name})"
    cidrs = _str_list(raw.get("cidrs", []), f"{where}.cidrs")
    key = raw.get("api_key_sha256")
    if not cidrs and key is None:
        raise ConfigError(f"{where}: give cidrs, api_key_sha256, or both (both: both must match)")
    return FreeClient(
        name=name,
        networks=tuple(_cidr(c, f"{where}.cidrs[{i}]") for i, c in enumerate(cidrs)),
        key_sha256=None if key is None else _sha256_hex(key, f"{where}.api_key_sha256"),
        routes=frozenset(_str_list(raw.get("routes", []), f"{where}.routes")),
    )


def _cidr(value: str, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise ConfigError(f"{where}: not an address range such as 10.0.0.0/8 ({exc})") from None


def _sha256_hex(value: Any, where: str) -> bytes:
    text = value.strip().lower() if isinstance(value, str) else ""
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ConfigError(
            f"{where}: must be the key's SHA-256 as 64 hex digits, e.g. from "
            '`printf %s "$KEY" | sha256sum`; the key itself never goes in the config'
        )
    return bytes.fromhex(text)


def _header_name(value: Any, where: str) -> str:
    name = _str(value, where).strip().lower()
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise ConfigError(f"{where}: must be a header name (letters, digits, '-')")
    if name in _RESERVED_HEADERS or name.startswith(("x-envoy-", "x-forwarded-")):
        raise ConfigError(f"{where}: {name!r} is a header Paygress or the proxy reads itself")
    return name


def load_mnemonic(env: Mapping[str, str] | None = None) -> str:
    """The wallet mnemonic from PAYGRESS_MNEMONIC or the file named by PAYGRESS_MNEMONIC_FILE."""
    env = os.environ if env is None else env
    if env.get("PAYGRESS_MNEMONIC"):
        return " ".join(env["PAYGRESS_MNEMONIC"].split())
    path = env.get("PAYGRESS_MNEMONIC_FILE")
    if path:
        try:
            return " ".join(Path(path).read_text(encoding="utf-8").split())
        except OSError as exc:
            raise ConfigError(f"PAYGRESS_MNEMONIC_FILE {path}: {exc.strerror}") from exc
    raise ConfigError(
        "no wallet mnemonic: set PAYGRESS_MNEMONIC or PAYGRESS_MNEMONIC_FILE "
        "(create one with `paygress mnemonic`)"
    )


def load_store_password(env: Mapping[str, str] | None = None) -> str | None:
    """The Redis password from PAYGRESS_REDIS_PASSWORD or the file PAYGRESS_REDIS_PASSWORD_FILE
    names (e.g. a mounted Secret); None when neither is set."""
    env = os.environ if env is None else env
    if env.get("PAYGRESS_REDIS_PASSWORD"):
        return env["PAYGRESS_REDIS_PASSWORD"]
    path = env.get("PAYGRESS_REDIS_PASSWORD_FILE")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"PAYGRESS_REDIS_PASSWORD_FILE {path}: {exc.strerror}") from exc
    return None


def _tier(raw: Any, index: int) -> Tier:
    where = f"tiers[{index}]"
    raw = _mapping(raw, where)
    _no_unknown(raw, _TIER_KEYS, f"{where}.")
    tid = _dns_label(raw.get("id"), f"{where}.id")
    where = f"tiers[{index}] ({tid})"
    images = _str_list(raw.get("images"), f"{where}.images")
    if not images:
        raise ConfigError(f"{where}.images: list at least one allowed image")
    min_seconds = _int(raw.get("min_seconds", 60), f"{where}.min_seconds", 1)
    max_seconds = _int(raw.get("max_seconds", 86400), f"{where}.max_seconds", 1)
    if max_seconds < min_seconds:
        raise ConfigError(f"{where}.max_seconds: must not be less than min_seconds")
    return Tier(
        id=tid,
        description=_str(raw.get("description", ""), f"{where}.description", empty_ok=True),
        cpu=_quantity(raw.get("cpu"), f"{where}.cpu"),
        memory=_quantity(raw.get("memory"), f"{where}.memory"),
        images=tuple(images),
        port=_port(raw.get("port", 8080), f"{where}.port"),
        rate_msat_per_second=_int(
            raw.get("rate_msat_per_second"), f"{where}.rate_msat_per_second", 1
        ),
        min_seconds=min_seconds,
        max_seconds=max_seconds,
    )


def _route(raw: Any, index: int, unit: str, tiers: Mapping[str, Tier]) -> RouteRule:
    where = f"routes[{index}]"
    raw = _mapping(raw, where)
    _no_unknown(raw, _ROUTE_KEYS, f"{where}.")
    name = _str(raw.get("name", f"route-{index}"), f"{where}.name")
    where = f"routes[{index}] ({name})"
    match = _match(raw.get("match", {}), f"{where}.match")
    description = _str(raw.get("description", ""), f"{where}.description", empty_ok=True)
    mode_raw = _str(raw.get("mode", "per_request"), f"{where}.mode")
    try:
        mode = Mode(mode_raw)
    except ValueError:
        raise ConfigError(
            f"{where}.mode: must be per_request or per_second, not {mode_raw!r}"
        ) from None
    if "tier" in raw:
        tier_id = _str(raw["tier"], f"{where}.tier")
        tier = tiers.get(tier_id)
        if tier is None:
            raise ConfigError(f"{where}.tier: no tier {tier_id!r} in tiers")
        if "price" in raw or "grants" in raw or "mode" in raw:
            raise ConfigError(f"{where}: a tier route takes its price from the tier")
        return RouteRule(
            name=name,
            price=tier.min_payment,
            mode=Mode.POD,
            description=description,
            tier=tier,
            **match,
        )
    if "price" not in raw:
        raise ConfigError(f"{where}.price: required (amount in {unit}), or name a tier")
    return RouteRule(
        name=name,
        price=_int(raw["price"], f"{where}.price", 1),
        mode=mode,
        grants=_int(raw.get("grants", 1), f"{where}.grants", 1),
        description=description,
        **match,
    )


def _match(value: Any, where: str) -> dict[str, Any]:
    """A route's `match`, as RouteRule's keyword arguments (hosts in their canonical spelling,
    methods uppercase)."""
    match = _mapping(value, where)
    _no_unknown(match, _MATCH_KEYS, f"{where}.")
    hosts = _str_list(match.get("hosts", []), f"{where}.hosts")
    for i, host in enumerate(hosts):
        try:
            if not normalize_host(host):
                raise BadHost("empty")
        except BadHost:
            raise ConfigError(
                f"{where}.hosts[{i}]: {host!r} is not a host name or address "
                "(a port, a trailing dot and letter case are ignored anyway)"
            ) from None
    prefix = match.get("path_prefix")
    if prefix is not None:
        prefix = _str(prefix, f"{where}.path_prefix")
        if ";" in prefix:
            raise ConfigError(
                f"{where}.path_prefix: must not contain ';' (path parameters are removed "
                "before matching, so it would never match)"
            )
    regex = match.get("path_regex")
    if regex is not None:
        try:
            re.compile(_str(regex, f"{where}.path_regex"))
        except re.error as exc:
            raise ConfigError(f"{where}.path_regex: invalid regex: {exc}") from exc
    methods = _str_list(match.get("methods", []), f"{where}.methods")
    case_insensitive = _bool(match.get("case_insensitive", False), f"{where}.case_insensitive")
    return {
        "hosts": tuple(hosts),
        "path_prefix": prefix,
        "path_regex": regex,
        "methods": tuple(m.upper() for m in methods),
        "case_insensitive": case_insensitive,
    }


_HEADER_VALUE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Headers Paygress or the proxy read or set themselves: never a free client's key header.
_RESERVED_HEADERS = {
    *TRUSTED_HEADERS,
    IMAGE_HEADER,
    POD_KEY_HEADER,
    "x-cashu",
    "authorization",
    "host",
    "x-real-ip",
    "x-request-id",
    "x-original-uri",
    "x-original-url",
    "x-original-method",
}
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_QUANTITY = re.compile(r"(\d+(\.\d+)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|e\d+|E\d+)?")


def _dns_label(value: Any, where: str) -> str:
    text = _str(value, where)
    if not _DNS_LABEL.fullmatch(text):
        raise ConfigError(f"{where}: must be a DNS-1123 label (lowercase letters, digits, '-')")
    return text


def _quantity(value: Any, where: str) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    text = _str(value, where)
    if not _QUANTITY.fullmatch(text):
        raise ConfigError(f"{where}: not a Kubernetes quantity (e.g. 500m, 1, 512Mi)")
    return text


def _port(value: Any, where: str) -> int:
    port = _int(value, where, 1)
    if port > 65535:
        raise ConfigError(f"{where}: must be a port number (1-65535)")
    return port


def _no_unknown(raw: Mapping[str, Any], known: set[str], prefix: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping")
    return value


def _str(value: Any, where: str, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str) or not (empty_ok or value.strip()):
        raise ConfigError(f"{where}: must be a non-empty string")
    return value


def _bool(value: Any, where: str) -> bool:
    """true/false (YAML), or one of true, false, yes, no, on, off, 1, 0 as text (env): anything
    else is an error, so that a typo never silently means false."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ConfigError(f"{where}: must be true or false, not {value!r}")


def _choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    text = _str(value, where).strip().lower()
    if text not in choices:
        raise ConfigError(f"{where}: must be one of {', '.join(choices)}, not {value!r}")
    return text


def _str_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: must be a list of strings")
    return value


def _int(value: Any, where: str, minimum: int = 0) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: must be an integer >= {minimum}")
    return value


def _float(value: Any, where: str) -> float:
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: must be a number") from None
    if result < 0:
        raise ConfigError(f"{where}: must not be negative")
    return result


def _file_mode(value: Any, where: str) -> int:
    # YAML 1.1 reads an unquoted 0660 as the octal int 432 and 660 as decimal: accept both.
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"{value:o}" if value <= 0o777 else str(value)
    if isinstance(value, str) and re.fullmatch(r"0?[0-7]{3}", value.strip()):
        return int(value.strip(), 8)
    raise ConfigError(f'{where}: must be an octal file mode such as "0660"')


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)


def _session_header(value: Any, where: str) -> str:
    name = _header_name(value, where)
    if name == "cookie" or (name.startswith("x-paygress-") and name != "x-paygress-session"):
        raise ConfigError(f"{where}: {name!r} is a header Paygress or the proxy reads itself")
    return name


def _cookie_name(value: Any, where: str) -> str:
    if value in (None, ""):
        return ""
    text = _str(value, where)
    if not _TOKEN.fullmatch(text):
        raise ConfigError(f"{where}: not a cookie name")
    return text


def _int_list(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be a list of integers")
    return tuple(_int(v, f"{where}[{i}]") for i, v in enumerate(value))


def _tcp(value: Any, where: str) -> str:
    text = _str(value, where)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{where}: must be host:port, e.g. 127.0.0.1:9001 (port 0: any free)")
    return text


def _redis_url(value: Any, where: str) -> str:
    text = _str(value, where)
    parts = urlsplit(text)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"{where}: must be redis://host:port/db, rediss://… (TLS) or unix:///path.sock"
        )
    if parts.password:
        raise ConfigError(
            f"{where}: no password in the URL; set PAYGRESS_REDIS_PASSWORD or "
            "PAYGRESS_REDIS_PASSWORD_FILE"
        )
    return text


def _mint(value: Any, where: str) -> str:
    text = _str(value, where)
    try:
        return normalize_mint_url(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
