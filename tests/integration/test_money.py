"""Money end to end: client → real Envoy → Paygress → a fault-injecting proxy → the real mint.

No paid sat is ever lost or unrestorable, whatever the mint's network does (answers lost,
swaps that land late, a trickling mint), whatever fake tokens come first, and whenever
Paygress is killed (-9) during a swap; and after losing the database, `paygress wallet
restore` finds every sat received from the seed alone. And every price is payable with
exactly what the 402 asks, in the fewest proofs.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import httpx
from coincurve import PrivateKey

from paygress.cashu.models import Proof, Token
from paygress.cashu.nut13 import Seed
from paygress.cashu.nut18 import decode_payment_request
from paygress.cashu.token import encode_token_v4
from tests.peers.mint import NutshellMint
from tests.peers.paygress import UNTHROTTLED
from tests.peers.upstream import EchoUpstream
from tests.peers.wallet import CashuWallet

from .test_payment_gate import Stack, gate_stack, reason

PRICES = range(1, 65)


async def sats(s: Stack) -> tuple[int, int]:
    """(spendable, pending) as `paygress wallet balance` prints them."""
    text = await s.balance()
    if "the wallet is empty" in text:
        return 0, 0
    found = re.search(r"(\d+) sat spendable\s+(\d+) sat pending", text)
    assert found, text
    return int(found[1]), int(found[2])


async def fake_token(s: Stack, proofs: int, amount: int = 2**20) -> str:
    """Well-formed, for the mint's real keyset, never signed by it."""
    keyset = next(k["id"] for k in await s.mint.keysets() if k["unit"] == "sat" and k["active"])
    fakes = tuple(
        Proof(keyset[:16], amount, secrets.token_hex(32), PrivateKey().public_key.format().hex())
        for _ in range(proofs)
    )
    return encode_token_v4(Token(s.proxy.url, "sat", fakes, None, 4))


async def pay(s: Stack, token: str, path: str = "/api/x") -> httpx.Response:
    return await s.http.get(path, headers={"X-Cashu": token})


async def pay_until_settled(
    s: Stack, token: str, within: float = 20.0, path: str = "/api/x"
) -> httpx.Response:
    """The client's side of a 503 payment_pending (a slow mint on a busy machine): the same
    token again, until answered."""
    deadline = time.monotonic() + within
    while True:
        r = await pay(s, token, path)
        if r.status_code != 503 or time.monotonic() > deadline:
            return r
        await asyncio.sleep(0.3)


