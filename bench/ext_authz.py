"""ext_authz throughput through real Envoy: the cost of Paygress against an empty handler.

Scenarios, all through the same Envoy config (deploy/envoy/envoy-sessions.yaml: envoy.yaml's
ext_authz plus paid sessions) with a direct response standing in for the upstream, so only the
authorization path differs:
  (a)  no authorization filters at all (ext_authz and jwt_authn removed)
  (b)  ext_authz → an empty grpc.aio handler (bench/empty_authz.py) on the stdlib event loop
  (bu) the same empty handler on uvloop, the loop Paygress runs on by default
  (c)  ext_authz → Paygress, free route
  (d)  ext_authz → Paygress, priced route, paid with a token already in the redeem cache
  (da) as (d), Paygress configured with `event_loop: asyncio`
  (j)  the same paid route with the session that payment's answer carried: jwt_authn verifies
       it (cached) and ext_authz is not called
  (h)  Envoy's HTTP ext_authz (deploy/envoy/envoy-http-authz.yaml) to an empty aiohttp handler
       (bench/empty_http_authz.py, uvloop)
  (dh) as (d) over HTTP ext_authz: a Paygress of its own, its listen.http /envoy path
  (jo) with --compare OTHER.yaml: (j) through another sessions config (e.g. an older
       envoy-sessions.yaml: `git show REV:deploy/envoy/envoy-sessions.yaml > old.yaml`), in the
       same run, head to head with (a) and (j)

Envoy and wrk get one core, the authz servers the other. Two measurements:
1. Rounds: each scenario alone for --seconds, the order rotated every round; medians of
   req/s, latency and the authz server's CPU per request. Absolute numbers, but identical runs
   on a shared VM differ by 10% and more between rounds.
2. Head to head: two scenarios loaded at the same time, their servers sharing the authz core.
   The scheduler gives each server half the core, so their req/s ratio is the ratio of their
   CPU cost per request, and whatever slows the machine slows both alike: this ratio repeats
   within about 1% (the control pair b/b shows the method's own error). The pair j/a shares
   the front core instead (neither calls an authz server): the ratio of Envoy's own cost.

    .venv/bin/python -m bench.ext_authz [--seconds 8] [--rounds 3]
                                        [--h2h-seconds 4] [--h2h-rounds 4] [--compare OTHER.yaml]
Needs `wrk` (Debian package; installed on demand when running as root).
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

from paygress.cashu.nut13 import Seed
from paygress.sessions import jwks
from tests.peers.envoy import JWT_FILTER, EnvoyProxy, http_connection_managers
from tests.peers.mint import NutshellMint
from tests.peers.paygress import PaygressProcess
from tests.peers.procs import (
    LOOPBACK,
    REPO_ROOT,
    VENV,
    ManagedProcess,
    free_port,
    wait_for_port,
    wait_for_unix_socket,
)
from tests.peers.wallet import CashuWallet

MNEMONIC = "half depart obvious quality work element tank gorilla view sugar picture humble"
CONFIG = REPO_ROOT / "deploy" / "envoy" / "envoy-sessions.yaml"
HTTP_CONFIG = REPO_ROOT / "deploy" / "envoy" / "envoy-http-authz.yaml"


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

    def __init__(self, workdir: Path, loop: str = "asyncio") -> None:
        super().__init__(workdir)
        self.socket = self.workdir / "empty.sock"
        self.loop = loop

    def command(self) -> list[str]:
        return [
            str(VENV / "bin" / "python"),
            "-m",
            "bench.empty_authz",
            "--socket",
            str(self.socket),
            "--loop",
            self.loop,
        ]

    def cwd(self) -> Path:
        return Path(__file__).resolve().parent.parent

    async def wait_ready(self) -> None:
        await wait_for_unix_socket(self.socket, timeout=15, proc=self)


class EmptyHttpAuthz(ManagedProcess):
    """bench/empty_http_authz.py on a TCP port."""

    name = "empty-http-authz"

    def __init__(self, workdir: Path, loop: str = "uvloop", lowlevel: bool = False) -> None:
        super().__init__(workdir)
        self.port = free_port()
        self.loop = loop
        self.lowlevel = lowlevel

    def command(self) -> list[str]:
        cmd = [str(VENV / "bin" / "python"), "-m", "bench.empty_http_authz"]
        cmd += ["--port", str(self.port), "--loop", self.loop]
        return [*cmd, "--lowlevel"] if self.lowlevel else cmd

    def cwd(self) -> Path:
        return Path(__file__).resolve().parent.parent

    async def wait_ready(self) -> None:
        await wait_for_port(LOOPBACK, self.port, timeout=15, proc=self)


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


def no_authorization(config: dict[str, Any]) -> None:
    """(a): the direct response, with neither jwt_authn nor ext_authz (EnvoyProxy(authz=False)
    removes the latter)."""
    direct_response(config)
    for hcm in http_connection_managers(config):
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != JWT_FILTER]
        for vhost in hcm["route_config"]["virtual_hosts"]:
            for route in vhost["routes"]:
                route.get("typed_per_filter_config", {}).pop(JWT_FILTER, None)


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


def wrk_command(
    wrk: str, url: str, seconds: int, connections: int, headers: list[str], cpus: set[int]
) -> list[str]:
    cmd = ["taskset", "-c", ",".join(map(str, sorted(cpus))), wrk, "-t1", f"-c{connections}"]
    cmd += [f"-d{seconds}s", "--latency"]
    for header in headers:
        cmd += ["-H", header]
    return [*cmd, url]


def parse_wrk(out: str, cpu_seconds_used: float) -> Result:
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    return Result(rps, p50, p99, errors, cpu_seconds_used * 1e6 / max(total, 1))


@dataclass
class Scenario:
    """One load: a URL behind one Envoy, its headers, and the authz server that decides it."""

    label: str
    url: str
    headers: list[str]
    server: int | None

    def run(self, wrk: str, seconds: int, connections: int, cpus: set[int]) -> Result:
        cpu = cpu_seconds(self.server)
        cmd = wrk_command(wrk, self.url, seconds, connections, self.headers, cpus)
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return parse_wrk(out, cpu_seconds(self.server) - cpu)


def head_to_head(
    wrk: str, x: Scenario, y: Scenario, seconds: int, connections: int, cpus: set[int]
) -> float:
    """req/s of x over req/s of y, both loaded at once (their servers share a core)."""
    procs = [
        subprocess.Popen(
            wrk_command(wrk, s.url, seconds, connections, s.headers, cpus),
            stdout=subprocess.PIPE,
            text=True,
        )
        for s in (x, y)
    ]
    rx, ry = (parse_wrk(p.communicate()[0], 0.0) for p in procs)
    if any(p.returncode for p in procs):
        raise SystemExit("bench: wrk failed")
    if rx.errors or ry.errors:
        raise SystemExit(f"bench: non-2xx answers head to head ({x.label}, {y.label})")
    return rx.rps / ry.rps


# A session route of envoy-sessions.yaml.
def measure(
    args: argparse.Namespace,
    wrk: str,
    scenarios: dict[str, Scenario],
    alone: list[str],
    pairs: tuple[tuple[str, str], ...],
    cpus: set[int],
) -> tuple[dict[str, list[Result]], dict[tuple[str, str], list[float]]]:
    """Rounds (each of `alone` by itself, the order rotated every round), then head to head
    (each pair at once, `h2h_rounds` times)."""
    results: dict[str, list[Result]] = {k: [] for k in alone}
    for round_no in range(args.rounds):
        shift = round_no % len(alone)
        for key in alone[shift:] + alone[:shift]:
            results[key].append(scenarios[key].run(wrk, args.seconds, args.connections, cpus))
    h2h: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
    for _ in range(args.h2h_rounds):
        for x, y in pairs:
            h2h[(x, y)].append(
                head_to_head(
                    wrk, scenarios[x], scenarios[y], args.h2h_seconds, args.connections, cpus
                )
            )
    return results, h2h


PAID_ROUTE = {
    "name": "paid",
    "match": {"path_prefix": "/paid"},
    "mode": "per_second",
    "price": 1,
    "grants": 86_400,
}
# The same price on a session route of envoy-sessions.yaml (and of deploy/nginx's map).
SESSION_ROUTE = {**PAID_ROUTE, "name": "stream", "match": {"path_prefix": "/stream/"}}
# Head-to-head pairs: (x, y) prints x/y. b/b2 is the control: two identical servers.
PAIRS = (
    ("b", "b2"), ("c", "b"), ("d", "b"), ("d", "bu"), ("da", "b"), ("bu", "b"),
    ("a", "a2"), ("j", "a"), ("h", "b"), ("dh", "h"), ("dh", "d"),
)  # fmt: skip
COMPARE_PAIRS = (("jo", "a"), ("j", "jo"))


async def main(args: argparse.Namespace) -> None:
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="paygress-bench-") as tmp:
        work = Path(tmp)
        mint = await NutshellMint(work / "mint").start()
        wallet = await CashuWallet(work / "wallet").start()
        empty_http = await EmptyHttpAuthz(work / "empty-http").start()
        servers: dict[str, EmptyAuthz | EmptyHttpAuthz | PaygressProcess] = {
            "empty": await EmptyAuthz(work / "empty").start(),
            "empty2": await EmptyAuthz(work / "empty2").start(),
            "empty-uv": await EmptyAuthz(work / "empty-uv", loop="uvloop").start(),
            "empty-http": empty_http,
        }
        http_ports = {"empty-http": empty_http.port}
        for name, loop in (
            ("paygress", "auto"), ("paygress-asyncio", "asyncio"), ("paygress-http", "auto")
        ):  # fmt: skip
            config: dict[str, Any] = {
                "state_dir": str(work / name / "state"),
                "mints": [mint.url],
                "log_level": "WARNING",
                "event_loop": loop,
                "routes": [SESSION_ROUTE],
            }
            if name == "paygress-http":
                http_ports[name] = free_port()
                config["listen"] = {"http": f"{LOOPBACK}:{http_ports[name]}"}
            servers[name] = await PaygressProcess(config, MNEMONIC, work / name).start()
        nowhere = ("127.0.0.1", 9)  # never used: routes answer directly
        keys = json.dumps(jwks(Seed.from_mnemonic(MNEMONIC)))
        envoys = {
            name: await EnvoyProxy(
                work / f"e-{name}", upstream=nowhere, authz=False, config_path=CONFIG,
                mutate=no_authorization,
            ).start()
            for name in ("none", "none2")
        }  # fmt: skip
        for name, server in servers.items():
            if name in http_ports:
                envoys[name] = await EnvoyProxy(
                    work / f"e-{name}", upstream=nowhere,
                    paygress_http=(LOOPBACK, http_ports[name]), config_path=HTTP_CONFIG,
                    mutate=direct_response,
                ).start()  # fmt: skip
                continue
            assert not isinstance(server, EmptyHttpAuthz)
            socket = server.socket if isinstance(server, EmptyAuthz) else server.socket_path
            envoys[name] = await EnvoyProxy(
                work / f"e-{name}", upstream=nowhere, paygress_socket=socket,
                config_path=CONFIG, jwks=keys, mutate=direct_response,
            ).start()  # fmt: skip
        if args.compare is not None:  # (j) through another config, to the same Paygress
            paygress = servers["paygress"]
            assert isinstance(paygress, PaygressProcess)
            envoys["compare"] = await EnvoyProxy(
                work / "e-compare", upstream=nowhere, paygress_socket=paygress.socket_path,
                config_path=args.compare, jwks=keys, mutate=direct_response,
            ).start()  # fmt: skip
        cpus = sorted(os.sched_getaffinity(0))
        front, back = ({cpus[0]}, {cpus[1]}) if len(cpus) >= 2 and args.pin else (set(cpus),) * 2
        for envoy in envoys.values():
            pin(envoy.pid, front)
        for server in servers.values():
            pin(server.pid, back)
        tokens, sessions = {}, {}
        async with httpx.AsyncClient(trust_env=False) as client:
            for name in ("paygress", "paygress-asyncio", "paygress-http"):
                token = await wallet.token(mint.url, 4)
                url = f"{envoys[name].url}/stream/x"
                warm = await client.get(url, headers={"X-Cashu": token})
                for _ in range(30):  # a busy machine: the swap may take longer than a check
                    if warm.status_code != 503:
                        break
                    await asyncio.sleep(1)
                    warm = await client.get(url, headers={"X-Cashu": token})
                if warm.status_code != 200:
                    raise SystemExit(f"bench: paid warm-up got {warm.status_code}: {warm.text}")
                tokens[name] = [f"X-Cashu: {token}"]
                sessions[name] = [f"X-Paygress-Session: {warm.headers['x-paygress-session']}"]

        def at(envoy: str, path: str, headers: list[str], label: str) -> Scenario:
            return Scenario(
                label,
                envoys[envoy].url + path,
                headers,
                servers[envoy].pid if envoy in servers else None,
            )

        scenarios = {
            "a": at("none", "/", [], "a  no authz"),
            "a2": at("none2", "/", [], "a2 no authz, twin"),
            "b": at("empty", "/", [], "b  empty grpc.aio"),
            "b2": at("empty2", "/", [], "b2 empty grpc.aio, twin"),
            "bu": at("empty-uv", "/", [], "bu empty grpc.aio, uvloop"),
            "c": at("paygress", "/free", [], "c  paygress free"),
            "d": at("paygress", "/stream/x", tokens["paygress"], "d  paygress paid (cached)"),
            "da": at(
                "paygress-asyncio", "/stream/x", tokens["paygress-asyncio"], "da paid, stdlib loop"
            ),
            "j": at("paygress", "/stream/x", sessions["paygress"], "j  paid session (jwt_authn)"),
            "h": at("empty-http", "/", [], "h  empty aiohttp, HTTP ext_authz"),
            "dh": at(
                "paygress-http", "/stream/x", tokens["paygress-http"], "dh paid (cached), HTTP"
            ),
        }
        pairs: tuple[tuple[str, str], ...] = PAIRS
        if args.compare is not None:
            scenarios["jo"] = at("compare", "/stream/x", sessions["paygress"], "jo j, --compare")
            pairs += COMPARE_PAIRS
        alone = [k for k in scenarios if k not in ("b2", "a2")]
        results, h2h = measure(args, wrk, scenarios, alone, pairs, front)
        for proc in (*envoys.values(), *servers.values(), mint):
            await proc.stop()
        await wallet.aclose()
    report(args, scenarios, results, h2h)


def print_rounds(
    scenarios: dict[str, Scenario], results: dict[str, list[Result]], width: int = 32
) -> dict[str, Result]:
    """Prints each scenario's medians over the rounds; returns them."""
    med = {
        key: Result(
            statistics.median(r.rps for r in rs),
            statistics.median(r.p50_ms for r in rs),
            statistics.median(r.p99_ms for r in rs),
            sum(r.errors for r in rs),
            statistics.median(r.cpu_us for r in rs),
        )
        for key, rs in results.items()
    }
    print(
        f"{'scenario':{width}} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}"
        f" {'authz CPU µs/req':>17}"
    )
    for key, r in med.items():
        print(
            f"{scenarios[key].label:{width}} {r.rps:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f}"
            f" {r.errors:8d} {r.cpu_us:17.1f}"
        )
    return med


