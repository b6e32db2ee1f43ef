"""ext_authz throughput through real Envoy: the cost of Paygress against an empty handler.

Scenarios, all through the same Envoy config (deploy/envoy/envoy.yaml) with a direct
response standing in for the upstream, so only the authorization path differs:
  (a) no ext_authz filter at all
  (b) ext_authz → an empty grpc.aio handler (bench/empty_authz.py)
  (c) ext_authz → Paygress, free route
  (d) ext_authz → Paygress, priced route, paid with a token already in the redeem cache
  (b') as (b), with the same X-Cashu header as (d): what the token's bytes alone cost
Rounds are interleaved (a b c d a b c d …) and the median of each is reported, because
these machines are noisy; compare the ratios c/b and d/b, not absolute numbers.

    .venv/bin/python -m bench.ext_authz [--seconds 10] [--rounds 3] [--connections 16]
Needs `wrk` (Debian package; installed on demand when running as root).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.peers.envoy import EnvoyProxy
from tests.peers.mint import NutshellMint
from tests.peers.paygress import PaygressProcess
from tests.peers.procs import VENV, ManagedProcess, wait_for_unix_socket
from tests.peers.wallet import CashuWallet

MNEMONIC = "half depart obvious quality work element tank gorilla view sugar picture humble"


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float = 0.0  # CPU time of the authz server process per request


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class EmptyAuthz(ManagedProcess):
    name = "empty-authz"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.socket = self.workdir / "empty.sock"

    def command(self) -> list[str]:
        return [
            str(VENV / "bin" / "python"),
            "-m",
            "bench.empty_authz",
            "--socket",
            str(self.socket),
        ]

    def cwd(self) -> Path:
        return Path(__file__).resolve().parent.parent

    async def wait_ready(self) -> None:
        await wait_for_unix_socket(self.socket, timeout=15, proc=self)


def direct_response(config: dict[str, Any]) -> None:
    """Replaces the upstream route with a direct response: measure authz, not an upstream."""
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for flt in chain["filters"]:
                for vhost in flt["typed_config"]["route_config"]["virtual_hosts"]:
                    for route in vhost["routes"]:
                        if "route" in route:
                            del route["route"]
                            route["direct_response"] = {
                                "status": 200,
                                "body": {"inline_string": "ok\n"},
                            }


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    print("bench: installing wrk (apt-get)", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
    path = shutil.which("wrk")
    if not path:
        raise SystemExit("bench: wrk is needed (apt-get install wrk)")
    return path


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"cannot read latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def pin(pid: int | None, cpus: set[int]) -> None:
    """Keeps a process (and its threads) on `cpus`, so the scenarios do not steal each other's
    core: proxies and the load generator share one, the authz servers get the other."""
    if pid is None:
        return
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), cpus)


def run_wrk(
    wrk: str,
    url: str,
    seconds: int,
    connections: int,
    headers: list[str],
    cpus: set[int],
    server: int | None,
) -> Result:
    cmd = ["taskset", "-c", ",".join(map(str, sorted(cpus))), wrk, "-t1", f"-c{connections}"]
    cmd += [f"-d{seconds}s", "--latency"]
    for header in headers:
        cmd += ["-H", header]
    cpu_before = cpu_seconds(server)
    out = subprocess.run([*cmd, url], check=True, capture_output=True, text=True).stdout
    cpu = cpu_seconds(server) - cpu_before
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    return Result(rps, p50, p99, errors, cpu * 1e6 / max(total, 1))


async def main(args: argparse.Namespace) -> None:
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="paygress-bench-") as tmp:
        work = Path(tmp)
        mint = await NutshellMint(work / "mint").start()
        wallet = await CashuWallet(work / "wallet").start()
        empty = await EmptyAuthz(work / "empty").start()
        paygress = await PaygressProcess(
            {
                "state_dir": str(work / "state"),
                "mints": [mint.url],
                "log_level": "WARNING",
                "routes": [
                    {
                        "name": "paid",
                        "match": {"path_prefix": "/paid"},
                        "mode": "per_second",
                        "price": 1,
                        "grants": 86_400,
                    }
                ],
            },
            MNEMONIC,
            work / "paygress",
        ).start()
        nowhere = ("127.0.0.1", 9)  # never used: routes answer directly
        envoys = {
            "a": await EnvoyProxy(
                work / "ea", upstream=nowhere, authz=False, mutate=direct_response
            ).start(),
            "b": await EnvoyProxy(
                work / "eb", upstream=nowhere, paygress_socket=empty.socket, mutate=direct_response
            ).start(),
            "p": await EnvoyProxy(
                work / "ep",
                upstream=nowhere,
                paygress_socket=paygress.socket_path,
                mutate=direct_response,
            ).start(),
        }
        cpus = sorted(os.sched_getaffinity(0))
        front, back = ({cpus[0]}, {cpus[1]}) if len(cpus) >= 2 and args.pin else (set(cpus),) * 2
        for envoy in envoys.values():
            pin(envoy.pid, front)
        for authz in (empty, paygress):
            pin(authz.pid, back)
        token = await wallet.token(mint.url, 4)
        async with httpx.AsyncClient(trust_env=False) as client:
            warm = await client.get(f"{envoys['p'].url}/paid", headers={"X-Cashu": token})
            if warm.status_code != 200:
                raise SystemExit(f"bench: paid warm-up got {warm.status_code}: {warm.text}")
        token_header = [f"X-Cashu: {token}"]
        scenarios: dict[str, tuple[str, list[str], int | None]] = {
            "a no authz": (envoys["a"].url + "/", [], None),
            "b empty grpc.aio": (envoys["b"].url + "/", [], empty.pid),
            "b' empty, token header sent": (envoys["b"].url + "/", token_header, empty.pid),
            "c paygress free": (envoys["p"].url + "/free", [], paygress.pid),
            "d paygress paid (cached)": (envoys["p"].url + "/paid", token_header, paygress.pid),
        }
        results: dict[str, list[Result]] = {name: [] for name in scenarios}
        for _ in range(args.rounds):
            for name, (url, headers, server) in scenarios.items():
                results[name].append(
                    run_wrk(wrk, url, args.seconds, args.connections, headers, front, server)
                )
        for proc in (*envoys.values(), paygress, empty, mint):
            await proc.stop()
        await wallet.aclose()

    med = {
        name: Result(
            statistics.median(r.rps for r in rs),
            statistics.median(r.p50_ms for r in rs),
            statistics.median(r.p99_ms for r in rs),
            sum(r.errors for r in rs),
            statistics.median(r.cpu_us for r in rs),
        )
        for name, rs in results.items()
    }
    print(
        f"ext_authz through Envoy: {args.rounds} rounds x {args.seconds}s, "
        f"{args.connections} connections, median per scenario"
        + (", Envoy+wrk and the authz servers pinned to separate cores" if args.pin else "")
    )
    print(
        f"{'scenario':28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}"
        f" {'authz CPU µs/req':>17}"
    )
    for name, r in med.items():
        print(
            f"{name:28} {r.rps:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.errors:8d} {r.cpu_us:17.1f}"
        )
    b = med["b empty grpc.aio"].rps
    print(f"ratio c/b (free route vs empty handler):   {med['c paygress free'].rps / b:.3f}")
    print(
        f"ratio d/b (cached paid vs empty handler):  {med['d paygress paid (cached)'].rps / b:.3f}"
    )
    print(f"ratio b/a (cost of any ext_authz):         {b / med['a no authz'].rps:.3f}")
    d_over_b2 = med["d paygress paid (cached)"].rps / med["b' empty, token header sent"].rps
    print(f"ratio d/b' (same request bytes as d):       {d_over_b2:.3f}")
    cpu_b = med["b empty grpc.aio"].cpu_us
    for key in ("c paygress free", "d paygress paid (cached)"):
        extra = med[key].cpu_us - cpu_b
        ratio = med[key].cpu_us / cpu_b
        print(f"authz CPU per request, {key[0]} over b: {extra:+.1f} µs ({ratio:.3f}x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="do not pin processes to cores"
    )
    asyncio.run(main(parser.parse_args()))
