"""The `paygress` command: serve, check-config, health, the operator wallet, mnemonic."""

from __future__ import annotations

import argparse
import asyncio
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import grpc

from paygress import __version__
from paygress.config import ENV_OVERRIDES, Config

if TYPE_CHECKING:
    from paygress.core.pricing import RouteRule

CONFIG_HELP = (
    "the YAML config file (default: $PAYGRESS_CONFIG; without either: the defaults, "
    "changed by the environment)"
)
# The ext_authz timeout of deploy/envoy/envoy.yaml (and of the chart's Istio provider).
PROXY_TIMEOUT_SECONDS = 3.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result: int = args.func(args)
        return result
    except KeyboardInterrupt:
        return 130


class _Formatter(argparse.HelpFormatter):
    """Wraps descriptions, keeps tables (lines indented by two spaces) as they are written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n  " in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paygress", description="Pay-per-use ingress: an Envoy ext_authz service for Cashu."
    )
    parser.add_argument("--version", action="version", version=f"paygress {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    serve = _config_command(
        sub,
        "serve",
        _serve,
        help="run the ext_authz gRPC service",
        description="Runs Paygress: ext_authz, health and reflection on listen.socket (and "
        "listen.tcp), the wallet admin on listen.admin_socket, forward-auth on listen.http, "
        "metrics on metrics.listen. SIGTERM drains and stops it.",
    )
    serve.add_argument(
        "--workers",
        type=int,
        help="worker processes on this node (default: `workers` of the config, 1); more than "
        "one needs the redis store",
    )
    serve.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the supervisor
    _config_command(
        sub,
        "check-config",
        _check_config,
        help="validate a config file and print what it sets up",
        description="Validates the config (file and environment, as `serve` reads them) and "
        "prints every listener, the state directory, the mints, the payment settings and the "
        "routes; warns about a config that would sell nothing. Exit 2 when it is invalid.",
    )

    health = sub.add_parser(
        "health",
        help="ask a running server whether it serves (grpc.health.v1)",
        description="Asks grpc.health.v1 on the server's ext_authz socket; prints SERVING or "
        "NOT_SERVING. Exit 0 only when serving (usable as a readiness probe).",
    )
    _socket_arguments(health, "socket", "ext_authz socket")
    health.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=2.0,
        help="how long to wait for the answer, in seconds (default: 2)",
    )
    health.set_defaults(func=_health)

    mnemonic = sub.add_parser(
        "mnemonic",
        help="print a new BIP39 mnemonic for the wallet seed",
        description="Prints 12 new BIP39 words. Keep them offline: they alone restore every "
        "sat received. `serve` reads them from $PAYGRESS_MNEMONIC or $PAYGRESS_MNEMONIC_FILE.",
    )
    mnemonic.set_defaults(func=_mnemonic)

    pubkey = sub.add_parser(
        "pubkey",
        help="print the operator's lock key (NUT-11 P2PK), derived from the wallet seed of "
        "$PAYGRESS_MNEMONIC or $PAYGRESS_MNEMONIC_FILE",
        description="Prints the public key that tokens locked to the operator are locked to "
        "(what the 402's NUT-18 request asks for, offline.accept_locked), derived from the "
        "seed of $PAYGRESS_MNEMONIC or $PAYGRESS_MNEMONIC_FILE.",
    )
    pubkey.set_defaults(func=_pubkey)

    jwks = sub.add_parser(
        "jwks",
        help="print the JWK Set that verifies paid sessions (for Envoy's jwt_authn, Istio's "
        "RequestAuthentication), derived from the wallet seed of $PAYGRESS_MNEMONIC or "
        "$PAYGRESS_MNEMONIC_FILE",
    )
    jwks.add_argument(
        "--generation",
        type=int,
        action="append",
        metavar="N",
        help="a key generation to include (sessions.key_generation; repeat it during a "
        "rotation); default 0",
    )
    jwks.set_defaults(func=_jwks)

    wallet = sub.add_parser(
        "wallet",
        help="the operator wallet (talks to the running server)",
        description="The operator wallet, through the running server's admin socket "
        "(listen.admin_socket): the server stays the only writer of the wallet.",
    )
    _socket_arguments(wallet, "admin_socket", "admin socket")
    wsub = wallet.add_subparsers(metavar="ACTION")
    balance = wsub.add_parser("balance", help="spendable and pending ecash per mint")
    balance.set_defaults(func=_balance)
    withdraw = wsub.add_parser(
        "withdraw",
        help="take earnings out as a Cashu token (printed on stdout)",
        description="Prints a Cashu token worth AMOUNT on stdout (receive it with any Cashu "
        "wallet); its proofs stay pending until the mint reports them spent.",
    )
    withdraw.add_argument(
        "amount",
        metavar="AMOUNT",
        type=int,
        help="how much to take out, in the wallet's unit (the config's `unit`, sat by default)",
    )
    withdraw.add_argument(
        "--mint",
        metavar="URL",
        help="the accepted mint to pay out from (needed when the wallet holds ecash of several)",
    )
    withdraw.set_defaults(func=_withdraw)
    restore = wsub.add_parser(
        "restore", help="recover the seed's ecash from the mints (e.g. after losing the database)"
    )
    restore.add_argument("--mint", metavar="URL", help="only this accepted mint (default: all)")
    restore.set_defaults(func=_restore)
    return parser


def _config_command(
    sub: Any, name: str, func: Any, *, help: str, description: str
) -> argparse.ArgumentParser:
    """A command that reads the config as `serve` does; its help lists the environment."""
    command: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=environment_help(),
        formatter_class=_Formatter,
    )
    command.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    command.set_defaults(func=func)
    return command


def _variable(key: str) -> str:
    """The environment variable that replaces a config key."""
    return next(var for var, path in ENV_OVERRIDES.items() if path == key)


def _socket_arguments(parser: argparse.ArgumentParser, key: str, what: str) -> None:
    """--config and --socket of a command that talks to the server on listen.<key>."""
    variable = _variable(f"listen.{key}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"the server's config, to find listen.{key} (default: $PAYGRESS_CONFIG)",
    )
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help=f"the server's {what} (default: listen.{key} of the config, ${variable}, or "
        f"{getattr(Config().listen, key)})",
    )


def environment_help() -> str:
    """The environment variables `serve` reads: the seed's and, from the one table
    `paygress.config.ENV_OVERRIDES`, those that override a key of the config file."""
    own = [
        ("PAYGRESS_CONFIG", "the config file, when --config is not given"),
        ("PAYGRESS_MNEMONIC", "the wallet seed's words (never in the config file)"),
        ("PAYGRESS_MNEMONIC_FILE", "a file holding them (when PAYGRESS_MNEMONIC is unset)"),
    ]
    keys = [(var, _key_help(path)) for var, path in ENV_OVERRIDES.items()]
    width = max(len(var) for var, _ in own + keys)

    def table(rows: list[tuple[str, str]]) -> str:
        return "\n".join(f"  {var:<{width}}  {text}" for var, text in rows)

    return (
        f"environment:\n{table(own)}\n"
        f"and each of these replaces the config key it names:\n{table(keys)}"
    )


def _key_help(path: str) -> str:
    """'listen.tcp (default: off)': a config key with its default, as config.py states it."""
    cls: Any = Config
    *sections, leaf = path.split(".")
    for name in sections:
        cls = next(f for f in fields(cls) if f.name == name).metadata["section"]
    default = next(f for f in fields(cls) if f.name == leaf).default
    if isinstance(default, tuple):
        return f"{path}, comma-separated (default: {', '.join(default) or 'none'})"
    if default is None:
        shown = "off"
    elif isinstance(default, bool):
        shown = str(default).lower()
    elif leaf.endswith("_mode") and isinstance(default, int):
        shown = f"{default:04o}"
    else:
        shown = str(default)
    return f"{path} (default: {shown})"


def _serve(args: argparse.Namespace) -> int:
    from paygress.config import ConfigError, load_config, load_mnemonic
    from paygress.event_loop import EventLoopUnavailable, loop_factory
    from paygress.logs import setup_logging
    from paygress.server import StartupError, serve
    from paygress.workers import Supervisor, worker_config

    if args.workers is not None:
        os.environ["PAYGRESS_WORKERS"] = str(args.workers)  # checked like the key; inherited
    try:
        config = load_config(args.config)
        mnemonic = load_mnemonic()
        _, factory = loop_factory(config.event_loop)
    except (ConfigError, EventLoopUnavailable) as exc:
        print(f"paygress: config error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level)
    if config.workers > 1 and args.worker is None:
        argv = [sys.executable, "-m", "paygress.cli", "serve"]
        argv += ["--config", args.config] if args.config else []
        return asyncio.run(Supervisor(argv, config.workers).run())
    if args.worker is not None:
        config = worker_config(config, args.worker)
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve(config, mnemonic))
    except StartupError as exc:
        print(f"paygress: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


# -- check-config ------------------------------------------------------------------------------


def _check_config(args: argparse.Namespace) -> int:
    from paygress.config import ConfigError, load_config
    from paygress.event_loop import EventLoopUnavailable, loop_factory

    try:
        config = load_config(args.config)
        loop, _ = loop_factory(config.event_loop)
    except (ConfigError, EventLoopUnavailable) as exc:
        print(f"paygress: config error: {exc}", file=sys.stderr)
        return 2
    source = args.config or os.environ.get("PAYGRESS_CONFIG")
    print(f"config: {source or 'no file (the defaults and the environment)'}")
    overrides = [f"{var} ({path})" for var, path in ENV_OVERRIDES.items() if var in os.environ]
    if overrides:
        print(f"from the environment: {', '.join(overrides)}")
    for line in config_summary(config, loop):
        print(line)
    for warning in config_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _store_line(config: Config) -> str:
    """Where grants and the wallet live (never the Redis password: it is not in the config)."""
    store = config.store
    if store.backend == "redis":
        return (
            f"store: redis {store.url} (keys {store.prefix}:*; on outage: {store.on_outage}; "
            f"up to {store.lease_requests} requests leased per grant)"
        )
    return f"store: sqlite {config.database_path} (one process)"


def config_summary(config: Config, loop: str) -> list[str]:
    """What a config sets up, one line per fact, in the words of the README."""
    listen, payments = config.listen, config.payments
    budget = payments.unproven_swaps
    lines = [
        f"socket: {listen.socket} (mode {listen.socket_mode:04o}): ext_authz, health, reflection",
        f"admin socket: {listen.admin_socket} (mode {listen.admin_socket_mode:04o}): "
        "the wallet admin",
        f"tcp: {listen.tcp + ': ext_authz, health' if listen.tcp else 'off'}",
        "http: "
        + (
            f"{listen.http}: forward-auth for NGINX and Traefik "
            f"({listen.http_trusted_hops} trusted proxy hop(s) in X-Forwarded-For)"
            if listen.http
            else "off"
        ),
        f"metrics: {f'http://{config.metrics_listen}/metrics' if config.metrics_listen else 'off'}",
        f"state_dir: {config.state_dir}",
        _store_line(config),
        f"workers: {config.workers} on this node",
        "dry run: "
        + (
            "ON: every request is let through; decisions are only recorded"
            if config.dry_run
            else "off"
        ),
        f"event loop: {loop} (event_loop: {config.event_loop})",
        f"log level: {config.log_level}",
        f"unit: {config.unit}",
        f"mints: {', '.join(config.mints) or 'none'}",
        f"mint timeout: {config.mint_timeout_seconds:g} s per call",
        f"payments: a check waits {payments.timeout_seconds:g} s for a swap (then 503 "
        f"payment_pending); DLEQ proofs {'required' if payments.require_dleq else 'optional'}",
        "unproven swaps: "
        f"{budget.per_mint_per_minute:g}/min per mint (burst {budget.per_mint_burst}), "
        f"{budget.per_client_per_minute:g}/min per client (burst {budget.per_client_burst})",
        _offline_line(config),
        f"limits: tokens up to {config.limits.max_token_bytes} bytes and "
        f"{config.limits.max_proofs} proofs",
    ]
    lines += [_route_line(rule, config.unit) for rule in config.routes]
    if not config.routes:
        lines.append("routes: none (every request is free)")
    free = config.free_clients
    if free.clients:
        lines.append(f"free clients: {len(free.clients)} (api key header: {free.api_key_header})")
    lines += [f"free client {c.name}: {c.describe()}" for c in free.clients]
    if config.tiers:
        kube = config.kubernetes
        lines.append(
            f"kubernetes: pods in namespace {kube.namespace}, "
            f"{f'kubeconfig {kube.kubeconfig}' if kube.kubeconfig else 'in-cluster credentials'}"
        )
    return lines


def _offline_line(config: Config) -> str:
    offline = config.offline
    if not offline.accept_locked:
        return "offline: off (tokens locked to the operator are swapped at once)"
    return (
        f"offline: locked tokens pass without a mint call (queue {offline.max_queue} proofs, "
        f"batches of {offline.batch_proofs} every {offline.interval_seconds:g} s)"
    )


def _route_line(rule: RouteRule, unit: str) -> str:
    match = [
        f"hosts {', '.join(rule.hosts)}" if rule.hosts else "",
        f"path_prefix {rule.path_prefix}" if rule.path_prefix else "",
        f"path_regex {rule.path_regex}" if rule.path_regex else "",
        f"methods {', '.join(rule.methods)}" if rule.methods else "",
    ]
    where = "; ".join(m for m in match if m) or "every request"
    return f"route {rule.name}: {rule.describe(unit)} ({rule.mode.value}), matching {where}"


def config_warnings(config: Config) -> list[str]:
    """What is valid but probably not meant."""
    found = []
    if not config.routes:
        found.append(
            "no route is priced: every request passes for free (add `routes:` with a price "
            "or a tier)"
        )
    if not config.mints:
        found.append("no mint is listed: no payment can be accepted (add `mints:`)")
    if config.dry_run:
        found.append("dry_run is on: Paygress lets every request through, paid or not")
    if config.payments.timeout_seconds >= PROXY_TIMEOUT_SECONDS:
        found.append(
            f"payments.timeout_seconds is {config.payments.timeout_seconds:g}: keep it below "
            f"the proxy's ext_authz timeout ({PROXY_TIMEOUT_SECONDS:g} s in "
            "deploy/envoy/envoy.yaml), or the proxy answers before Paygress can"
        )
    for mint in config.mints:
        if mint.startswith("http://") and not _loopback(mint):
            found.append(
                f"mint {mint} is plain http: tokens sent to it can be read on the way "
                "and spent by someone else"
            )
    return found


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "localhost" or host == "::1" or host.startswith("127.")


# -- health ------------------------------------------------------------------------------------


def _health(args: argparse.Namespace) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = _socket(args, "socket")
    if target is None:
        return 2
    with grpc.insecure_channel(f"unix:{target.path}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(), timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"paygress: {_rpc_error(exc, target)}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


# -- wallet ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """A server's socket, and where its path came from (for error messages)."""

    path: str
    origin: str
    config: Config | None = None