async def test_every_price_is_payable_with_exactly_what_the_402_asks(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    routes = [{"name": f"p{n}", "match": {"path_prefix": f"/p/{n}/"}, "price": n} for n in PRICES]
    async with gate_stack(
        tmp, mint, upstream, wallet, Seed.generate_mnemonic(), routes=routes
    ) as s:
        asked: dict[int, int] = {}
        for n in PRICES:
            r = await s.http.get(f"/p/{n}/x")
            assert r.status_code == 402
            amount = decode_payment_request(r.headers["x-cashu"]).amount
            assert amount is not None
            asked[n] = amount
            assert r.json()["payment"]["price"] == n
        # nutshell's default input fee (100 ppk) costs 1 sat for up to ten proofs
        assert all(asked[n] == n + 1 for n in PRICES), asked
        tokens = await s.wallet.tokens(mint.url, [asked[n] for n in PRICES], token_mint=s.proxy.url)
        for n, token in zip(PRICES, tokens, strict=True):
            proofs = (await s.wallet.decode(token))["amounts"]
            assert len(proofs) == bin(asked[n]).count("1"), "minimal proofs"
            r = await pay_until_settled(s, token, path=f"/p/{n}/x")
            assert r.status_code == 200, (n, r.text)
            assert r.json()["headers"]["x-paygress-paid"] == str(n)
            assert r.headers["x-paygress-remaining"] == "0"  # exactly one request bought
        assert await sats(s) == (sum(PRICES), 0)


async def test_no_paid_sat_is_lost_to_fakes_lost_answers_late_swaps_or_kill_9(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    """Each step ends with the wallet holding exactly what honest clients paid; at the end
    the database is lost and restore finds all of it."""
    config: dict[str, Any] = {
        "payments": {"unproven_swaps": UNTHROTTLED, "swap_retry_seconds": 0.3}
    }
    async with gate_stack(tmp, mint, upstream, wallet, Seed.generate_mnemonic(), **config) as s:
        received = 0

        async def honest(amount: int) -> str:
            nonlocal received
            received += amount - 1  # nutshell's fee of 1 sat
            return await s.token(amount)

        # 1. Twelve fake 40-proof tokens: refused, and the counters they took are given back.
        for _ in range(12):
            r = await pay(s, await fake_token(s, 40))
            assert r.status_code == 400 and reason(r) == "mint_rejected", r.text
        r = await pay(s, await honest(8))
        assert r.status_code == 200, r.text
        assert await sats(s) == (received, 0)

        # 2. The answer is lost (held past the deadline, then dropped): the client hears 503,
        #    and the same token again is found out at the mint, not swapped twice.
        s.proxy.hold_response("/v1/swap")
        token = await honest(16)
        r = await pay(s, token)
        assert r.status_code == 503 and reason(r) == "payment_pending", r.text
        assert r.headers["retry-after"] == "7"
        s.proxy.drop_held()
        swaps = s.swaps()
        r = await pay_until_settled(s, token)
        assert r.status_code == 200, r.text
        assert s.swaps() == swaps, "found out by restore, not swapped again"
        assert await sats(s) == (received, 0)

        # 3. A slow swap lands after the retry has looked and found nothing; the retry's own
        #    swap is refused as spent, which is found out, not believed (never 400).
        s.proxy.hold_request("/v1/swap")
        token = await honest(4)
        r = await pay(s, token)
        assert r.status_code == 503, r.text
        s.proxy.hold_request("/v1/swap")  # the retry's swap is held too...
        retry = asyncio.create_task(pay(s, token))
        await s.proxy.wait_held(2)
        s.proxy.release()  # ...and both reach the mint now, the first one first or not
        r = await retry
        if r.status_code == 503:
            r = await pay_until_settled(s, token)
        assert r.status_code == 200, r.text
        assert await sats(s) == (received, 0)

        # 4. kill -9 while the swap is on its way (it never arrives), and 5. after the mint
        #    signed it (the answer never arrives): the next start settles both.
        for hold in (s.proxy.hold_request, s.proxy.hold_response):
            hold("/v1/swap")
            token = await honest(8)
            paying = asyncio.create_task(pay(s, token))
            await s.proxy.wait_held()
            s.paygress.kill()
            s.proxy.drop_held()
            assert (await paying).status_code in (502, 503)  # Envoy: Paygress went away
            await s.paygress.start()
            r = await pay_until_settled(s, token)
            assert r.status_code == 200, r.text
            assert await sats(s) == (received, 0)

        # 6. A trickling mint holds nobody beyond the deadlines.
        s.proxy.trickle("/v1/swap", 0.5)
        token = await honest(4)
        started = time.monotonic()
        r = await pay(s, token)
        assert r.status_code == 503 and time.monotonic() - started < 3.5, r.text
        s.proxy.release()
        assert (await pay_until_settled(s, token)).status_code == 200
        assert await sats(s) == (received, 0)

        # The database is lost: the seed and the mint have every sat.
        await s.paygress.stop()
        state = Path(s.paygress.config["state_dir"])
        await asyncio.to_thread(shutil.rmtree, state)
        await s.paygress.start()
        assert await sats(s) == (0, 0)
        out = await s.cli("restore")
        assert f"worth {received}" in out, out
        assert await sats(s) == (received, 0)


async def test_a_lost_answer_to_a_withdrawals_change_swap_loses_nothing(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    config: dict[str, Any] = {
        "payments": {"unproven_swaps": UNTHROTTLED, "swap_retry_seconds": 0.3}
    }
    async with gate_stack(tmp, mint, upstream, wallet, Seed.generate_mnemonic(), **config) as s:
        assert (await pay(s, await s.token(9))).status_code == 200  # 8 in the wallet: one proof
        assert await sats(s) == (8, 0)
        s.proxy.hold_response("/v1/swap")
        withdrawing = asyncio.create_task(s.cli_result("withdraw", "3"))
        await s.proxy.wait_held()
        s.proxy.drop_held()  # the mint split 8 into 3 + 4 (fee 1); the answer is lost
        code, _, err = await withdrawing
        assert code == 1 and "settled in the background" in err
        deadline = time.monotonic() + 10
        while await sats(s) != (7, 0):  # the background task finds the change out
            assert time.monotonic() < deadline, await s.balance()
            await asyncio.sleep(0.3)
        token = (await s.cli("withdraw", "3")).strip()  # and the next withdrawal works
        assert await sats(s) == (4, 3)
        assert await wallet.receive(token, mint_url=mint.url) == 2  # 3 less the receiver's fee
        assert await sats(s) == (4, 0)


def modes(directory: Path) -> tuple[int, dict[str, int]]:
    """The mode of a directory and of each file in it."""
    files = {f.name: stat.S_IMODE(f.stat().st_mode) for f in directory.iterdir()}
    return stat.S_IMODE(directory.stat().st_mode), files


async def test_the_state_directory_and_database_are_private(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    old = os.umask(0o022)
    try:
        async with gate_stack(tmp, mint, upstream, wallet, Seed.generate_mnemonic()) as s:
            assert (await pay(s, await s.token(3))).status_code == 200
            state = Path(s.paygress.config["state_dir"])
            directory, files = await asyncio.to_thread(modes, state)
            assert directory == 0o700
            assert files and set(files.values()) == {0o600}, files
    finally:
        os.umask(old)
