"""A flood of fake tokens through real Envoy while honest clients pay: what does it cost?

An attacker (wrk on 127.0.0.1) sends --rate fake tokens a second for --seconds: well-formed
tokens for the mint's real keyset with made-up proofs, half of them replays of the other half.
Meanwhile honest clients, each from its own address (127.0.0.10, .11, ...), make a first
payment every --honest-every seconds with a real token from the nutshell wallet (without DLEQ
proofs, so each needs a swap at the mint). The mint limits transactions per client address
(Paygress's mint traffic comes from 127.0.0.2 through a counting proxy, so the limiter sees
it); Paygress's swap budget for unproven tokens is set below that limit.

Reported (targets from the hostile-clients issue):
- mint calls caused by the flood: swaps the mint refused, and keyset lookups — at most the
  budget (the attacker's client bucket: its burst plus its rate over the run);
- honest first payments that failed (target 0; a 503 followed by the same token's 200 on
  retry, as Retry-After asks, counts as paid, and is reported);
- latency of the honest payments (p50, p99, target p99 < 2 s) and of the flood's answers;
- Paygress's RSS growth (target < 50 MB) and its CPU.

    .venv/bin/python -m bench.hostile_flood [--seconds 60] [--rate 1000]
Needs `wrk` (Debian package; installed on demand when running as root).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from coincurve import PrivateKey

from bench.ext_authz import cpu_seconds, ensure_wrk
from paygress.cashu.models import Proof, Token
from paygress.cashu.nut13 import Seed
from paygress.cashu.token import encode_token_v4
from tests.peers.envoy import EnvoyProxy
from tests.peers.mint import NutshellMint
from tests.peers.paygress import PaygressProcess
from tests.peers.procs import free_port
from tests.peers.proxy import CountingProxy
from tests.peers.upstream import EchoUpstream
from tests.peers.wallet import CashuWallet

LUA = """
local tokens = {}
local i = 0
local pause = 0
init = function(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
  pause = tonumber(args[2])
  i = math.random(#tokens)
end
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/api/x", {["X-Cashu"] = tokens[i]})
end
delay = function() return pause end
"""
MINT_LIMITS = {
    "MINT_RATE_LIMIT": "true",
    "MINT_TRANSACTION_RATE_LIMIT_PER_MINUTE": "120",
    "MINT_GLOBAL_RATE_LIMIT_PER_MINUTE": "600",
}
BUDGET = {
    "per_mint_per_minute": 60,
    "per_mint_burst": 20,
    "per_client_per_minute": 6,
    "per_client_burst": 3,
}


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(found[1]) / 1024 if found else 0.0


def fakes(keyset: str, mint: str, count: int) -> list[str]:
    def one() -> str:
        proofs = tuple(
            Proof(keyset[:16], 64, secrets.token_hex(32), PrivateKey().public_key.format().hex())
            for _ in range(3)
        )
        return encode_token_v4(Token(mint, "sat", proofs, None, 4))

    distinct = [one() for _ in range(count // 2)]
    return distinct + distinct  # every fake is sent twice: once new, once a replay


def metric(text: str, pattern: str) -> float:
    return sum(float(v) for v in re.findall(pattern + r" (\S+)$", text, re.M))


async def honest_payer(
    envoy_url: str, address: str, token: str, latencies: list[float]
) -> tuple[int, int]:
    """One first payment; a 503 is retried after Retry-After. (final status, attempts)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(
        base_url=envoy_url, transport=transport, trust_env=False, timeout=15
    ) as client:
        started = time.monotonic()
        attempts = 1
        r = await client.get("/api/x", headers={"X-Cashu": token})
        while r.status_code == 503 and attempts < 3:
            await asyncio.sleep(float(r.headers.get("retry-after", "1")))
            attempts += 1
            r = await client.get("/api/x", headers={"X-Cashu": token})
        latencies.append(time.monotonic() - started)
        return r.status_code, attempts


async def main(args: argparse.Namespace) -> None:
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="paygress-flood-") as tmp:
        work = Path(tmp)
        mint = await NutshellMint(work / "mint", extra_env=MINT_LIMITS).start()
        wallet = await CashuWallet(work / "wallet").start()
        upstream = await EchoUpstream().start()
        proxy = await CountingProxy.to_url(mint.url, source="127.0.0.2").start()
        metrics_port = free_port()
        config: dict[str, Any] = {
            "state_dir": str(work / "state"),
            "mints": [proxy.url],
            "log_level": "WARNING",
            "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
            "payments": {"unproven_swaps": BUDGET},
            "routes": [{"name": "api", "match": {"path_prefix": "/api/"}, "price": 2}],
        }
        paygress = await PaygressProcess(
            config, Seed.generate_mnemonic(), work / "paygress"
        ).start()
        envoy = await EnvoyProxy(
            work / "envoy", upstream=upstream.address, paygress_socket=paygress.socket_path
        ).start()
        try:
            keyset = next(k["id"] for k in await mint.keysets() if k["active"])
            count = args.rate * args.seconds
            print(f"making {count // 2} fake tokens (each sent twice)...", flush=True)
            pool = await asyncio.to_thread(fakes, keyset, proxy.url, count)
            (work / "fakes.txt").write_text("\n".join(pool) + "\n")
            (work / "flood.lua").write_text(LUA)
            honest_n = int(args.seconds / args.honest_every)
            tokens = await wallet.tokens(mint.url, [3] * honest_n, token_mint=proxy.url)
            async with httpx.AsyncClient(trust_env=False) as http:
                # One honest payment first, so that keysets and keys are known.
                status, _ = await honest_payer(envoy.url, "127.0.0.9", tokens.pop(), [])
                assert status == 200, status
                base = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
            pid = paygress.pid
            assert pid is not None
            rss0, cpu0 = rss_mib(pid), cpu_seconds(pid)
            connections = max(1, args.rate // 100)  # each waits 10 ms between requests
            flood = await asyncio.create_subprocess_exec(
                wrk, "-t1", f"-c{connections}", f"-d{args.seconds}s", "--latency",
                "-s", str(work / "flood.lua"), envoy.url, "--", str(work / "fakes.txt"), "10",
                stdout=subprocess.PIPE,
            )  # fmt: skip
            latencies: list[float] = []
            payers = []
            for i, token in enumerate(tokens):
                await asyncio.sleep(args.honest_every)
                payers.append(
                    asyncio.create_task(
                        honest_payer(envoy.url, f"127.0.0.{10 + i % 200}", token, latencies)
                    )
                )
            results = await asyncio.gather(*payers)
            out = await flood.communicate()
            rss1, cpu1 = rss_mib(pid), cpu_seconds(pid)
            async with httpx.AsyncClient(trust_env=False) as http:
                after = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        finally:
            await envoy.stop()
            await paygress.stop()
            await proxy.stop()
            await upstream.stop()
            await wallet.aclose()
            await mint.stop()

    wrk_out = out[0].decode()
    total = int(re.search(r"(\d+) requests in", wrk_out)[1])  # type: ignore[index]
    p50 = re.search(r"^\s+50%\s+(\S+)", wrk_out, re.M)[1]  # type: ignore[index]
    p99 = re.search(r"^\s+99%\s+(\S+)", wrk_out, re.M)[1]  # type: ignore[index]

    def grew(pattern: str) -> float:
        return metric(after, pattern) - metric(base, pattern)

    refused_swaps = grew(r'paygress_mint_requests_total\{endpoint="/v1/swap",[^}]*outcome="4xx"\}')
    lookups = grew(r'paygress_mint_requests_total\{endpoint="/v1/keys(?:ets)?",[^}]*\}')
    reasons = {
        r: grew(rf'paygress_checks_total\{{decision="deny",reason="{r}"\}}')
        for r in ("mint_rejected", "swap_budget", "payment_pending", "mint_unavailable")
    }
    budget = BUDGET["per_client_burst"] + BUDGET["per_client_per_minute"] * args.seconds / 60
    failed = [s for s, _ in results if s != 200]
    retried = sum(1 for _, attempts in results if attempts > 1)
    ordered = sorted(latencies)
    print(f"\nflood: {total} fake-token requests in {args.seconds} s "
          f"({total / args.seconds:.0f}/s), answered p50 {p50}, p99 {p99}")  # fmt: skip
    print(f"  denials: {reasons}")
    print(f"  mint calls caused by the flood: {refused_swaps:.0f} refused swaps "
          f"(budget {budget:.0f}), {lookups:.0f} keyset/key lookups")  # fmt: skip
    print(f"honest first payments: {len(results)}, failed {len(failed)} {failed or ''}, "
          f"retried after 503: {retried}")  # fmt: skip
    p99_honest = ordered[max(0, int(len(ordered) * 0.99) - 1)]
    print(f"  latency p50 {statistics.median(ordered):.3f} s, "
          f"p99 {p99_honest:.3f} s, max {ordered[-1]:.3f} s")  # fmt: skip
    print(f"paygress: RSS {rss0:.1f} -> {rss1:.1f} MiB (+{rss1 - rss0:.1f}), "
          f"CPU {cpu1 - cpu0:.1f} s over {args.seconds} s")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--rate", type=int, default=1000, help="fake tokens per second")
    parser.add_argument("--honest-every", type=float, default=2.0, help="seconds between payers")
    asyncio.run(main(parser.parse_args()))