def _socket(args: argparse.Namespace, key: str) -> Target | None:
    """--socket, else listen.<key> of the config (file and environment), else its default;
    prints the config error and returns None."""
    from paygress.config import ConfigError, load_config

    file = args.config or os.environ.get("PAYGRESS_CONFIG")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"paygress: config error: {exc}", file=sys.stderr)
        return None
    server_config = config if file else None
    if args.socket:
        return Target(str(args.socket), "--socket", server_config)
    variable = _variable(f"listen.{key}")
    path: str = getattr(config.listen, key)
    if variable in os.environ:
        origin = f"${variable}"
    elif file and path != getattr(Config().listen, key):
        origin = f"listen.{key} of {file}"
    elif file:
        origin = f"the default: {file} sets no listen.{key}"
    else:
        origin = "the default: no --config or $PAYGRESS_CONFIG given"
    return Target(path, origin, server_config)


def _rpc_error(exc: grpc.RpcError, target: Target) -> str:
    code, detail = exc.code(), exc.details()
    if code is grpc.StatusCode.UNAVAILABLE:
        if not os.path.exists(target.path):
            detail = "no such file"
        elif not stat.S_ISSOCK(os.stat(target.path).st_mode):
            detail = "not a socket"
        hint = ""
        if target.origin.startswith("the default"):
            hint = (
                " Name the server's config with --config FILE (or $PAYGRESS_CONFIG), "
                "or its socket with --socket PATH."
            )
        return (
            f"no server at {target.path} ({target.origin}; {detail}): "
            f"is `paygress serve` running?{hint}"
        )
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return (
            f"{target.path} does not serve this ({detail}): is it the proxy's socket "
            "(listen.socket)? The wallet admin is on listen.admin_socket."
        )
    return str(detail)


