"""Forward-auth throughput: NGINX (auth_request) and Traefik (ForwardAuth) in front of
Paygress's HTTP endpoint, head to head with an empty aiohttp handler on the same kind of port.

Each scenario has its own proxy (the operators' deploy/nginx/nginx.conf or deploy/traefik/,
rewritten by tests/peers/, access logs off, one NGINX worker) whose upstream answers in the
proxy itself (an NGINX `return 200` server, Traefik's ping@internal), so only the
authorization path differs:
  (nb) NGINX -> an empty aiohttp handler (bench/empty_http_authz.py, uvloop)
  (nl) NGINX -> the same on aiohttp's low-level server (no application, router, middlewares)
  (nd) NGINX -> Paygress, a per_second route paid with a token in its redeem cache
  (nc) NGINX with the session cache (deploy/nginx/nginx.conf's paygress_auth zone) ->
       Paygress, presenting the session: NGINX answers the auth subrequest from its cache
  (tb) Traefik -> the empty handler; (td) Traefik -> Paygress as (nd)
  (xb) wrk straight to the empty handler's /nginx with the headers NGINX sends, (xd) the same
       to Paygress: no proxy on the front core, so that the authz core is surely the bottleneck
Proxies and wrk share one core, the authz servers the other. As in bench.ext_authz: rounds
(each alone, medians) and head to head (two loads at once, their servers sharing the authz
core: the req/s ratio is the ratio of CPU cost per check; nb/nb2 is the method's control).
Also counted: new TCP connections the proxy opened to the authz server per check (the empty
handler counts them), at several client concurrencies.

    .venv/bin/python -m bench.forward_auth [--seconds 8] [--rounds 3] [--h2h-seconds 4]
                                           [--h2h-rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench.ext_authz import (
    MNEMONIC,
    SESSION_ROUTE,
    EmptyHttpAuthz,
    Result,
    Scenario,
    ensure_wrk,
    load_arguments,
    measure,
    pin,
    print_ratios,
    print_rounds,
)
from tests.peers.mint import NutshellMint
from tests.peers.nginx import NginxProxy
from tests.peers.paygress import PaygressProcess
from tests.peers.procs import LOOPBACK, free_port
from tests.peers.traefik import TraefikProxy
from tests.peers.wallet import CashuWallet

PAIRS = (
    ("nb", "nb2"), ("nd", "nb"), ("nl", "nb"), ("nd", "nl"), ("td", "tb"),
    ("xb", "xb2"), ("xd", "xb"), ("xl", "xb"),
)  # fmt: skip
# What deploy/nginx/nginx.conf's auth subrequest carries, for the direct (x*) scenarios.
NGINX_HEADERS = [
    "X-Original-URI: /stream/x",
    "X-Original-Method: GET",
    "X-Forwarded-Host: shop.example",
    "X-Request-Id: 4f1c2a9be0d34e6f8a7b6c5d4e3f2a1b",
    "X-Real-IP: 127.0.0.1",
    "Content-Length:",
]


class BenchNginx(NginxProxy):
    """nginx.conf with no access log, whose paid location serves a small static file instead
    of proxying to the app (after auth_request, which runs in the access phase: a `return`
    would answer before it), so that NGINX's own work per request is as small as it gets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, upstream=(LOOPBACK, 9), **kwargs)

    def render_config(self) -> str:
        text = super().render_config()
        text = text.replace(f"access_log {self.workdir / 'access.log'};", "access_log off;")
        (self.workdir / "www").mkdir(exist_ok=True)
        (self.workdir / "www" / "ok").write_text("ok\n")
        static = f"root {self.workdir / 'www'}; try_files /ok =404;"
        if text.count("proxy_pass http://app;") != 1:
            raise ValueError("nginx.conf: expected one `proxy_pass http://app;`")
        return text.replace("proxy_pass http://app;", static)


def traefik_static(config: dict[str, Any]) -> None:
    config.pop("accessLog", None)
    config["log"] = {"level": "ERROR"}


def traefik_dynamic(config: dict[str, Any]) -> None:
    for router in config["http"]["routers"].values():
        if router.get("service") == "app":
            router["service"] = "ping@internal"


