"""Scaling out, measured through real Envoy (in the style of bench/ext_authz.py):

1. Head to head, the Redis store against SQLite: two Paygress processes (one per store), each
   behind its own Envoy, loaded at once while their servers share one core, so the req/s ratio
   is the ratio of CPU cost per check. Pairs:
     dr/ds  cached paid check, a time grant (per_second): Redis vs SQLite (target >= 0.9)
     rr/rs  cached paid check, a per_request grant (leases: a store call per block):
            Redis vs SQLite
     ds/b, dr/b  each against an empty grpc.aio handler (README's d/b)
     ds/d0  with --before REV: this tree against REV (git archive), both on SQLite: what
            the change costs the cached paid check
     b/b2   the control: two identical empty servers
2. Workers: one Paygress with `workers: 1` and one with `workers: 2` on Redis, each behind an
   Envoy whose cluster lists its worker sockets, loaded alone for --seconds (rounds rotated):
   req/s and p99 with every process free to use both cores (Envoy and wrk included), and, for
   one worker pinned to a core of its own (Envoy and wrk on the other), the capacity of one
   worker, in req/s and CPU µs per check.

    .venv/bin/python -m bench.scaling [--h2h-seconds 4] [--h2h-rounds 4] [--seconds 8]
                                      [--rounds 3] [--before REV]
Needs `wrk` (Debian package; installed on demand when running as root) and `redis-server`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench.ext_authz import (
    PAID_ROUTE,
    EmptyAuthz,
    Result,
    Scenario,
    direct_response,
    ensure_wrk,
    head_to_head,
    load_arguments,
    pin,
    print_ratios,
)
from tests.integration.test_replicas import balance_over
from tests.peers.envoy import EnvoyProxy
from tests.peers.mint import NutshellMint
from tests.peers.paygress import PaygressProcess
from tests.peers.redis import RedisServer
from tests.peers.wallet import CashuWallet

MNEMONIC = "half depart obvious quality work element tank gorilla view sugar picture humble"
COUNTED_ROUTE = {
    "name": "counted",
    "match": {"path_prefix": "/counted"},
    "mode": "per_request",
    "price": 1,
    "grants": 1,
}
PAIRS = (("b", "b2"), ("dr", "ds"), ("rr", "rs"), ("ds", "b"), ("dr", "b"))
NOTES = {
    ("b", "b2"): "control: two identical empty servers",
    ("dr", "ds"): "cached paid (time grant): Redis vs SQLite (target >= 0.9)",
    ("rr", "rs"): "cached paid (per_request, leases): Redis vs SQLite",
    ("ds", "b"): "SQLite Paygress vs empty handler (README's d/b)",
    ("dr", "b"): "Redis Paygress vs empty handler",
    ("ds", "d0"): "this tree vs --before, SQLite, cached paid (time grant)",
}
ROOT = Path(__file__).resolve().parent.parent


def checkout(rev: str, into: Path) -> Path:
    """The tree of `rev` (git archive: the repository is not touched), with this tree's
    generated stubs; run with PYTHONPATH pointing at it."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    shutil.copytree(ROOT / "paygress" / "v1", into / "paygress" / "v1", dirs_exist_ok=True)
    return into


