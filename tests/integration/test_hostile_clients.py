"""Hostile clients end to end: client → real Envoy → Paygress → a counting proxy → the real
nutshell mint. Anything a client can send without paying costs bounded mint calls: a fake
token one swap at most (its replays none), a tampered DLEQ proof or an unknown keyset none,
a proof the mint reported spent none in any later token; and a flood of fakes cannot spend
the mint's own rate limit (on here, for Paygress's address) that honest payments need.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from coincurve import PrivateKey

from paygress.cashu.models import Proof, Token
from paygress.cashu.nut13 import Seed
from paygress.cashu.token import encode_token_v3, encode_token_v4, parse_token
from tests.peers.mint import NutshellMint
from tests.peers.paygress import UNTHROTTLED
from tests.peers.procs import free_port
from tests.peers.upstream import EchoUpstream
from tests.peers.wallet import CashuWallet

from .test_payment_gate import Stack, gate_stack, reason

# The mint's own limits (nutshell's defaults, switched on): per client address, per minute.
MINT_LIMITS = {
    "MINT_RATE_LIMIT": "true",
    "MINT_TRANSACTION_RATE_LIMIT_PER_MINUTE": "20",
    "MINT_GLOBAL_RATE_LIMIT_PER_MINUTE": "60",
}


async def fake_token(s: Stack, proofs: int = 3, amount: int = 64) -> str:
    """Well-formed, for the mint's real keyset, never signed by it (no DLEQ proofs)."""
    keyset = next(k["id"] for k in await s.mint.keysets() if k["unit"] == "sat" and k["active"])
    fakes = tuple(
        Proof(keyset[:16], amount, secrets.token_hex(32), PrivateKey().public_key.format().hex())
        for _ in range(proofs)
    )
    return encode_token_v4(Token(s.proxy.url, "sat", fakes, None, 4))


