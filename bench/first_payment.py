"""First-payment latency through real Envoy: a swap at the mint (online) against offline
acceptance of a token locked to the operator with DLEQ proofs, and both against a token already
in the redeem cache.

N first payments of each kind, one at a time, interleaved (online, offline, cached, online, ...)
so that the machine's noise falls on all three alike; median and p99 of each, and the ratios.
The mint is nutshell (FakeWallet) on loopback: a real mint across a network costs its round
trip on top of the online figure, and nothing on top of the offline one.

    .venv/bin/python -m bench.first_payment [--payments 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from paygress.cashu.nut13 import Seed
from paygress.wallet.locks import lock_pubkey
from tests.peers.envoy import EnvoyProxy
from tests.peers.mint import NutshellMint
from tests.peers.paygress import UNTHROTTLED, PaygressProcess
from tests.peers.upstream import EchoUpstream
from tests.peers.wallet import CashuWallet


def summary(name: str, seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds)
    median = statistics.median(ordered)
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
    print(f"  {name:8} median {median * 1000:7.2f} ms   p99 {p99 * 1000:7.2f} ms")
    return median, p99


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="paygress-first-") as tmp:
        work = Path(tmp)
        mint = await NutshellMint(work / "mint").start()
        wallet = await CashuWallet(work / "wallet").start()
        upstream = await EchoUpstream().start()
        mnemonic = Seed.generate_mnemonic()
        key = lock_pubkey(Seed.from_mnemonic(mnemonic))
        config = {
            "state_dir": str(work / "state"),
            "mints": [mint.url],
            "log_level": "WARNING",
            "payments": {"unproven_swaps": UNTHROTTLED},
            "routes": [{"name": "api", "match": {"path_prefix": "/api/"}, "price": 2}],
        }
        paygress = await PaygressProcess(config, mnemonic, work / "paygress").start()
        envoy = await EnvoyProxy(
            work / "envoy", upstream=upstream.address, paygress_socket=paygress.socket_path
        ).start()
        try:
            n = args.payments
            print(f"making {n} plain and {n} locked tokens with nutshell's wallet...", flush=True)
            online = await wallet.tokens(mint.url, [4] * n)
            offline = [await wallet.send(mint.url, 4, lock=key, dleq=True) for _ in range(n)]
            times: dict[str, list[float]] = {"online": [], "offline": [], "cached": []}
            async with httpx.AsyncClient(base_url=envoy.url, trust_env=False) as http:
                warm = await wallet.tokens(mint.url, [4])
                assert (await http.get("/api/x", headers={"X-Cashu": warm[0]})).status_code == 200
                cached = (await wallet.tokens(mint.url, [2 * n * 3]))[0]
                assert (await http.get("/api/x", headers={"X-Cashu": cached})).status_code == 200
                for plain, lockd in zip(online, offline, strict=True):
                    for name, token in (("online", plain), ("offline", lockd), ("cached", cached)):
                        started = time.perf_counter()
                        r = await http.get("/api/x", headers={"X-Cashu": token})
                        times[name].append(time.perf_counter() - started)
                        assert r.status_code == 200, (name, r.text)
        finally:
            await envoy.stop()
            await paygress.stop()
            await upstream.stop()
            await wallet.aclose()
            await mint.stop()
    print(f"\nfirst payments through Envoy, {n} of each, interleaved:")
    on, on99 = summary("online", times["online"])
    off, off99 = summary("offline", times["offline"])
    hit, hit99 = summary("cached", times["cached"])
    print(f"  offline / cached: median {off / hit:.2f}x, p99 {off99 / hit99:.2f}x (target ≤ 2)")
    print(f"  online / offline: median {on / off:.2f}x, p99 {on99 / off99:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payments", type=int, default=100)
    asyncio.run(main(parser.parse_args()))