async def connections_per_check(
    wrk: str, url: str, stats_url: str, concurrency: int, seconds: int, cpus: set[int]
) -> float:
    """New connections the proxy opened to the empty handler, per check, under `concurrency`."""
    async with httpx.AsyncClient(trust_env=False) as client:
        before = (await client.get(stats_url)).json()
        result = await asyncio.to_thread(
            Scenario("x", url, [], None).run, wrk, seconds, concurrency, cpus
        )
        after = (await client.get(stats_url)).json()
    checks = after["requests"] - before["requests"]
    assert result.rps > 0 and checks > 0
    return float(after["connections"] - before["connections"]) / float(checks)


async def main(args: argparse.Namespace) -> None:
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="paygress-fa-bench-") as tmp:
        work = Path(tmp)
        mint = await NutshellMint(work / "mint").start()
        wallet = await CashuWallet(work / "wallet").start()
        empties = {
            "empty": await EmptyHttpAuthz(work / "empty").start(),
            "empty2": await EmptyHttpAuthz(work / "empty2").start(),
            "empty-low": await EmptyHttpAuthz(work / "empty-low", lowlevel=True).start(),
            "empty-t": await EmptyHttpAuthz(work / "empty-t").start(),
        }
        paygresses: dict[str, PaygressProcess] = {}
        ports: dict[str, int] = {name: e.port for name, e in empties.items()}
        for name in ("paygress", "paygress-cached", "paygress-t"):
            ports[name] = free_port()
            config = {
                "state_dir": str(work / name / "state"),
                "mints": [mint.url],
                "log_level": "WARNING",
                "listen": {"http": f"{LOOPBACK}:{ports[name]}"},
                "routes": [SESSION_ROUTE],
            }
            paygresses[name] = await PaygressProcess(config, MNEMONIC, work / name).start()
        proxies: dict[str, NginxProxy | TraefikProxy] = {}
        for label, backend_name in (
            ("nb", "empty"), ("nb2", "empty2"), ("nl", "empty-low"), ("nd", "paygress"),
            ("nc", "paygress-cached"),
        ):  # fmt: skip
            proxies[label] = await BenchNginx(
                work / f"p-{label}", paygress=(LOOPBACK, ports[backend_name])
            ).start()
        for label, backend_name in (("tb", "empty-t"), ("td", "paygress-t")):
            proxies[label] = await TraefikProxy(
                work / f"p-{label}",
                upstream=(LOOPBACK, 9),
                paygress=(LOOPBACK, ports[backend_name]),
                mutate_static=traefik_static,
                mutate_dynamic=traefik_dynamic,
            ).start()
        cpus = sorted(os.sched_getaffinity(0))
        front, back = ({cpus[0]}, {cpus[1]}) if len(cpus) >= 2 else (set(cpus),) * 2
        for proxy in proxies.values():
            pin(proxy.pid, front)
        for process in (*empties.values(), *paygresses.values()):
            pin(process.pid, back)

        headers: dict[str, list[str]] = {}
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            for label in ("nd", "nc", "td"):
                token = await wallet.token(mint.url, 4)
                url = f"{proxies[label].url}/stream/x"
                warm = await client.get(url, headers={"X-Cashu": token})
                for _ in range(30):
                    if warm.status_code != 503:
                        break
                    await asyncio.sleep(1)
                    warm = await client.get(url, headers={"X-Cashu": token})
                if warm.status_code != 200:
                    raise SystemExit(f"bench: warm-up via {label}: {warm.status_code} {warm.text}")
                if label == "nc":
                    session = warm.headers["x-paygress-session"]
                    headers[label] = [f"X-Paygress-Session: {session}"]
                else:
                    headers[label] = [f"X-Cashu: {token}"]

        servers: dict[str, EmptyHttpAuthz | PaygressProcess] = {**empties, **paygresses}
        backend = {
            "nb": "empty", "nb2": "empty2", "nl": "empty-low", "nd": "paygress",
            "nc": "paygress-cached", "tb": "empty-t", "td": "paygress-t",
        }  # fmt: skip
        names = {
            "nb": "nb  NGINX, empty aiohttp",
            "nb2": "nb2 NGINX, empty aiohttp, twin",
            "nl": "nl  NGINX, empty low-level aiohttp",
            "nd": "nd  NGINX, Paygress paid (cached)",
            "nc": "nc  NGINX, session cache",
            "tb": "tb  Traefik, empty aiohttp",
            "td": "td  Traefik, Paygress paid (cached)",
        }
        scenarios = {
            label: Scenario(
                names[label],
                proxies[label].url + ("/stream/x" if label in headers else "/"),
                headers.get(label, []),
                servers[backend[label]].pid,
            )
            for label in names
        }
        for label, server, label_text in (
            ("xb", "empty", "xb  direct, empty aiohttp"),
            ("xb2", "empty2", "xb2 direct, empty aiohttp, twin"),
            ("xl", "empty-low", "xl  direct, empty low-level aiohttp"),
            ("xd", "paygress", "xd  direct, Paygress paid (cached)"),
        ):
            scenarios[label] = Scenario(
                label_text,
                f"http://{LOOPBACK}:{ports[server]}/nginx",
                NGINX_HEADERS + (headers["nd"] if server == "paygress" else []),
                servers[server].pid,
            )
        alone = [k for k in scenarios if k not in ("nb2", "xb2")]
        results, h2h = measure(args, wrk, scenarios, alone, PAIRS, front)
        reuse: dict[tuple[str, int], float] = {}
        for label, empty in (("nb", empties["empty"]), ("tb", empties["empty-t"])):
            for concurrency in (1, 2, 4, 16, 64):
                reuse[(label, concurrency)] = await connections_per_check(
                    wrk,
                    proxies[label].url + "/",
                    f"http://{LOOPBACK}:{empty.port}/__stats",
                    concurrency,
                    max(2, args.h2h_seconds // 2),
                    front,
                )
        for proc in (*proxies.values(), *servers.values(), mint):
            await proc.stop()
        await wallet.aclose()
    report(args, scenarios, results, h2h, reuse)


def report(
    args: argparse.Namespace,
    scenarios: dict[str, Scenario],
    results: dict[str, list[Result]],
    h2h: dict[tuple[str, str], list[float]],
    reuse: dict[tuple[str, int], float],
) -> None:
    print(
        f"1. Rounds: {args.rounds} x {args.seconds}s per scenario, {args.connections} "
        "connections, order rotated, medians (proxies+wrk and authz servers on separate cores)"
    )
    med = print_rounds(scenarios, results, width=38)
    for x, y in (("nd", "nb"), ("td", "tb"), ("nc", "nd"), ("nc", "nb"), ("xd", "xb")):
        print(f"   ratio {x}/{y}: {med[x].rps / med[y].rps:.3f}")
    print(
        f"\n2. Head to head: {args.h2h_rounds} x {args.h2h_seconds}s per pair, both loads at "
        "once, servers sharing one core; median [min..max] of req/s x over y"
    )
    notes = {
        ("nb", "nb2"): "control: two identical empty handlers behind two NGINX",
        ("nd", "nb"): "Paygress cached paid vs an empty aiohttp handler, NGINX (target >= 0.85)",
        ("nl", "nb"): "aiohttp's low-level server vs its application (both empty)",
        ("nd", "nl"): "Paygress vs the empty low-level server",
        ("td", "tb"): "the same behind Traefik",
        ("xb", "xb2"): "control: two identical empty handlers, no proxy",
        ("xd", "xb"): "Paygress vs the empty handler, no proxy: the authz core is the limit",
        ("xl", "xb"): "the low-level server vs the application, no proxy",
    }
    print_ratios(h2h, notes)
    print("\n3. New connections to the authz server per check, by client connections")
    levels = sorted({c for _, c in reuse})
    print("   " + " ".join(f"{c:>8}" for c in ["proxy", *map(str, levels)]))
    for label, name in (("nb", "NGINX"), ("tb", "Traefik")):
        print("   " + f"{name:>8} " + " ".join(f"{reuse[(label, c)]:8.4f}" for c in levels))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    load_arguments(parser)
    asyncio.run(main(parser.parse_args()))
