"""Offline acceptance end to end: nutshell's wallet locks tokens to the operator's key with DLEQ
proofs (`cashu send --lock P2PK:<key> --dleq`, `cashu pay <creqA…>`); real Envoy; Paygress;
the real mint behind a counting proxy. Such a token is granted with no mint call during the
request and swapped in the background, also across a restart and kill -9; everything else
takes the online path or is refused, never passes free.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from paygress.cashu.nut13 import Seed
from paygress.cashu.nut18 import decode_payment_request
from paygress.cashu.token import encode_token_v4, parse_token
from tests.peers.mint import NutshellMint
from tests.peers.paygress import UNTHROTTLED
from tests.peers.procs import VENV, VENV_MINT, base_env
from tests.peers.upstream import EchoUpstream
from tests.peers.wallet import CashuWallet

from .test_money import sats
from .test_payment_gate import Stack, gate_stack, reason


def offline_config(interval: float) -> dict[str, Any]:
    return {
        "payments": {"unproven_swaps": UNTHROTTLED},
        "offline": {"interval_seconds": interval, "locktime_margin_seconds": 600},
    }


async def pubkey_of(mnemonic: str, tmp: Path) -> str:
    """What `paygress pubkey` prints for the seed."""
    proc = await asyncio.create_subprocess_exec(
        str(VENV / "bin" / "paygress"),
        "pubkey",
        env=base_env(tmp, {"PAYGRESS_MNEMONIC": mnemonic}),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return out.decode().strip()


async def locked(s: Stack, amount: int, key: str, **kwargs: Any) -> str:
    return await s.wallet.send(
        s.mint.url, amount, lock=key, dleq=True, token_mint=s.proxy.url, **kwargs
    )


async def paid_without_the_mint(s: Stack, token: str) -> httpx.Response:
    """The request, and proof that no request reached the mint while it was answered."""
    started = time.monotonic()
    r = await s.http.get("/api/x", headers={"X-Cashu": token})
    assert s.proxy.requests_between(started, time.monotonic()) == [], "the mint was asked"
    return r


async def test_a_locked_token_pays_with_no_mint_call_and_is_swapped_in_the_background(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    mnemonic = Seed.generate_mnemonic()
    key = await pubkey_of(mnemonic, tmp)
    async with gate_stack(tmp, mint, upstream, wallet, mnemonic, **offline_config(1.0)) as s:
        # The 402 asks for the lock, and nutshell's own NUT-18 decoder reads it.
        r = await s.http.get("/api/x")
        assert r.status_code == 402
        assert decode_payment_request(r.headers["x-cashu"]).nut10 is not None
        decoded = await s.wallet.decode_request(r.headers["x-cashu"])
        assert decoded["nut10"] == {"k": "P2PK", "d": key}
        assert r.json()["payment"]["lock"] == {"kind": "P2PK", "pubkey": key}
        assert key in r.json()["how_to_pay"]

        token = await locked(s, 5, key)  # `cashu send 5 --lock P2PK:<key> --dleq`
        assert "P2PK" in (await s.wallet.decode(token))["secrets"][0]
        swaps = s.swaps()
        r = await paid_without_the_mint(s, token)
        assert r.status_code == 200, r.text
        assert r.json()["headers"]["x-paygress-paid"] == "4"  # 5 less the mint's fee
        await s.proxy.wait_for_requests("/v1/swap", swaps + 1, timeout=10)
        deadline = time.monotonic() + 10
        while await sats(s) != (4, 0):
            assert time.monotonic() < deadline, await s.balance()
            await asyncio.sleep(0.2)

        # `cashu pay <the 402's X-Cashu>` pays it too, offline.
        request = (await s.http.get("/api/x")).headers["x-cashu"]
        token = await s.wallet.pay_request(request, mint_url=mint.url, token_mint=s.proxy.url)
        r = await paid_without_the_mint(s, token)
        assert r.status_code == 200, r.text

        # Replays are answered from the store: used up, not granted again.
        for _ in range(3):
            await s.http.get("/api/x", headers={"X-Cashu": token})
        r = await s.http.get("/api/x", headers={"X-Cashu": token})
        assert r.status_code == 402 and reason(r) == "exhausted"


async def test_locked_tokens_survive_restart_and_kill_9_before_their_swap(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    mnemonic = Seed.generate_mnemonic()
    key = await pubkey_of(mnemonic, tmp)
    never = offline_config(3600)  # the queue is worked at start only
    async with gate_stack(tmp, mint, upstream, wallet, mnemonic, **never) as s:
        paid = 0
        for stop in ("restart", "kill -9"):
            token = await locked(s, 9, key)
            r = await paid_without_the_mint(s, token)
            assert r.status_code == 200, r.text
            paid += 8  # 9 = 8 + 1, less the mint's fee of 1
            if stop == "restart":
                await s.paygress.restart()
            else:
                s.paygress.kill()
                await s.paygress.start()
            deadline = time.monotonic() + 15
            while await sats(s) != (paid, 0):
                assert time.monotonic() < deadline, await s.balance()
                await asyncio.sleep(0.2)
            # ...and the token is still known: its replay after the restart is not free.
            r = await s.http.get("/api/x", headers={"X-Cashu": token})
            assert r.status_code == 200  # 8 sat bought 4 requests
        # What was paid is restorable from the seed alone.
        await s.paygress.stop()
        await asyncio.to_thread(shutil.rmtree, Path(s.paygress.config["state_dir"]))
        await s.paygress.start()
        assert f"worth {paid}" in await s.cli("restore")
        assert await sats(s) == (paid, 0)


async def test_whatever_is_not_locked_to_us_alone_is_refused_or_swapped_online(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    mnemonic = Seed.generate_mnemonic()
    key = await pubkey_of(mnemonic, tmp)
    async with gate_stack(tmp, mint, upstream, wallet, mnemonic, **offline_config(1.0)) as s:
        # Locked to another key: refused, the mint never asked.
        stranger = await pubkey_of(Seed.generate_mnemonic(), tmp)
        r = await paid_without_the_mint(s, await locked(s, 5, stranger))
        assert r.status_code == 400 and reason(r) == "locked_to_another_key", r.text
        # A tampered DLEQ proof: refused, the mint never asked.
        real = parse_token(await locked(s, 5, key))
        first = real.proofs[0]
        assert first.dleq is not None
        forged = replace(first, dleq=replace(first.dleq, e=secrets.token_hex(32)))
        tampered = encode_token_v4(replace(real, proofs=(forged, *real.proofs[1:])))
        r = await paid_without_the_mint(s, tampered)
        assert r.status_code == 400 and reason(r) == "invalid_dleq", r.text
        # A lock that the payer can take back within the margin: swapped now, with our
        # signature (the mint checks it).
        swaps = s.swaps()
        r = await s.http.get(
            "/api/x", headers={"X-Cashu": await locked(s, 5, key, timelock_seconds=60)}
        )
        assert r.status_code == 200, r.text
        assert s.swaps() == swaps + 1


async def test_with_the_mint_down_locked_tokens_still_pay_and_are_swapped_later(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    mnemonic = Seed.generate_mnemonic()
    key = await pubkey_of(mnemonic, tmp)
    async with gate_stack(tmp, mint, upstream, wallet, mnemonic, **offline_config(0.5)) as s:
        first = await s.http.get("/api/x", headers={"X-Cashu": await s.token(3)})
        assert first.status_code == 200  # the mint's keysets and keys are known now
        token, unlocked = await locked(s, 5, key), await s.token(5)
        await s.mint.stop()
        try:
            r = await s.http.get("/api/x", headers={"X-Cashu": token})
            assert r.status_code == 200, r.text
            r = await s.http.get("/api/x", headers={"X-Cashu": unlocked})
            assert r.status_code == 503, r.text
        finally:
            await s.mint.start()
        # Both end in the wallet: the locked token from the queue, the unlocked one's swap
        # (sent as far as Paygress knows: through the proxy) found out by the open-swap task.
        deadline = time.monotonic() + 30  # both back off while the mint is away
        while await sats(s) != (2 + 4 + 4, 0):
            assert time.monotonic() < deadline, await s.balance()
            await asyncio.sleep(0.3)
        r = await s.http.get("/api/x", headers={"X-Cashu": unlocked})
        assert r.status_code == 200, r.text


async def cashu_cli(workdir: Path, mint_url: str, *args: str) -> str:
    """nutshell's own `cashu` command line, in a wallet directory of its own."""
    proc = await asyncio.create_subprocess_exec(
        str(VENV_MINT / "bin" / "cashu"),
        "--host",
        mint_url,
        "--yes",
        *args,
        env=base_env(workdir, {"CASHU_DIR": str(workdir / "cashu")}),
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    # nutshell's CLI imports a lot and talks to the mint: minutes on a loaded 2-core machine
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode == 0, out.decode()
    return out.decode()


@pytest.mark.timeout(420)
async def test_nutshells_cli_pays_the_402_as_it_stands(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    """`cashu pay <the X-Cashu of a 402>`: the README's recipe, with the real CLI."""
    mnemonic = Seed.generate_mnemonic()
    async with gate_stack(tmp, mint, upstream, wallet, mnemonic, **offline_config(1.0)) as s:
        cli_dir = tmp / "cli"
        cli_dir.mkdir()
        await cashu_cli(cli_dir, s.proxy.url, "invoice", "16")  # FakeWallet pays it
        request = (await s.http.get("/api/x")).headers["x-cashu"]
        out = await cashu_cli(cli_dir, s.proxy.url, "pay", request)
        token = next(word for word in out.split() if word.startswith("cashuB"))
        r = await paid_without_the_mint(s, token)
        assert r.status_code == 200, (r.text, out)
