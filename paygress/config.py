"""Configuration: a YAML file (path by flag or PAYGRESS_CONFIG) with PAYGRESS_* env overrides.

Secrets never live here: the wallet mnemonic comes from PAYGRESS_MNEMONIC or
PAYGRESS_MNEMONIC_FILE (see `load_mnemonic`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from paygress.core.pricing import Mode, RouteRule, normalize_mint_url
from paygress.core.tiers import Tier
from paygress.event_loop import CHOICES

DEFAULT_SOCKET = "/run/paygress/paygress.sock"
DEFAULT_STATE_DIR = "/var/lib/paygress"


class ConfigError(ValueError):
    """A configuration problem, with the offending key path in the message."""


@dataclass(frozen=True, slots=True)
class ListenConfig:
    socket: str = DEFAULT_SOCKET
    socket_mode: int = 0o660
    tcp: str | None = None
    http: str | None = None


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_token_bytes: int = 8192
    max_proofs: int = 64


@dataclass(frozen=True, slots=True)
class KubernetesConfig:
    """Where and how pods for payment are made (used when a route names a tier)."""

    namespace: str = "default"
    kubeconfig: str | None = None
    reaper_interval_seconds: float = 5.0
    grace_seconds: int = 30
    status_path: str = "/.well-known/paygress/pods/"
    offers_path: str = "/.well-known/paygress/offers"


@dataclass(frozen=True, slots=True)
class Config:
    listen: ListenConfig = field(default_factory=ListenConfig)
    state_dir: str = DEFAULT_STATE_DIR
    unit: str = "sat"
    mints: tuple[str, ...] = ()
    routes: tuple[RouteRule, ...] = ()
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    mint_timeout_seconds: float = 1.0
    retry_after_seconds: int = 5
    drain_seconds: float = 5.0
    flush_interval_seconds: float = 1.0
    log_level: str = "INFO"
    event_loop: str = "auto"
    metrics_listen: str | None = None
    dry_run: bool = False
    tiers: tuple[Tier, ...] = ()
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)

    @property
    def database_path(self) -> Path:
        return Path(self.state_dir) / "paygress.db"


_SECRET_KEYS = {"mnemonic", "seed", "seed_words", "private_key"}
_TOP_KEYS = {
    "listen",
    "state_dir",
    "unit",
    "mints",
    "routes",
    "limits",
    "mint_timeout_seconds",
    "retry_after_seconds",
    "drain_seconds",
    "flush_interval_seconds",
    "log_level",
    "event_loop",
    "metrics",
    "dry_run",
    "tiers",
    "kubernetes",
}
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
_KUBE_KEYS = {
    "namespace",
    "kubeconfig",
    "reaper_interval_seconds",
    "grace_seconds",
    "status_path",
    "offers_path",
}
_MATCH_KEYS = {"hosts", "path_prefix", "path_regex", "methods"}


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
    """Validates a config mapping; every error names the key that is wrong."""
    env = {} if env is None else env
    secrets = _SECRET_KEYS & set(raw)
    if secrets:
        raise ConfigError(
            f"{sorted(secrets)[0]}: secrets do not belong in the config file; "
            "set PAYGRESS_MNEMONIC or PAYGRESS_MNEMONIC_FILE instead"
        )
    _no_unknown(raw, _TOP_KEYS, "")
    listen_raw = _mapping(raw.get("listen", {}), "listen")
    _no_unknown(listen_raw, {"socket", "socket_mode", "tcp", "http"}, "listen.")
    socket = env.get("PAYGRESS_SOCKET", listen_raw.get("socket", DEFAULT_SOCKET))
    tcp = env.get("PAYGRESS_TCP", listen_raw.get("tcp"))
    http = env.get("PAYGRESS_HTTP", listen_raw.get("http"))
    mode_raw = env.get("PAYGRESS_SOCKET_MODE", listen_raw.get("socket_mode", "0660"))
    listen = ListenConfig(
        socket=_str(socket, "listen.socket"),
        socket_mode=_file_mode(mode_raw, "listen.socket_mode"),
        tcp=_tcp(tcp, "listen.tcp") if tcp else None,
        http=_tcp(http, "listen.http") if http else None,
    )
    metrics_raw = _mapping(raw.get("metrics", {}), "metrics")
    _no_unknown(metrics_raw, {"listen"}, "metrics.")
    metrics_listen = env.get("PAYGRESS_METRICS", metrics_raw.get("listen"))
    dry_run = env.get("PAYGRESS_DRY_RUN", raw.get("dry_run", False))
    if isinstance(dry_run, str):
        dry_run = dry_run.strip().lower() in ("1", "true", "yes", "on")
    if not isinstance(dry_run, bool):
        raise ConfigError("dry_run: must be true or false")
    unit = _str(raw.get("unit", "sat"), "unit")
    mints_raw: Any = raw.get("mints", [])
    if "PAYGRESS_MINTS" in env:
        mints_raw = [m for m in env["PAYGRESS_MINTS"].split(",") if m.strip()]
    if not isinstance(mints_raw, list):
        raise ConfigError("mints: must be a list of mint URLs")
    mints = tuple(_mint(m, f"mints[{i}]") for i, m in enumerate(mints_raw))
    tiers_raw = raw.get("tiers", [])
    if not isinstance(tiers_raw, list):
        raise ConfigError("tiers: must be a list")
    tiers = tuple(_tier(t, i) for i, t in enumerate(tiers_raw))
    tier_ids = [t.id for t in tiers]
    if len(set(tier_ids)) != len(tier_ids):
        raise ConfigError("tiers: duplicate tier id")
    routes_raw = raw.get("routes", [])
    if not isinstance(routes_raw, list):
        raise ConfigError("routes: must be a list")
    routes = tuple(_route(r, i, unit, {t.id: t for t in tiers}) for i, r in enumerate(routes_raw))
    names = [r.name for r in routes]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(f"routes: duplicate route name {sorted(dupes)[0]!r}")
    if routes and not mints:
        raise ConfigError("mints: priced routes need at least one accepted mint")
    kube_raw = _mapping(raw.get("kubernetes", {}), "kubernetes")
    _no_unknown(kube_raw, _KUBE_KEYS, "kubernetes.")
    kube = KubernetesConfig(
        namespace=_dns_label(
            env.get("PAYGRESS_NAMESPACE", kube_raw.get("namespace", "default")),
            "kubernetes.namespace",
        ),
        kubeconfig=env.get("PAYGRESS_KUBECONFIG", kube_raw.get("kubeconfig")),
        reaper_interval_seconds=_float(
            kube_raw.get("reaper_interval_seconds", 5.0), "kubernetes.reaper_interval_seconds"
        ),
        grace_seconds=_int(kube_raw.get("grace_seconds", 30), "kubernetes.grace_seconds"),
        status_path=_str(
            kube_raw.get("status_path", "/.well-known/paygress/pods/"), "kubernetes.status_path"
        ),
        offers_path=_str(
            kube_raw.get("offers_path", "/.well-known/paygress/offers"), "kubernetes.offers_path"
        ),
    )
    limits_raw = _mapping(raw.get("limits", {}), "limits")
    _no_unknown(limits_raw, {"max_token_bytes", "max_proofs"}, "limits.")
    limits = LimitsConfig(
        max_token_bytes=_int(limits_raw.get("max_token_bytes", 8192), "limits.max_token_bytes", 64),
        max_proofs=_int(limits_raw.get("max_proofs", 64), "limits.max_proofs", 1),
    )
    return Config(
        listen=listen,
        state_dir=_str(
            env.get("PAYGRESS_STATE_DIR", raw.get("state_dir", DEFAULT_STATE_DIR)), "state_dir"
        ),
        unit=unit,
        mints=mints,
        routes=routes,
        limits=limits,
        mint_timeout_seconds=_float(raw.get("mint_timeout_seconds", 1.0), "mint_timeout_seconds"),
        retry_after_seconds=_int(raw.get("retry_after_seconds", 5), "retry_after_seconds", 1),
        drain_seconds=_float(
            env.get("PAYGRESS_DRAIN_SECONDS", raw.get("drain_seconds", 5.0)), "drain_seconds"
        ),
        flush_interval_seconds=_float(
            raw.get("flush_interval_seconds", 1.0), "flush_interval_seconds"
        ),
        log_level=_str(
            env.get("PAYGRESS_LOG_LEVEL", raw.get("log_level", "INFO")), "log_level"
        ).upper(),
        event_loop=_choice(
            env.get("PAYGRESS_EVENT_LOOP", raw.get("event_loop", "auto")), "event_loop", CHOICES
        ),
        metrics_listen=_tcp(metrics_listen, "metrics.listen") if metrics_listen else None,
        dry_run=dry_run,
        tiers=tiers,
        kubernetes=kube,
    )


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
    match = _mapping(raw.get("match", {}), f"{where}.match")
    _no_unknown(match, _MATCH_KEYS, f"{where}.match.")
    regex = match.get("path_regex")
    if regex is not None:
        try:
            re.compile(_str(regex, f"{where}.match.path_regex"))
        except re.error as exc:
            raise ConfigError(f"{where}.match.path_regex: invalid regex: {exc}") from exc
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
            hosts=tuple(
                h.lower() for h in _str_list(match.get("hosts", []), f"{where}.match.hosts")
            ),
            path_prefix=(
                _str(match["path_prefix"], f"{where}.match.path_prefix")
                if "path_prefix" in match
                else None
            ),
            path_regex=regex,
            methods=tuple(
                m.upper() for m in _str_list(match.get("methods", []), f"{where}.match.methods")
            ),
            price=tier.min_payment,
            mode=Mode.POD,
            description=_str(raw.get("description", ""), f"{where}.description", empty_ok=True),
            tier=tier,
        )
    if "price" not in raw:
        raise ConfigError(f"{where}.price: required (amount in {unit}), or name a tier")
    return RouteRule(
        name=name,
        hosts=tuple(h.lower() for h in _str_list(match.get("hosts", []), f"{where}.match.hosts")),
        path_prefix=_str(match["path_prefix"], f"{where}.match.path_prefix")
        if "path_prefix" in match
        else None,
        path_regex=regex,
        methods=tuple(
            m.upper() for m in _str_list(match.get("methods", []), f"{where}.match.methods")
        ),
        price=_int(raw["price"], f"{where}.price", 1),
        mode=mode,
        grants=_int(raw.get("grants", 1), f"{where}.grants", 1),
        description=_str(raw.get("description", ""), f"{where}.description", empty_ok=True),
    )


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


def _tcp(value: Any, where: str) -> str:
    text = _str(value, where)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{where}: must be host:port, e.g. 127.0.0.1:9001 (port 0: any free)")
    return text


def _mint(value: Any, where: str) -> str:
    text = _str(value, where)
    try:
        return normalize_mint_url(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
