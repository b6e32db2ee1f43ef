"""Several replicas of one seed on one Redis, end to end: client → one real Envoy whose
`paygress` cluster balances over three Paygress processes → a counting proxy → the real mint,
with a real redis-server holding grants and the wallet.

Each replica also serves forward-auth on its own port, so a test can ask one replica in
particular (Envoy's round robin decides the others).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from paygress.cashu.nut13 import Seed
from tests.peers.envoy import EnvoyProxy, find_cluster
from tests.peers.mint import NutshellMint
from tests.peers.paygress import UNTHROTTLED, PaygressProcess, checks_at
from tests.peers.procs import LOOPBACK, VENV, free_port
from tests.peers.proxy import CountingProxy
from tests.peers.redis import RedisServer
from tests.peers.upstream import EchoUpstream
from tests.peers.wallet import CashuWallet

from .test_payment_gate import gate_config, reason

REPLICAS = 3


def balance_over(sockets: Sequence[Path]) -> Any:
    """An Envoy mutation: the `paygress` cluster's endpoints are these Unix sockets."""

    def mutate(config: dict[str, Any]) -> None:
        [locality] = find_cluster(config, "paygress")["load_assignment"]["endpoints"]
        locality["lb_endpoints"] = [
            {"endpoint": {"address": {"pipe": {"path": str(path)}}}} for path in sockets
        ]

    return mutate