def client_at(s: Stack, address: str) -> httpx.AsyncClient:
    """A client connecting to Envoy from `address` (any of 127.0.0.0/8 on Linux)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=s.envoy.url, transport=transport, trust_env=False, timeout=15)


def mint_calls(s: Stack) -> int:
    return s.proxy.total_requests


# -- one client, one kind of fake at a time (the mint's limiter off) ------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet
) -> AsyncIterator[Stack]:
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="pg-hostile-"))
    async with gate_stack(workdir, mint, upstream, wallet, Seed.generate_mnemonic()) as s:
        assert (
            await s.http.get("/api/x", headers={"X-Cashu": await s.token(3)})
        ).status_code == 200
        yield s  # keysets and keys known: what follows is what a fake costs on top


async def test_a_fake_token_costs_one_swap_and_its_replays_none(stack: Stack) -> None:
    token = await fake_token(stack)
    before = stack.swaps()
    r = await stack.http.get("/api/x", headers={"X-Cashu": token})
    assert r.status_code == 400 and reason(r) == "mint_rejected", r.text
    assert stack.swaps() == before + 1
    calls = mint_calls(stack)
    for _ in range(10):
        r = await stack.http.get("/api/x", headers={"X-Cashu": token})
        assert r.status_code == 400 and reason(r) == "mint_rejected"
    other = encode_token_v3(parse_token(token))  # the same proofs in another encoding
    r = await stack.http.get("/api/x", headers={"X-Cashu": other})
    assert r.status_code == 400 and reason(r) == "mint_rejected"
    assert mint_calls(stack) == calls, "replays are refused from memory"


async def test_a_tampered_dleq_proof_is_refused_with_no_mint_call(stack: Stack) -> None:
    real = parse_token(await stack.wallet.token(stack.mint.url, 5, include_dleq=True))
    first = real.proofs[0]
    assert first.dleq is not None and first.dleq.r is not None
    forged = replace(first, dleq=replace(first.dleq, s=secrets.token_hex(32)))
    token = encode_token_v4(replace(real, mint=stack.proxy.url, proofs=(forged, *real.proofs[1:])))
    calls = mint_calls(stack)
    r = await stack.http.get("/api/x", headers={"X-Cashu": token})
    assert r.status_code == 400 and reason(r) == "invalid_dleq", r.text
    assert mint_calls(stack) == calls
    # The untampered token is proven, and pays.
    good = encode_token_v4(replace(real, mint=stack.proxy.url))
    assert (await stack.http.get("/api/x", headers={"X-Cashu": good})).status_code == 200


async def test_unknown_keysets_cost_at_most_one_refresh(stack: Stack) -> None:
    calls = stack.proxy.requests["/v1/keysets"]
    for _ in range(20):
        real = parse_token(await fake_token(stack))
        unknown = tuple(replace(p, keyset_id="00" + secrets.token_hex(7)) for p in real.proofs)
        token = encode_token_v4(replace(real, proofs=unknown))
        r = await stack.http.get("/api/x", headers={"X-Cashu": token})
        assert r.status_code == 400 and reason(r) == "unknown_keyset", r.text
    assert stack.proxy.requests["/v1/keysets"] - calls <= 1


async def test_a_proof_the_mint_reported_spent_is_refused_in_any_later_token(
    stack: Stack,
) -> None:
    spent, fresh = (parse_token(t) for t in await stack.wallet.tokens(stack.mint.url, [4, 8]))
    await stack.wallet.receive(encode_token_v4(spent))  # spent elsewhere first
    token = encode_token_v4(replace(spent, mint=stack.proxy.url))
    r = await stack.http.get("/api/x", headers={"X-Cashu": token})
    assert r.status_code == 400 and reason(r) == "already_spent", r.text
    calls = mint_calls(stack)
    mixed = replace(fresh, mint=stack.proxy.url, proofs=(*fresh.proofs, *spent.proofs))
    r = await stack.http.get("/api/x", headers={"X-Cashu": encode_token_v4(mixed)})
    assert r.status_code == 400 and reason(r) == "already_spent", r.text
    assert mint_calls(stack) == calls, "refused from memory: the spent proof is known"
    # The fresh proofs alone still pay.
    alone = encode_token_v4(replace(fresh, mint=stack.proxy.url))
    assert (await stack.http.get("/api/x", headers={"X-Cashu": alone})).status_code == 200


async def test_require_dleq_refuses_unproven_tokens_before_the_mint(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    payments = {"require_dleq": True, "unproven_swaps": UNTHROTTLED}
    async with gate_stack(
        tmp, mint, upstream, wallet, Seed.generate_mnemonic(), payments=payments
    ) as s:
        r = await s.http.get("/api/x", headers={"X-Cashu": await s.token(3)})
        assert r.status_code == 400 and reason(r) == "dleq_required", r.text
        assert s.swaps() == 0
        proven = await s.wallet.token(mint.url, 3, include_dleq=True, token_mint=s.proxy.url)
        assert (await s.http.get("/api/x", headers={"X-Cashu": proven})).status_code == 200


# -- a flood against the mint's own rate limiter ---------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def limited_mint(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NutshellMint]:
    """A mint that limits swaps to 20 a minute per client address (except 127.0.0.1)."""
    async with NutshellMint(
        tmp_path_factory.mktemp("limited_mint"), name="limited_mint", extra_env=MINT_LIMITS
    ) as peer:
        yield peer


def budget(per_client: int) -> dict[str, Any]:
    return {
        "unproven_swaps": {
            "per_mint_per_minute": 12,
            "per_mint_burst": 12,
            "per_client_per_minute": per_client,
            "per_client_burst": per_client,
        }
    }


async def flood(s: Stack, fakes: int, honest: int, *, proven: int = 0) -> dict[str, Any]:
    """`fakes` fake tokens (half of them replays) from 127.0.0.5, and at the same time
    `honest` first payments from other addresses (and `proven` DLEQ-proven ones from the
    attacker's own address). Returns what each side got."""
    tokens = [await fake_token(s) for _ in range(fakes // 2)]
    tokens += tokens
    honest_tokens = await s.wallet.tokens(s.mint.url, [3] * honest, token_mint=s.proxy.url)
    proven_tokens = await s.wallet.tokens(
        s.mint.url, [3] * proven, include_dleq=True, token_mint=s.proxy.url
    )
    async with contextlib.AsyncExitStack() as stack:
        attacker = await stack.enter_async_context(client_at(s, "127.0.0.5"))
        clients = [
            await stack.enter_async_context(client_at(s, f"127.0.0.{10 + i}"))
            for i in range(honest)
        ]

        async def attack() -> list[int]:
            results = []
            for batch in range(0, len(tokens), 10):
                answers = await asyncio.gather(
                    *(
                        attacker.get("/api/x", headers={"X-Cashu": t})
                        for t in tokens[batch : batch + 10]
                    )
                )
                results += [r.status_code for r in answers]
            return results

        async def pay(client: httpx.AsyncClient, token: str) -> httpx.Response:
            """An honest client: it follows a 503's Retry-After (a slow mint on a busy
            machine may need more than the check's deadline), never a 429's."""
            await asyncio.sleep(0.05)
            for _ in range(3):
                r = await client.get("/api/x", headers={"X-Cashu": token})
                if r.status_code != 503:
                    break
                await asyncio.sleep(1)
            return r

        fake_codes, honest_answers, proven_answers = await asyncio.gather(
            attack(),
            asyncio.gather(*(pay(c, t) for c, t in zip(clients, honest_tokens, strict=True))),
            asyncio.gather(*(pay(attacker, t) for t in proven_tokens)),
        )
    return {"fakes": fake_codes, "honest": honest_answers, "proven": proven_answers}


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert found
    return int(found[1])


async def test_a_flood_of_fakes_leaves_honest_first_payments_alone(
    limited_mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    """Paygress's mint traffic comes from 127.0.0.2, which the mint's limiter counts (20
    swaps a minute). Fakes from one address may cost its per-client budget (3) and no more;
    the honest first payments from other addresses, and DLEQ-proven ones from the attacker's
    own address, all pay."""
    metrics_port = free_port()
    async with gate_stack(
        tmp / "a",
        limited_mint,
        upstream,
        wallet,
        Seed.generate_mnemonic(),
        proxy_source="127.0.0.2",
        payments=budget(per_client=3) | {"refusals_max": 50},
        metrics={"listen": f"127.0.0.1:{metrics_port}"},
    ) as s:
        pid = s.paygress.pid
        assert pid is not None
        rss_before = await asyncio.to_thread(rss_kib, pid)
        started = time.monotonic()
        got = await flood(s, fakes=200, honest=8, proven=3)
        elapsed = time.monotonic() - started
        rss_after = await asyncio.to_thread(rss_kib, pid)
        failed = [r.text for r in got["honest"] if r.status_code != 200]
        assert not failed, (failed, s.paygress.log_tail())
        assert [r.status_code for r in got["proven"]] == [200] * 3
        fakes = got["fakes"]
        assert set(fakes) <= {400, 429}, fakes
        metrics = (await s.http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        # Swaps the mint refused: the fakes' (honest swaps are never refused).
        refused = re.search(
            r'^paygress_mint_requests_total\{endpoint="/v1/swap",[^}]*outcome="4xx"\} (\S+)$',
            metrics,
            re.M,
        )
        swaps_by_fakes = int(float(refused[1])) if refused else 0
        bound = 3 + 3 * elapsed / 60  # the client's bucket: its burst, then 3 a minute
        assert 1 <= swaps_by_fakes <= bound, (swaps_by_fakes, elapsed)
        assert fakes.count(429) >= len(fakes) // 2 - swaps_by_fakes
        remembered = re.search(r"^paygress_refusals_remembered (\S+)$", metrics, re.M)
        assert remembered and float(remembered[1]) <= 50, metrics
        assert rss_after - rss_before < 30 * 1024, (rss_before, rss_after)


async def test_without_a_budget_fakes_spend_the_mints_limit_that_honest_payments_need(
    limited_mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    """The control: the mint's limiter is real, and it is the budget that keeps fakes from
    spending it (a fresh source address, 127.0.0.3, so the limiter starts afresh)."""
    async with gate_stack(
        tmp / "b",
        limited_mint,
        upstream,
        wallet,
        Seed.generate_mnemonic(),
        proxy_source="127.0.0.3",
        payments={"unproven_swaps": UNTHROTTLED},
    ) as s:
        async with client_at(s, "127.0.0.5") as attacker:
            for _ in range(25):
                await attacker.get("/api/x", headers={"X-Cashu": await fake_token(s)})
        async with client_at(s, "127.0.0.6") as honest:
            r = await honest.get("/api/x", headers={"X-Cashu": await s.token(3)})
        assert r.status_code == 503 and reason(r) == "mint_unavailable", r.text