def _call(target: Target, method: str, request: object) -> Any:
    """Calls a WalletAdmin method on the server's admin socket; prints the error and returns
    None."""
    from paygress.v1 import admin_pb2_grpc

    with grpc.insecure_channel(f"unix:{target.path}") as channel:
        stub: Any = admin_pb2_grpc.WalletAdminStub(channel)  # type: ignore[no-untyped-call]
        try:
            return getattr(stub, method)(request, timeout=60)
        except grpc.RpcError as exc:
            print(f"paygress: {_rpc_error(exc, target)}", file=sys.stderr)
            return None


def _balance(args: argparse.Namespace) -> int:
    from paygress.v1 import admin_pb2

    target = _socket(args, "admin_socket")
    response = None if target is None else _call(target, "Balance", admin_pb2.BalanceRequest())
    if response is None:
        return 1
    balances = response.balances
    if not balances:
        print("the wallet is empty")
    for b in balances:
        print(f"{b.mint}  {b.spendable} {b.unit} spendable  {b.pending} {b.unit} pending")
    return 0


def _withdraw(args: argparse.Namespace) -> int:
    from paygress.cashu.token import parse_token
    from paygress.core.pricing import normalize_mint_url
    from paygress.v1 import admin_pb2

    if args.amount <= 0:
        print("paygress: amount must be positive", file=sys.stderr)
        return 2
    target = _socket(args, "admin_socket")
    if target is None:
        return 1
    if args.mint and target.config is not None:
        try:
            mint = normalize_mint_url(args.mint)
        except ValueError as exc:
            print(f"paygress: --mint: {exc}", file=sys.stderr)
            return 2
        if mint not in target.config.mints:
            accepted = ", ".join(target.config.mints) or "none"
            print(
                f"paygress: {mint} is not an accepted mint (accepted: {accepted})", file=sys.stderr
            )
            return 2
    request = admin_pb2.WithdrawRequest(amount=args.amount, mint=args.mint or "")
    response = _call(target, "Withdraw", request)
    if response is None:
        return 1
    token = parse_token(response.token, max_bytes=len(response.token), max_proofs=1 << 20)
    left = _call(target, "Balance", admin_pb2.BalanceRequest())
    rest = [
        b.spendable for b in (left.balances if left is not None else ()) if b.mint == token.mint
    ]
    there = f"; {rest[0]} {token.unit} left there" if rest else ""
    print(
        f"withdrawal {response.withdrawal_id}: {response.amount} {token.unit} "
        f"from {token.mint}{there}",
        file=sys.stderr,
    )
    print(response.token)
    return 0


