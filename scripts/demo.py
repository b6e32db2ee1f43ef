"""`make demo`: a local mint, Envoy and Paygress, and one request walked from 402 to paid 200.

Everything runs on loopback with free ports in a temporary directory, and is stopped at the
end (or on Ctrl-C with --keep). Uses the same peers as the integration tests:
nutshell's mint with its FakeWallet backend (invoices pay themselves) and nutshell's wallet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import httpx

from paygress.cashu.nut13 import Seed
from paygress.cashu.nut18 import decode_payment_request
from tests.peers.envoy import EnvoyProxy
from tests.peers.mint import NutshellMint
from tests.peers.paygress import PaygressProcess
from tests.peers.procs import VENV
from tests.peers.upstream import EchoUpstream
from tests.peers.wallet import CashuWallet

BOLD, DIM = "1", "2"


def styled(text: str, style: str) -> str:
    """`text` in bold or dim on a terminal; as it is in a pipe or a file, or with NO_COLOR."""
    plain = not sys.stdout.isatty() or "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb"
    return text if plain else f"\033[{style}m{text}\033[0m"


def step(text: str) -> None:
    print("\n" + styled(f"==> {text}", BOLD))


def show(response: httpx.Response, *headers: str) -> None:
    print(styled(f"HTTP {response.status_code}", DIM))
    for name in headers:
        if name in response.headers:
            value = response.headers[name]
            print(f"  {name}: {value if len(value) < 90 else value[:87] + '...'}")


def demo_config(mint_url: str, state: Path) -> dict[str, Any]:
    return {
        "state_dir": str(state),
        "mints": [mint_url],
        "log_level": "WARNING",
        "drain_seconds": 0,
        "routes": [
            {
                "name": "api",
                "description": "Demo API: 1 request per 2 sat",
                "match": {"path_prefix": "/api/"},
                "price": 2,
            },
            {
                "name": "stream",
                "match": {"path_prefix": "/stream/"},
                "mode": "per_second",
                "price": 1,
                "grants": 30,
            },
        ],
    }


async def walk(args: argparse.Namespace, work: Path) -> None:
    step("Starting a nutshell mint (FakeWallet), the echo upstream, Paygress and Envoy")
    mint = await NutshellMint(work / "mint").start()
    upstream = await EchoUpstream().start()
    paygress = await PaygressProcess(
        demo_config(mint.url, work / "state"), Seed.generate_mnemonic(), work / "paygress"
    ).start()
    envoy = await EnvoyProxy(
        work / "envoy", upstream=upstream.address, paygress_socket=paygress.socket_path
    ).start()
    wallet = await CashuWallet(work / "wallet").start()
    print(f"  mint      {mint.url}")
    print(f"  paygress  unix:{paygress.socket_path}")
    print(f"  envoy     {envoy.url}  (routes: /api/ 2 sat per request, /stream/ 1 sat per 30 s)")
    try:
        async with httpx.AsyncClient(base_url=envoy.url, trust_env=False, timeout=10) as http:
            step(f"curl {envoy.url}/public   (unpriced route: allowed at once)")
            show(await http.get("/public"))

            step(f"curl {envoy.url}/api/hello   (priced route, no payment)")
            r = await http.get("/api/hello")
            show(r, "x-cashu", "content-type")
            pr = decode_payment_request(r.headers["x-cashu"])
            print(f"  X-Cashu decodes (NUT-18): {pr.amount} {pr.unit}, mints {list(pr.mints)}")
            offer = r.json()["payment"]
            print(
                f"  it asks for {offer['amount']} {offer['unit']}: the price of "
                f"{offer['price']} plus the mint's input fee of {offer['mint_fee']} for "
                "spending the token (0.1 sat a proof, rounded up)"
            )
            body = r.json()
            print(f"  body: payment = {json.dumps(body['payment'])}")
            print(
                textwrap.fill(
                    body["how_to_pay"],
                    96,
                    initial_indent="        how_to_pay = ",
                    subsequent_indent="          ",
                )
            )

            amount = 3 * offer["price"] + offer["mint_fee"]
            step(
                f"Minting a {amount} sat token with nutshell's wallet (FakeWallet pays the "
                f"invoice): 3 requests at {offer['price']} sat, plus the mint's fee of "
                f"{offer['mint_fee']}"
            )
            token = await wallet.token(mint.url, amount)
            print(f"  token: {token[:40]}... ({len(token)} chars)")

            step(f"curl -H 'X-Cashu: cashuB...' {envoy.url}/api/hello   (paid)")
            r = await http.get("/api/hello", headers={"X-Cashu": token})
            show(r, "x-paygress-remaining", "x-paygress-grant")
            seen = r.json()["headers"]
            print("  the upstream saw:")
            for name in sorted(seen):
                if name.startswith("x-paygress-"):
                    print(f"    {name}: {seen[name]}")
            print(f"    x-cashu forwarded upstream: {'x-cashu' in seen}")

            step("The same token again, until what it paid for is used up")
            for _ in range(3):
                r = await http.get("/api/hello", headers={"Authorization": f"Cashu {token}"})
                reason = r.json().get("reason", "") if r.status_code != 200 else ""
                left = r.headers.get("x-paygress-remaining", "-")
                print(f"  HTTP {r.status_code} remaining={left} {reason}")

            step(
                f"paygress wallet --config {paygress.config_path} balance   (the operator's "
                "earnings, via the admin socket named in Paygress's config)"
            )
            cli = await asyncio.create_subprocess_exec(
                str(VENV / "bin" / "paygress"),
                "wallet",
                "--config",
                str(paygress.config_path),
                "balance",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await cli.communicate()
            print("  " + out.decode().strip())
            print(
                f"  the client paid {amount} sat; the mint kept its fee of {offer['mint_fee']} "
                "when Paygress swapped the token, so the operator holds the price it asked"
            )

        if args.keep:
            step("Running. Try it yourself; Ctrl-C stops everything.")
            print(f"  curl -i {envoy.url}/api/hello")
            print(f"  .venv/bin/paygress wallet --config {paygress.config_path} balance")
            await asyncio.Event().wait()
    finally:
        await wallet.aclose()
        for proc in (envoy, paygress, mint):
            await proc.stop()
        await upstream.stop()
    step("Done: every process stopped, temporary files removed.")
    print(
        '  To run the same pieces yourself, on fixed ports: README, "Run it by hand" '
        "(deploy/local/up)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--keep", action="store_true", help="keep everything running after the walk"
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="paygress-demo-") as tmp,
        contextlib.suppress(KeyboardInterrupt),
    ):
        asyncio.run(walk(args, Path(tmp)))


if __name__ == "__main__":
    main()