def report(
    args: argparse.Namespace,
    scenarios: dict[str, Scenario],
    results: dict[str, list[Result]],
    h2h: dict[tuple[str, str], list[float]],
) -> None:
    print(
        f"1. Rounds: {args.rounds} x {args.seconds}s per scenario, {args.connections} "
        "connections, order rotated, medians"
        + (" (Envoy+wrk and the authz servers pinned to separate cores)" if args.pin else "")
    )
    med = print_rounds(scenarios, results)
    for x, y in (
        ("c", "b"),
        ("d", "b"),
        ("d", "bu"),
        ("da", "b"),
        ("b", "a"),
        ("j", "a"),
        ("j", "d"),
        ("h", "b"),
        ("dh", "d"),
        ("dh", "h"),
        ("jo", "a"),
        ("j", "jo"),
    ):
        if x in med and y in med:
            print(f"   ratio {x}/{y}: {med[x].rps / med[y].rps:.3f}")
    print(
        f"\n2. Head to head: {args.h2h_rounds} x {args.h2h_seconds}s per pair, both loads at "
        "once, servers sharing one core; median [min..max] of req/s x over y"
    )
    print_ratios(
        h2h,
        {
            ("b", "b2"): "control: two identical empty servers",
            ("c", "b"): "Paygress, free route, vs empty handler",
            ("d", "b"): "Paygress, cached paid, vs empty handler (target >= 0.9)",
            ("d", "bu"): "the same, both on uvloop: Paygress's own cost",
            ("da", "b"): "the same, both on the stdlib loop: Paygress's own cost",
            ("bu", "b"): "what uvloop gives an empty handler",
            ("a", "a2"): "control: two identical Envoys without authorization",
            ("j", "a"): "a paid session against no authorization (target >= 0.7)",
            ("h", "b"): "an empty HTTP authz handler against an empty gRPC one",
            ("dh", "h"): "Paygress over HTTP against an empty HTTP handler: its own cost",
            ("dh", "d"): "Paygress cached paid: HTTP ext_authz against gRPC",
            ("jo", "a"): "a paid session through the --compare config against no authorization",
            ("j", "jo"): "a paid session: this config against the --compare one",
        },
    )


def print_ratios(
    h2h: dict[tuple[str, str], list[float]], notes: dict[tuple[str, str], str]
) -> None:
    """Each pair's median ratio, its range, and what it says."""
    for (x, y), ratios in h2h.items():
        print(
            f"   {x + '/' + y:6} {statistics.median(ratios):.3f} "
            f"[{min(ratios):.3f}..{max(ratios):.3f}]  {notes[(x, y)]}"
        )


def load_arguments(parser: argparse.ArgumentParser) -> None:
    """How long and how hard to load: alone (rounds) and head to head."""
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--h2h-seconds", type=int, default=4)
    parser.add_argument("--h2h-rounds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=16)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    load_arguments(parser)
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="do not pin processes to cores"
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="OTHER.yaml",
        help="also run (j) through this sessions config: scenario jo, pairs jo/a and j/jo",
    )
    asyncio.run(main(parser.parse_args()))