def _restore(args: argparse.Namespace) -> int:
    from paygress.v1 import admin_pb2

    target = _socket(args, "admin_socket")
    request = admin_pb2.RestoreRequest(mint=args.mint or "")
    response = None if target is None else _call(target, "Restore", request)
    if response is None:
        return 1
    print(f"restored {response.proofs} proofs worth {response.amount}")
    return 0


def _pubkey(args: argparse.Namespace) -> int:
    from paygress.cashu.nut13 import Seed
    from paygress.config import ConfigError, load_mnemonic
    from paygress.wallet.locks import lock_pubkey

    try:
        seed = Seed.from_mnemonic(load_mnemonic())
    except (ConfigError, ValueError) as exc:
        print(f"paygress: {exc}", file=sys.stderr)
        return 2
    print(lock_pubkey(seed))
    return 0


def _jwks(args: argparse.Namespace) -> int:
    import json

    from paygress.cashu.nut13 import Seed
    from paygress.config import ConfigError, load_mnemonic
    from paygress.sessions import jwks

    generations = args.generation or [0]
    if any(g < 0 for g in generations):
        print("paygress: a key generation is a number >= 0", file=sys.stderr)
        return 2
    try:
        seed = Seed.from_mnemonic(load_mnemonic())
    except (ConfigError, ValueError) as exc:
        print(f"paygress: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(jwks(seed, dict.fromkeys(generations)), separators=(",", ":")))
    return 0


def _mnemonic(args: argparse.Namespace) -> int:
    from paygress.cashu.nut13 import Seed

    print(Seed.generate_mnemonic())
    return 0


if __name__ == "__main__":
    sys.exit(main())