async def main(args: argparse.Namespace) -> None:
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="paygress-scaling-") as tmp:
        work = Path(tmp)
        mint = await NutshellMint(work / "mint").start()
        wallet = await CashuWallet(work / "wallet").start()
        redis = await RedisServer(work / "redis-server").start()
        routes = [PAID_ROUTE, COUNTED_ROUTE]
        base: dict[str, Any] = {"mints": [mint.url], "log_level": "WARNING", "routes": routes}
        redis_store = {"backend": "redis", "url": redis.url}
        paygress = {
            "sqlite": {**base, "state_dir": str(work / "sqlite" / "state")},
            "redis": {**base, "store": {**redis_store, "prefix": "h2h"}},
            "w1": {**base, "store": {**redis_store, "prefix": "w1"}},
            "w2": {**base, "store": {**redis_store, "prefix": "w2"}, "workers": 2},
        }
        servers: dict[str, EmptyAuthz | PaygressProcess] = {
            "empty": await EmptyAuthz(work / "empty").start(),
            "empty2": await EmptyAuthz(work / "empty2").start(),
        }
        for name, config in paygress.items():
            servers[name] = await PaygressProcess(config, MNEMONIC, work / name).start()
        pairs: tuple[tuple[str, str], ...] = PAIRS
        if args.before:
            tree = checkout(args.before, work / "before-tree")
            config = {**base, "state_dir": str(work / "before" / "state")}
            servers["before"] = await PaygressProcess(
                config,
                MNEMONIC,
                work / "before",
                command=[sys.executable, "-m", "paygress.cli"],
                extra_env={"PYTHONPATH": str(tree)},
            ).start()
            pairs = (*PAIRS, ("ds", "d0"))
        nowhere = ("127.0.0.1", 9)
        envoys: dict[str, EnvoyProxy] = {}
        for name, server in servers.items():
            sockets = [server.socket] if isinstance(server, EmptyAuthz) else server.worker_sockets

            def mutate(config: dict[str, Any], sockets: list[Path] = sockets) -> None:
                direct_response(config)
                balance_over(sockets)(config)

            envoys[name] = await EnvoyProxy(
                work / f"e-{name}", upstream=nowhere, paygress_socket=sockets[0], mutate=mutate
            ).start()
        cpus = sorted(os.sched_getaffinity(0))
        front, back = ({cpus[0]}, {cpus[1]}) if len(cpus) >= 2 else (set(cpus),) * 2
        tokens: dict[tuple[str, str], list[str]] = {}
        async with httpx.AsyncClient(trust_env=False) as client:
            for name in (*paygress, *(["before"] if args.before else [])):
                for path, amount in (("/paid", 4), ("/counted", 200_001)):
                    token = await wallet.token(mint.url, amount)
                    for _ in range(30):  # payment_pending: the same token again
                        warm = await client.get(
                            envoys[name].url + path, headers={"X-Cashu": token}, timeout=10
                        )
                        if warm.status_code != 503:
                            break
                        await asyncio.sleep(0.5)
                    if warm.status_code != 200:
                        raise SystemExit(f"bench: warm-up got {warm.status_code}: {warm.text}")
                    tokens[(name, path)] = [f"X-Cashu: {token}"]

        def at(name: str, path: str, label: str) -> Scenario:
            headers = tokens.get((name, path), [])
            return Scenario(label, envoys[name].url + path, headers, servers[name].pid)

        scenarios = {
            "b": at("empty", "/", "b  empty grpc.aio"),
            "b2": at("empty2", "/", "b2 its twin"),
            "ds": at("sqlite", "/paid", "ds SQLite, time grant"),
            "dr": at("redis", "/paid", "dr Redis, time grant"),
            "rs": at("sqlite", "/counted", "rs SQLite, per_request"),
            "rr": at("redis", "/counted", "rr Redis, per_request"),
            "w1": at("w1", "/paid", "1 worker"),
            "w2": at("w2", "/paid", "2 workers"),
        }
        if args.before:
            scenarios["d0"] = at("before", "/paid", f"d0 {args.before}, SQLite, time grant")
        # 1. Head to head: the servers share one core, Envoy and wrk the other.
        for name in ("empty", "empty2", "sqlite", "redis", *(["before"] if args.before else [])):
            pin(envoys[name].pid, front)
            pin(servers[name].pid, back)
        for name in ("w1", "w2"):  # idle meanwhile: kept off the measured core
            pin(envoys[name].pid, front)
            for pid in _tree(servers[name].pid):
                pin(pid, front)
        h2h: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
        try:
            for _ in range(args.h2h_rounds):
                for x, y in pairs:
                    h2h[(x, y)].append(
                        head_to_head(
                            wrk, scenarios[x], scenarios[y], args.h2h_seconds, args.connections,
                            front,
                        )
                    )  # fmt: skip
        except SystemExit:
            for name, server in servers.items():
                if isinstance(server, PaygressProcess):
                    print(f"--- {name}\n{server.log_tail(15)}", file=sys.stderr)
            raise
        # 2. Workers, unpinned: everything may use both cores, as on a real node.
        every = set(cpus)
        for name in ("w1", "w2"):
            pin(envoys[name].pid, every)
            for pid in _tree(servers[name].pid):
                pin(pid, every)
        free: dict[str, list[Result]] = {"w1": [], "w2": []}
        for round_no in range(args.rounds):
            for key in ("w1", "w2") if round_no % 2 == 0 else ("w2", "w1"):
                free[key].append(scenarios[key].run(wrk, args.seconds, args.connections, every))
        # One worker on a core of its own: what one worker can do.
        pin(envoys["w1"].pid, front)
        pin(servers["w1"].pid, back)
        alone = [
            scenarios["w1"].run(wrk, args.seconds, args.connections, front)
            for _ in range(args.rounds)
        ]
        for proc in (*envoys.values(), *servers.values(), redis, mint):
            await proc.stop()
        await wallet.aclose()
    report(args, h2h, free, alone)


def _tree(pid: int | None) -> list[int]:
    """A process and its children (a supervisor's workers)."""
    if pid is None:
        return []
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(int(c) for c in children)]


def _median(results: list[Result]) -> Result:
    return Result(
        statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
        statistics.median(r.cpu_us for r in results),
    )


def report(
    args: argparse.Namespace,
    h2h: dict[tuple[str, str], list[float]],
    free: dict[str, list[Result]],
    alone: list[Result],
) -> None:
    print(
        f"1. Head to head: {args.h2h_rounds} x {args.h2h_seconds}s per pair, servers sharing "
        "one core; median [min..max] of req/s x over y"
    )
    print_ratios(h2h, NOTES)
    print(
        f"\n2. Workers (Redis store, cached time grant): {args.rounds} x {args.seconds}s, "
        f"{args.connections} connections, medians"
    )
    print(f"{'':34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for key, label in (("w1", "1 worker, all cores shared"), ("w2", "2 workers, all cores shared")):
        r = _median(free[key])
        print(f"   {label:31} {r.rps:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.errors:8d}")
    r = _median(alone)
    print(
        f"   {'1 worker on its own core':31} {r.rps:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f}"
        f" {r.errors:8d}   {r.cpu_us:.0f} µs CPU per check"
    )
    w1, w2 = _median(free["w1"]).rps, _median(free["w2"]).rps
    print(f"   2 workers / 1 worker: {w2 / w1:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    load_arguments(parser)
    parser.add_argument("--before", help="a git revision to compare this tree with (ds/d0)")
    asyncio.run(main(parser.parse_args()))