@dataclass
class Replicas:
    mint: NutshellMint
    proxy: CountingProxy
    redis: RedisServer
    paygress: list[PaygressProcess]
    envoy: EnvoyProxy
    wallet: CashuWallet
    http: httpx.AsyncClient

    async def token(self, amount: int) -> str:
        return await self.wallet.token(self.mint.url, amount, token_mint=self.proxy.url)

    def swaps(self) -> int:
        return self.proxy.requests["/v1/swap"]

    async def on(self, replica: int, token: str, path: str = "/api/x") -> httpx.Response:
        """The decision of one replica in particular (its forward-auth port)."""
        port = self.paygress[replica].config["listen"]["http"].rsplit(":", 1)[1]
        headers = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": path}
        headers |= {"X-Cashu": token} if token else {}
        async with httpx.AsyncClient(trust_env=False, timeout=15) as client:
            return await client.get(f"http://{LOOPBACK}:{port}/", headers=headers)

    async def served(self, replica: int, token: str, within: float = 10) -> httpx.Response:
        """`on` again while it answers 503 (what a client does with Retry-After)."""
        deadline = time.monotonic() + within
        while (r := await self.on(replica, token)).status_code == 503:
            assert time.monotonic() < deadline, r.text
            await asyncio.sleep(0.2)
        return r

    async def cli(self, replica: int, *args: str) -> str:
        """`paygress wallet …` on this replica's admin socket; its output."""
        proc = await asyncio.create_subprocess_exec(
            str(VENV / "bin" / "paygress"),
            "wallet",
            "--socket",
            str(self.paygress[replica].admin_socket_path),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, err.decode()
        return out.decode()

    async def balance(self, replica: int) -> tuple[int, int]:
        """(spendable, pending) as `paygress wallet balance` on this replica prints them."""
        out = await self.cli(replica, "balance")
        if "the wallet is empty" in out:
            return 0, 0
        found = re.search(r"(\d+) sat spendable\s+(\d+) sat pending", out)
        assert found, out
        return int(found[1]), int(found[2])


@contextlib.asynccontextmanager
async def replicas(
    workdir: Path, mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet
) -> AsyncIterator[Replicas]:
    proxy = await CountingProxy.to_url(mint.url).start()
    redis = await RedisServer(workdir / "redis").start()
    mnemonic = Seed.generate_mnemonic()
    paygress = []
    try:
        for i in range(REPLICAS):
            config = gate_config(proxy.url, workdir / f"state{i}") | {
                "store": {"backend": "redis", "url": redis.url},
                "payments": {"unproven_swaps": UNTHROTTLED, "swap_retry_seconds": 0.3},
            }
            config["listen"] = {"http": f"{LOOPBACK}:{free_port()}"}
            paygress.append(
                await PaygressProcess(
                    config, mnemonic, workdir / f"p{i}", name=f"paygress{i}"
                ).start()
            )
        envoy = await EnvoyProxy(
            workdir / "envoy",
            upstream=upstream.address,
            paygress_socket=paygress[0].socket_path,
            mutate=balance_over([p.socket_path for p in paygress]),
        ).start()
        async with httpx.AsyncClient(base_url=envoy.url, trust_env=False, timeout=15) as http:
            yield Replicas(mint, proxy, redis, paygress, envoy, wallet, http)
        await envoy.stop()
    finally:
        for p in paygress:
            await p.stop()
        await redis.stop()
        await proxy.stop()


async def pay_all(s: Replicas, token: str, count: int) -> Counter[int]:
    """`count` presentations of one token at once through Envoy; a 503 is sent again (what
    a client does with payment_pending), so each ends with a decision. Status counts."""

    async def one() -> int:
        for _ in range(20):
            r = await s.http.get("/api/x", headers={"X-Cashu": token})
            if r.status_code != 503:
                assert r.status_code == 200 or reason(r) == "exhausted", r.text
                return r.status_code
            await asyncio.sleep(0.2)
        raise AssertionError(f"still 503: {r.text}")

    return Counter(await asyncio.gather(*(one() for _ in range(count))))


async def test_replicas_share_one_seed_exactly(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    async with replicas(tmp, mint, upstream, wallet) as s:
        # 50 presentations of one fresh token, spread by Envoy over the three replicas:
        # one swap at the mint, and exactly the 10 requests the token paid for.
        token = await s.token(21)  # 20 after the mint's fee: 10 requests at 2 sat
        swaps = s.swaps()
        statuses = await pay_all(s, token, 50)
        assert statuses == Counter({200: 10, 402: 40}), statuses
        assert s.swaps() == swaps + 1
        paid = 20

        # A token paid on replica 0 works on replicas 1 and 2, request by request exactly.
        token = await s.token(7)  # 6: 3 requests
        assert (await s.on(0, token)).status_code == 200
        assert (await s.on(1, token)).status_code == 200
        assert (await s.on(2, token)).status_code == 200
        assert reason(await s.on(1, token)) == "exhausted"
        paid += 6
        for i in range(REPLICAS):
            assert await s.balance(i) == (paid, 0)

        # Every replica restarts: the used-up token is refused, the partly used one goes on.
        partly = await s.token(7)
        assert (await s.on(2, partly)).status_code == 200
        paid += 6
        for p in s.paygress:
            await p.restart()
        assert reason(await s.on(0, token)) == "exhausted"
        assert reason(await s.on(1, token)) == "exhausted"
        left = [(await s.on(i, partly)).status_code for i in (1, 0, 2)]
        assert left == [200, 200, 402], "the two requests it had left, on any replica"
        assert s.swaps() == swaps + 3


async def test_replicas_accept_a_locked_token_offline_and_swap_it_once(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    async with replicas(tmp, mint, upstream, wallet) as s:
        # Every replica asks for the lock to one key (the seed's), and the three background
        # loops (every 2 s) race for the one queued token: one swap, every sat, once.
        keys = {(await s.on(i, "")).json()["payment"]["lock"]["pubkey"] for i in range(REPLICAS)}
        [key] = keys
        token = await s.wallet.send(s.mint.url, 21, lock=key, dleq=True, token_mint=s.proxy.url)
        swaps = s.swaps()
        statuses = await pay_all(s, token, 30)
        assert statuses == Counter({200: 10, 402: 20}), statuses
        await s.proxy.wait_for_requests("/v1/swap", swaps + 1, timeout=15)
        deadline = time.monotonic() + 15
        while (balance := await s.balance(1)) != (20, 0):
            assert time.monotonic() < deadline, balance
            await asyncio.sleep(0.3)
        await asyncio.sleep(5)  # two more rounds of every loop: nothing left to swap
        assert s.swaps() == swaps + 1
        assert [await s.balance(i) for i in range(REPLICAS)] == [(20, 0)] * REPLICAS


async def test_a_replica_killed_mid_swap_loses_nothing(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    async with replicas(tmp, mint, upstream, wallet) as s:
        paid = 0
        # kill -9 while the swap is on its way (it never arrives), then after the mint signed
        # it (the answer never arrives): another replica settles both, the payer is served.
        for hold in (s.proxy.hold_request, s.proxy.hold_response):
            hold("/v1/swap")
            token = await s.token(9)  # 8 after the fee
            paying = asyncio.create_task(s.on(0, token))
            await s.proxy.wait_held()
            s.paygress[0].kill()
            s.proxy.drop_held()
            with contextlib.suppress(httpx.HTTPError):
                await paying
            paid += 8
            r = await s.served(1, token, within=20)  # 503 while the dead one's claim lasts
            assert r.status_code == 200, r.text
            assert await s.balance(2) == (paid, 0)
            await s.paygress[0].start()
            assert await s.balance(0) == (paid, 0)

        # Redis loses everything: the seed and the mint have every sat the replicas received.
        for p in s.paygress:
            await p.stop()
        await s.redis.stop()
        for path in s.redis.workdir.iterdir():
            if path.name.startswith("appendonly"):
                await asyncio.to_thread(shutil.rmtree, path)
        await s.redis.start()
        for p in s.paygress:
            await p.start()
        assert await s.balance(1) == (0, 0)
        assert f"worth {paid}" in await s.cli(1, "restore")
        assert [await s.balance(i) for i in range(REPLICAS)] == [(paid, 0)] * REPLICAS


async def test_redis_stopped_is_503_and_restarted_loses_nothing(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    async with replicas(tmp, mint, upstream, wallet) as s:
        token = await s.token(21)  # 10 requests
        assert (await s.on(0, token)).status_code == 200
        fresh = await s.token(5)
        swaps = s.swaps()
        await s.redis.stop()
        for i in range(REPLICAS):
            r = await s.on(i, fresh)
            assert r.status_code == 503 and reason(r) == "store_unavailable", r.text
            assert r.headers["retry-after"] == "7"
        # Cached grants fail closed (the default): no decision on what may be stale.
        deadline = time.monotonic() + 5
        while (r := await s.on(0, token)).status_code != 503:
            assert time.monotonic() < deadline, "the replica never noticed the outage"
            await asyncio.sleep(0.2)
        assert reason(r) == "store_unavailable"
        assert s.swaps() == swaps, "no swap that could not be recorded"
        assert all(p.running for p in s.paygress), "no crash"
        await s.redis.start()
        # Each replica serves again once its probe (every second) reaches Redis.
        assert (await s.served(1, token)).status_code == 200
        assert (await s.served(2, fresh)).status_code == 200
        statuses = await pay_all(s, token, 12)
        assert statuses == Counter({200: 8, 402: 4}), statuses  # 10 paid: 2 used before
        for i in range(REPLICAS):
            assert await s.balance(i) == (24, 0)


async def test_two_workers_in_one_pod_serve_one_token_exactly(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    proxy = await CountingProxy.to_url(mint.url).start()
    redis = await RedisServer(tmp / "redis").start()
    metrics = free_port(run=2)  # worker i serves metrics on port + i
    config = gate_config(proxy.url, tmp / "state") | {
        "store": {"backend": "redis", "url": redis.socket_url},
        "workers": 2,
        "metrics": {"listen": f"{LOOPBACK}:{metrics}"},
    }
    config["listen"] = {"http": f"{LOOPBACK}:{free_port()}"}
    paygress = await PaygressProcess(config, Seed.generate_mnemonic(), tmp / "p").start()
    sockets = paygress.worker_sockets
    envoy = await EnvoyProxy(
        tmp / "envoy",
        upstream=upstream.address,
        paygress_socket=sockets[0],
        mutate=balance_over(sockets),
    ).start()
    try:
        async with httpx.AsyncClient(base_url=envoy.url, trust_env=False, timeout=15) as http:
            s = Replicas(mint, proxy, redis, [paygress], envoy, wallet, http)
            token = await s.token(21)  # 10 requests
            statuses = await pay_all(s, token, 30)
            assert statuses == Counter({200: 10, 402: 20}), statuses
            assert s.swaps() == 1
            assert await s.balance(0) == (20, 0), "worker 0 serves the wallet admin"
            async with httpx.AsyncClient(trust_env=False) as client:
                checks = [
                    await checks_at(client, f"http://{LOOPBACK}:{port}/metrics")
                    for port in (metrics, metrics + 1)
                ]
            assert all(c > 5 for c in checks), f"Envoy balanced over both workers: {checks}"
        await envoy.stop()
        assert await paygress.stop() == 0, "SIGTERM drains every worker, the supervisor exits 0"
        assert not any(path.exists() for path in sockets)
    finally:
        await envoy.stop()
        await paygress.stop()
        await redis.stop()
        await proxy.stop()
