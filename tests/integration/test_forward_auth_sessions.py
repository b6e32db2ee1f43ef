"""Paid sessions behind the forward-auth proxies: real NGINX on deploy/nginx/nginx.conf (its
session cache) and real Traefik on deploy/traefik/ (the session as a cookie, no cache), in front
of Paygress's listen.http and a real mint. Checks are counted at Paygress
(`paygress_checks_total`): what NGINX answers from its cache never reaches it.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest_asyncio

from tests.integration.test_sessions import MNEMONIC as SESSIONS_MNEMONIC
from tests.integration.test_sessions import claims_of, pay, signed
from tests.peers.mint import NutshellMint
from tests.peers.nginx import NginxProxy
from tests.peers.paygress import UNTHROTTLED, PaygressProcess, checks_at
from tests.peers.procs import LOOPBACK, free_port, wait_for_http
from tests.peers.proxy import CountingProxy
from tests.peers.traefik import TraefikProxy
from tests.peers.upstream import EchoUpstream
from tests.peers.wallet import CashuWallet

COOKIE = "paygress-session"


@dataclass
class Stack:
    mint: NutshellMint
    proxy: CountingProxy
    paygress: PaygressProcess
    upstream: EchoUpstream
    wallet: CashuWallet
    nginx: httpx.AsyncClient
    traefik: httpx.AsyncClient
    metrics_url: str

    async def token(self, amount: int) -> str:
        return await self.wallet.token(self.mint.url, amount, token_mint=self.proxy.url)

    async def checks(self) -> int:
        return await checks_at(self.nginx, self.metrics_url)

    def seen(self) -> dict[str, str]:
        headers: dict[str, str] = self.upstream.requests[-1]["headers"]
        return headers


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet
) -> AsyncIterator[Stack]:
    work = Path(tempfile.mkdtemp(prefix="pg-fa-sessions-"))
    http_port, metrics_port = free_port(), free_port()
    proxy = await CountingProxy.to_url(mint.url).start()
    config = {
        "state_dir": str(work / "state"),
        "mints": [proxy.url],
        "drain_seconds": 0,
        "log_level": "WARNING",
        "listen": {"http": f"{LOOPBACK}:{http_port}"},
        "metrics": {"listen": f"{LOOPBACK}:{metrics_port}"},
        "payments": {"unproven_swaps": UNTHROTTLED},
        "sessions": {"cookie": COOKIE},
        "routes": [
            {
                "name": "stream",  # the time route of deploy/nginx/nginx.conf's map
                "match": {"path_prefix": "/stream/"},
                "mode": "per_second",
                "price": 1,
                "grants": 4,
            },
            {"name": "api", "match": {"path_prefix": "/api/"}, "price": 1},
        ],
    }
    # The seed of test_sessions, whose `signed` makes sessions with its key.
    paygress = await PaygressProcess(config, SESSIONS_MNEMONIC, work / "paygress").start()
    await wait_for_http(f"http://{LOOPBACK}:{http_port}/healthz", proc=paygress)
    address = (LOOPBACK, http_port)
    nginx = await NginxProxy(work / "nginx", upstream=upstream.address, paygress=address).start()
    traefik = await TraefikProxy(
        work / "traefik", upstream=upstream.address, paygress=address
    ).start()
    clients = [
        httpx.AsyncClient(base_url=p.url, trust_env=False, timeout=15) for p in (nginx, traefik)
    ]
    try:
        yield Stack(
            mint, proxy, paygress, upstream, wallet, clients[0], clients[1],
            f"http://{LOOPBACK}:{metrics_port}/metrics",
        )  # fmt: skip
    finally:
        for client in clients:
            await client.aclose()
        await traefik.stop()
        await nginx.stop()
        await paygress.stop()
        await proxy.stop()


async def paid(stack: Stack, client: httpx.AsyncClient, amount: int) -> httpx.Response:
    r = await pay(client, "/stream/a", await stack.token(amount))
    assert r.status_code == 200, r.text
    return r


async def test_nginx_answers_a_session_from_its_cache_until_the_paid_end(stack: Stack) -> None:
    r = await paid(stack, stack.nginx, 3)  # 2 sat after the fee: 8 s
    session = r.headers["x-paygress-session"]
    end = claims_of(session)["exp"]
    assert "x-paygress-session" not in stack.seen(), "the session does not go upstream"
    checks, served = await stack.checks(), stack.upstream.count
    for i in range(20):
        r = await stack.nginx.get(f"/stream/{i}", headers={"X-Paygress-Session": session})
        assert r.status_code == 200, r.text
        seen = stack.seen()  # the cached answer's headers reach the upstream too
        assert (seen["x-paygress-route"], seen["x-paygress-expires"]) == ("stream", str(end))
        assert "x-paygress-session" not in seen
    assert stack.upstream.count == served + 20
    assert await stack.checks() == checks + 1, "one check, then the cache"

    # Paygress away: the cached session holds until its end, new payments cannot start.
    await stack.paygress.stop()
    try:
        r = await stack.nginx.get("/stream/x", headers={"X-Paygress-Session": session})
        assert r.status_code == 200
        r = await stack.nginx.get("/stream/x", headers={"X-Cashu": await stack.token(2)})
        assert r.status_code == 503
    finally:
        await stack.paygress.start()

    await asyncio.sleep(max(0.0, end + 0.05 - time.time()))
    checks = await stack.checks()
    r = await stack.nginx.get("/stream/x", headers={"X-Paygress-Session": session})
    assert r.status_code == 402 and r.json()["reason"] == "session_expired", r.text
    r = await stack.nginx.get("/stream/x", headers={"X-Paygress-Session": session})
    assert r.status_code == 402
    assert await stack.checks() == checks + 2, "a denial is never cached"


async def test_nginx_never_caches_tokens_counted_routes_or_other_routes(stack: Stack) -> None:
    session = (await paid(stack, stack.nginx, 2)).headers["x-paygress-session"]
    token = await stack.token(4)  # 3 after the fee: 3 requests
    assert (await pay(stack.nginx, "/api/x", token)).headers["x-paygress-remaining"] == "2"
    time_token = await stack.token(2)
    assert (await pay(stack.nginx, "/stream/x", time_token)).status_code == 200
    checks = await stack.checks()
    # another route's path: not in the map, never cached (and refused by Paygress each time)
    for _ in range(2):
        r = await stack.nginx.get("/api/x", headers={"X-Paygress-Session": session})
        assert r.status_code == 402 and r.json()["reason"] == "session_invalid"
    # a counted route's token: every request is counted by Paygress
    left = [
        (await stack.nginx.get("/api/x", headers={"X-Cashu": token})).headers.get(
            "x-paygress-remaining"
        )
        for _ in range(3)
    ]
    assert left == ["1", "0", None]
    # a session sent with a token: Paygress decides by the token, every time
    both = {"X-Paygress-Session": session, "X-Cashu": time_token}
    for _ in range(2):
        assert (await stack.nginx.get("/stream/x", headers=both)).status_code == 200
    # a forged session on the time route: refused each time, never from a cache
    forged = signed(route="stream")[:-12] + "A" * 12
    for _ in range(2):
        r = await stack.nginx.get("/stream/x", headers={"X-Paygress-Session": forged})
        assert r.status_code == 402
    assert await stack.checks() == checks + 2 + 3 + 2 + 2


async def test_the_session_cookie_through_nginx_and_traefik(stack: Stack) -> None:
    for name, client, cached in (("nginx", stack.nginx, True), ("traefik", stack.traefik, False)):
        r = await paid(stack, client, 2)
        cookie = r.headers.get("set-cookie", "")
        assert cookie.startswith(f"{COOKIE}="), (name, dict(r.headers))
        session = cookie.split(";", 1)[0].split("=", 1)[1]
        checks = await stack.checks()
        for i in range(5):
            r = await client.get(f"/stream/{i}", headers={"Cookie": f"a=b; {COOKIE}={session}"})
            assert r.status_code == 200, (name, r.text)
            assert stack.seen()["x-paygress-route"] == "stream"
        # NGINX asks once and answers from its cache; Traefik has none: five checks
        assert await stack.checks() == checks + (1 if cached else 5), name
