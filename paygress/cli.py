"""The `paygress` command: serve, operator wallet, mnemonic."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

import grpc

from paygress import __version__
from paygress.config import DEFAULT_ADMIN_SOCKET


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paygress", description="Pay-per-use ingress: an Envoy ext_authz service for Cashu."
    )
    parser.add_argument("--version", action="version", version=f"paygress {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the ext_authz gRPC service")
    serve.add_argument("--config", help="YAML config file (default: $PAYGRESS_CONFIG)")
    serve.add_argument(
        "--workers",
        type=int,
        help="worker processes on this node (default: `workers` of the config, 1); more than "
        "one needs the redis store",
    )
    serve.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the supervisor
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check-config", help="validate a config file and print a summary")
    check.add_argument("--config", help="YAML config file (default: $PAYGRESS_CONFIG)")
    check.set_defaults(func=_check_config)

    mnemonic = sub.add_parser("mnemonic", help="print a new BIP39 mnemonic for the wallet seed")
    mnemonic.set_defaults(func=_mnemonic)

    wallet = sub.add_parser("wallet", help="the operator wallet (talks to the running server)")
    wallet.add_argument(
        "--config",
        help="the server's YAML config file, to find its admin socket (default: $PAYGRESS_CONFIG)",
    )
    wallet.add_argument(
        "--socket",
        help="the server's admin socket (default: listen.admin_socket of the config, "
        f"$PAYGRESS_ADMIN_SOCKET, or {DEFAULT_ADMIN_SOCKET})",
    )
    wsub = wallet.add_subparsers(metavar="ACTION")
    balance = wsub.add_parser("balance", help="spendable and pending ecash per mint")
    balance.set_defaults(func=_balance)
    withdraw = wsub.add_parser("withdraw", help="take earnings out as a Cashu token")
    withdraw.add_argument("amount", type=int)
    withdraw.add_argument("--mint", help="mint to pay out from (needed with several)")
    withdraw.set_defaults(func=_withdraw)
    restore = wsub.add_parser(
        "restore", help="recover the seed's ecash from the mints (e.g. after losing the database)"
    )
    restore.add_argument("--mint", help="only this accepted mint")
    restore.set_defaults(func=_restore)
    return parser


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


def _check_config(args: argparse.Namespace) -> int:
    from paygress.config import ConfigError, load_config
    from paygress.event_loop import EventLoopUnavailable, loop_factory

    try:
        config = load_config(args.config)
        loop, _ = loop_factory(config.event_loop)
    except (ConfigError, EventLoopUnavailable) as exc:
        print(f"paygress: config error: {exc}", file=sys.stderr)
        return 2
    print(f"socket: {config.listen.socket} (mode {config.listen.socket_mode:04o})")
    print(f"event loop: {loop} (event_loop: {config.event_loop})")
    print(f"tcp: {config.listen.tcp or 'off'}")
    print(f"mints: {', '.join(config.mints) or 'none'}")
    for rule in config.routes:
        print(f"route {rule.name}: {rule.describe(config.unit)} ({rule.mode.value})")
    return 0


def _mnemonic(args: argparse.Namespace) -> int:
    from paygress.cashu.nut13 import Seed

    print(Seed.generate_mnemonic())
    return 0


def _admin_socket(args: argparse.Namespace) -> str | None:
    """--socket, else the admin socket of the config (file and env), else the default."""
    if args.socket:
        return str(args.socket)
    from paygress.config import ConfigError, load_config

    try:
        return load_config(args.config).listen.admin_socket
    except ConfigError as exc:
        print(f"paygress: config error: {exc}", file=sys.stderr)
        return None


def _call(args: argparse.Namespace, method: str, request: object) -> Any:
    """Calls a WalletAdmin method on the server's admin socket; prints the error and returns
    None."""
    from paygress.v1 import admin_pb2_grpc

    socket = _admin_socket(args)
    if socket is None:
        return None
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stub: Any = admin_pb2_grpc.WalletAdminStub(channel)  # type: ignore[no-untyped-call]
        try:
            return getattr(stub, method)(request, timeout=60)
        except grpc.RpcError as exc:
            code = exc.code()
            detail = exc.details()
            if code is grpc.StatusCode.UNAVAILABLE:
                detail = f"no server at {socket} ({detail}); is `paygress serve` running?"
            print(f"paygress: {detail}", file=sys.stderr)
            return None


def _balance(args: argparse.Namespace) -> int:
    from paygress.v1 import admin_pb2

    response = _call(args, "Balance", admin_pb2.BalanceRequest())
    if response is None:
        return 1
    balances = response.balances
    if not balances:
        print("the wallet is empty")
    for b in balances:
        print(f"{b.mint}  {b.spendable} {b.unit} spendable  {b.pending} {b.unit} pending")
    return 0


def _withdraw(args: argparse.Namespace) -> int:
    from paygress.v1 import admin_pb2

    if args.amount <= 0:
        print("paygress: amount must be positive", file=sys.stderr)
        return 2
    request = admin_pb2.WithdrawRequest(amount=args.amount, mint=args.mint or "")
    response = _call(args, "Withdraw", request)
    if response is None:
        return 1
    print(f"withdrawal {response.withdrawal_id}: {response.amount}", file=sys.stderr)
    print(response.token)
    return 0


def _restore(args: argparse.Namespace) -> int:
    from paygress.v1 import admin_pb2

    response = _call(args, "Restore", admin_pb2.RestoreRequest(mint=args.mint or ""))
    if response is None:
        return 1
    print(f"restored {response.proofs} proofs worth {response.amount}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
