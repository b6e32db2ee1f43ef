"""The payment gate end to end: client → real Envoy → Paygress (Unix socket) → real mint.

Paygress reaches the nutshell mint through a counting proxy, so the tests can assert how many
swaps happened. Tokens are minted by nutshell's wallet with the proxy's URL written in them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from paygress.cashu.nut13 import Seed
from paygress.cashu.nut18 import decode_payment_request
from tests.integration import edge_checks as edge
from tests.integration import raw_http
from tests.integration.edge_checks import FREE_KEY
from tests.integration.raw_http import send_raw
from tests.peers.envoy import EnvoyProxy
from tests.peers.mint import NutshellMint
from tests.peers.paygress import UNTHROTTLED, PaygressProcess
from tests.peers.procs import VENV
from tests.peers.proxy import CountingProxy
from tests.peers.upstream import EchoUpstream
from tests.peers.wallet import CashuWallet

MNEMONIC = (
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
)
OTHER_MNEMONIC = "legal winner thank year wave sausage worth useful legal winner thank yellow"


def gate_config(mint_url: str, state: Path) -> dict[str, Any]:
    return {
        "state_dir": str(state),
        "mints": [mint_url],
        "drain_seconds": 0,
        "flush_interval_seconds": 0.2,
        "mint_timeout_seconds": 1.0,
        "retry_after_seconds": 7,
        "log_level": os.environ.get("PG_TEST_LOG", "INFO"),
        "payments": {"unproven_swaps": UNTHROTTLED},
        "routes": [
            {
                "name": "api",
                "match": {"path_prefix": "/api/", "case_insensitive": True},
                "price": 2,
            },
            {
                "name": "live",
                "match": {"path_prefix": "/live/"},
                "mode": "per_second",
                "price": 1,
                "grants": 30,
            },
            {
                "name": "hosted",
                "match": {"hosts": ["paid.example.com"], "path_prefix": "/hosted/"},
                "price": 2,
            },
            {
                "name": "reports",
                "match": {"path_prefix": "/reports/", "methods": ["GET"]},
                "price": 2,
            },
        ],
    }


@dataclass
class Stack:
    mint: NutshellMint
    proxy: CountingProxy
    paygress: PaygressProcess
    envoy: EnvoyProxy
    upstream: EchoUpstream
    wallet: CashuWallet
    http: httpx.AsyncClient

    async def token(self, amount: int, version: int = 4) -> str:
        return await self.wallet.token(self.mint.url, amount, version, token_mint=self.proxy.url)

    def swaps(self) -> int:
        return self.proxy.requests["/v1/swap"]

    async def cli_result(self, *args: str) -> tuple[int, str, str]:
        """Runs `paygress wallet …` against this Paygress: (exit code, stdout, stderr). Async
        on purpose: the counting proxy lives on this event loop, so a blocking subprocess call
        would stall the mint's traffic."""
        proc = await asyncio.create_subprocess_exec(
            str(VENV / "bin" / "paygress"),
            "wallet",
            "--socket",
            str(self.paygress.admin_socket_path),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def cli(self, *args: str) -> str:
        code, out, err = await self.cli_result(*args)
        assert code == 0, err
        return out

    async def balance(self) -> str:
        return await self.cli("balance")


@contextlib.asynccontextmanager
async def gate_stack(
    workdir: Path,
    mint: NutshellMint,
    upstream: EchoUpstream,
    wallet: CashuWallet,
    mnemonic: str,
    *,
    proxy_source: str | None = None,
    **overrides: Any,
) -> AsyncIterator[Stack]:
    """Paygress (config `overrides` on top of `gate_config`) behind real Envoy, reaching the
    mint through a counting proxy (whose own connections come from `proxy_source`)."""
    proxy = await CountingProxy.to_url(mint.url, source=proxy_source).start()
    config = gate_config(proxy.url, workdir / "state") | overrides
    paygress = await PaygressProcess(config, mnemonic, workdir / "paygress").start()
    envoy = await EnvoyProxy(
        workdir / "envoy", upstream=upstream.address, paygress_socket=paygress.socket_path
    ).start()
    try:
        async with httpx.AsyncClient(base_url=envoy.url, trust_env=False, timeout=15) as http:
            yield Stack(mint, proxy, paygress, envoy, upstream, wallet, http)
    finally:
        await envoy.stop()
        await paygress.stop()
        await proxy.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    tmp_path_factory: pytest.TempPathFactory,
    mint: NutshellMint,
    upstream: EchoUpstream,
    wallet: CashuWallet,
) -> AsyncIterator[Stack]:
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="pg-gate-"))
    async with gate_stack(
        workdir, mint, upstream, wallet, MNEMONIC, free_clients=edge.FREE_CLIENTS
    ) as s:
        yield s


def reason(response: httpx.Response) -> str:
    return str(response.json()["reason"])


async def test_health_route_and_free_route_pass_without_payment(stack: Stack) -> None:
    assert (await stack.http.get("/healthz")).status_code == 200
    r = await stack.http.get("/public/page", headers={"x-paygress-paid": "1000"})
    assert r.status_code == 200
    assert r.json()["path"] == "/public/page"
    assert "x-paygress-paid" not in r.json()["headers"], "spoofed paid header must not pass"


async def test_priced_route_without_payment_is_402_with_nut18_request(stack: Stack) -> None:
    r = await stack.http.get("/api/things")
    assert r.status_code == 402
    request = decode_payment_request(r.headers["x-cashu"])
    # The price (2) plus the mint's input fee of paying 3 in the fewest proofs (2 + 1: 200
    # ppk, rounded up to 1).
    assert (request.amount, request.unit, request.mints) == (3, "sat", (stack.proxy.url,))
    body = r.json()
    assert body["reason"] == "payment_required"
    payment = body["payment"]
    assert (payment["amount"], payment["price"], payment["mint_fee"]) == (3, 2, 1)
    assert payment["mints"] == [stack.proxy.url]
    assert body["payment"]["request"] == r.headers["x-cashu"]
    assert "X-Cashu" in body["how_to_pay"]


@pytest.mark.parametrize("version", [4, 3])
async def test_paid_token_passes_and_upstream_sees_paid_headers(stack: Stack, version: int) -> None:
    token = await stack.token(5, version)  # 4 + 1: the mint's fee is 1, 4 buys 2 requests
    assert token.startswith("cashuB" if version == 4 else "cashuA")
    swaps = stack.swaps()
    r = await stack.http.get("/api/things", headers={"X-Cashu": token})
    assert r.status_code == 200, r.text
    seen = r.json()["headers"]
    assert seen["x-paygress-paid"] == "4"
    assert seen["x-paygress-route"] == "api"
    assert seen["x-paygress-remaining"] == "1"
    assert "x-cashu" not in seen, "the token must not reach the upstream"
    assert r.headers["x-paygress-remaining"] == "1"
    assert stack.swaps() == swaps + 1


async def test_token_is_reused_until_exhausted_then_402(stack: Stack) -> None:
    token = await stack.token(7)  # 6 after the mint's fee: 3 requests at 2 sat
    swaps = stack.swaps()
    statuses = []
    for scheme in ("X-Cashu", "Cashu", "Bearer", "X-Cashu"):
        headers = (
            {"X-Cashu": token} if scheme == "X-Cashu" else {"Authorization": f"{scheme} {token}"}
        )
        statuses.append((await stack.http.get("/api/x", headers=headers)).status_code)
    assert statuses == [200, 200, 200, 402]
    r = await stack.http.get("/api/x", headers={"X-Cashu": token})
    assert r.status_code == 402 and reason(r) == "exhausted"
    assert decode_payment_request(r.headers["x-cashu"]).amount == 3
    assert stack.swaps() == swaps + 1, "a cached token must not go back to the mint"


async def test_per_second_route_grants_time(stack: Stack) -> None:
    token = await stack.token(2)  # 2 sat at 1 sat per 30 s
    first = await stack.http.get("/live/feed", headers={"X-Cashu": token})
    assert first.status_code == 200
    expires = int(first.headers["x-paygress-expires"])
    second = await stack.http.get("/live/feed", headers={"X-Cashu": token})
    assert second.status_code == 200 and int(second.headers["x-paygress-expires"]) == expires
    assert int(first.json()["headers"]["x-paygress-expires"]) == expires


async def test_token_paid_for_one_route_does_not_open_another(stack: Stack) -> None:
    token = await stack.token(4)
    assert (await stack.http.get("/api/x", headers={"X-Cashu": token})).status_code == 200
    r = await stack.http.get("/live/x", headers={"X-Cashu": token})
    assert r.status_code == 400 and reason(r) == "wrong_route"


async def test_twenty_concurrent_requests_with_one_token_swap_once(stack: Stack) -> None:
    token = await stack.token(33)  # 32 + 1, 32 after the mint's fee: 16 requests
    swaps = stack.swaps()
    responses = await asyncio.gather(
        *(stack.http.get("/api/burst", headers={"X-Cashu": token}) for _ in range(20))
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 16 + [402] * 4
    assert stack.swaps() == swaps + 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("cashuBgarbage", "malformed"),
        ("cashuA%%%%", "malformed"),
        ("not-a-token", "malformed"),
        ("cashuB" + "A" * 9000, "too_large"),
        ("creqApWF0gaNhdGVub3N0cg", "malformed"),
    ],
)
async def test_malformed_tokens_get_400_and_never_reach_the_mint(
    stack: Stack, value: str, expected: str
) -> None:
    before = stack.proxy.total_requests
    r = await stack.http.get("/api/x", headers={"X-Cashu": value})
    assert r.status_code == 400
    assert reason(r) == expected
    assert r.headers["x-cashu"].startswith("creqA")
    assert stack.proxy.total_requests == before


async def test_too_little_and_wrong_unit_are_400(stack: Stack) -> None:
    r = await stack.http.get("/api/x", headers={"X-Cashu": await stack.token(1)})
    assert r.status_code == 400 and reason(r) == "insufficient"


async def test_token_of_a_mint_not_allow_listed_is_refused_without_contact(
    stack: Stack, second_mint: NutshellMint
) -> None:
    watch = await CountingProxy.to_url(second_mint.url).start()
    try:
        token = await stack.wallet.token(second_mint.url, 4, token_mint=watch.url)
        watch.reset()
        r = await stack.http.get("/api/x", headers={"X-Cashu": token})
        assert r.status_code == 400 and reason(r) == "mint_not_accepted"
        assert watch.connections == 0, "Paygress must never contact a mint off the allow-list"
    finally:
        await watch.stop()


async def test_token_already_spent_elsewhere_is_refused(stack: Stack) -> None:
    token = await stack.token(4)
    await stack.wallet.receive(token, mint_url=stack.mint.url)  # spent by someone else first
    r = await stack.http.get("/api/x", headers={"X-Cashu": token})
    assert r.status_code == 400 and reason(r) == "already_spent"


async def test_mint_down_is_503_with_retry_after_and_the_token_still_works_later(
    stack: Stack,
) -> None:
    token = await stack.token(4)
    await stack.mint.stop()
    try:
        r = await stack.http.get("/api/x", headers={"X-Cashu": token})
        assert r.status_code == 503
        assert r.headers["retry-after"] == "7"
        # The counting proxy in front of the mint took the connection, so the swap went out as
        # far as Paygress can tell: its outcome is unknown (found out on the next try).
        assert reason(r) in ("mint_unavailable", "payment_pending")
    finally:
        await stack.mint.start()
    r = await stack.http.get("/api/x", headers={"X-Cashu": token})
    assert r.status_code == 200, r.text


async def test_grants_and_replays_survive_a_restart(stack: Stack) -> None:
    token = await stack.token(7)  # 6 after the fee: 3 requests
    assert (await stack.http.get("/api/x", headers={"X-Cashu": token})).status_code == 200
    await stack.paygress.restart()
    swaps = stack.swaps()
    r = await stack.http.get("/api/x", headers={"X-Cashu": token})
    assert r.status_code == 200 and r.headers["x-paygress-remaining"] == "1"
    assert (await stack.http.get("/api/x", headers={"X-Cashu": token})).status_code == 200
    await stack.paygress.restart()
    r = await stack.http.get("/api/x", headers={"X-Cashu": token})
    assert r.status_code == 402 and reason(r) == "exhausted"
    assert stack.swaps() == swaps, "replays after restart are answered from the store"


def serving_log(paygress: PaygressProcess) -> dict[str, Any]:
    """The JSON line Paygress logs once it serves."""
    for line in paygress.log_path.read_text().splitlines():
        if '"serving"' in line:
            entry: dict[str, Any] = json.loads(line)
            return entry
    raise AssertionError("no 'serving' line in the log")


async def test_runs_on_uvloop_by_default(stack: Stack) -> None:
    assert serving_log(stack.paygress)["event_loop"] == "uvloop"


async def test_the_stdlib_event_loop_serves_the_same(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    fresh = Seed.generate_mnemonic()  # a wallet of its own: the balance tests count theirs
    async with gate_stack(tmp, mint, upstream, wallet, fresh, event_loop="asyncio") as s:
        assert serving_log(s.paygress)["event_loop"] == "asyncio"
        assert (await s.http.get("/public")).status_code == 200
        assert (await s.http.get("/api/x")).status_code == 402
        token = await s.token(5)  # 4 after the fee: 2 requests
        for left in ("1", "0"):
            r = await s.http.get("/api/x", headers={"X-Cashu": token})
            assert r.status_code == 200 and r.headers["x-paygress-remaining"] == left
        assert s.swaps() == 1


async def test_no_token_in_the_logs(stack: Stack) -> None:
    token = await stack.token(2)
    await stack.http.get("/api/x", headers={"X-Cashu": token})
    await stack.http.get("/api/x", headers={"X-Cashu": "cashuB" + token[6:-4]})
    log = stack.paygress.log_path.read_text()
    assert "redeemed token" in log
    assert token not in log and token[6:40] not in log


async def test_wallet_balance_equals_what_was_paid_and_withdraws_real_ecash(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    async with gate_stack(tmp, mint, upstream, wallet, OTHER_MNEMONIC) as s:
        assert "the wallet is empty" in await s.balance()
        paid = 0
        for amount in (4, 10, 6):  # 1, 2 and 2 proofs: mint fees 1, 1, 1
            r = await s.http.get("/api/x", headers={"X-Cashu": await s.token(amount)})
            assert r.status_code == 200
            paid += amount - 1
        assert f"{paid} sat spendable  0 sat pending" in await s.balance()

        withdrawn = (await s.cli("withdraw", "5")).strip()
        assert withdrawn.startswith("cashuB")
        balance = await s.balance()
        assert "5 sat pending" in balance
        received = await wallet.receive(withdrawn, mint_url=mint.url)
        assert received >= 4  # 5 minus the receiving swap's fee
        assert "12 sat spendable  0 sat pending" in await s.balance(), s.paygress.log_tail()
        # 7 has no exact set of proofs {8, 2, 1, 1}: the wallet swaps at the mint for change,
        # paying the mint's input fee (1 sat for the 8 sat input) from the wallet.
        change_token = (await s.cli("withdraw", "7")).strip()
        assert "4 sat spendable  7 sat pending" in await s.balance()
        assert await wallet.receive(change_token, mint_url=mint.url) >= 6
        assert "4 sat spendable  0 sat pending" in await s.balance()
        r = await s.http.get("/api/x", headers={"X-Cashu": withdrawn})
        assert r.status_code == 400 and reason(r) == "already_spent"


def test_body_of_every_denial_is_json_with_a_reason() -> None:
    # The JSON shape clients rely on is asserted above per case; this guards the module's
    # own helper against regressions in how reasons are read.
    fake = httpx.Response(402, content=json.dumps({"reason": "x"}).encode())
    assert reason(fake) == "x"


async def test_earnings_are_restored_from_the_seed_after_losing_the_database(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    mnemonic = "zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo wrong"
    async with gate_stack(tmp, mint, upstream, wallet, mnemonic) as s:
        for amount in (4, 10):  # credited 4 + 10, received 3 + 9 after the mint's fees
            r = await s.http.get("/api/x", headers={"X-Cashu": await s.token(amount)})
            assert r.status_code == 200
        assert "12 sat spendable" in await s.balance()

        await lose_database(s, tmp / "state")
        assert "the wallet is empty" in await s.balance()
        assert "restored 4 proofs worth 12" in await s.cli("restore")
        assert "12 sat spendable  0 sat pending" in await s.balance()
        assert "restored 0 proofs" in await s.cli("restore"), "restore is idempotent"
        r = await s.http.get("/api/x", headers={"X-Cashu": await s.token(6)})
        assert r.status_code == 200, r.text  # counters moved past the restored outputs
        assert "17 sat spendable" in await s.balance()

        # Without an explicit restore, the next payment notices that its NUT-13 counters are
        # behind the mint ("outputs already signed"), restores and swaps again.
        await lose_database(s, tmp / "state")
        r = await s.http.get("/api/x", headers={"X-Cashu": await s.token(4)})
        assert r.status_code == 200, r.text
        assert "20 sat spendable  0 sat pending" in await s.balance()


async def lose_database(s: Stack, state: Path) -> None:
    await s.paygress.stop()
    await asyncio.to_thread(shutil.rmtree, state)
    await s.paygress.start()


async def test_metrics_match_a_scripted_run(
    mint: NutshellMint, upstream: EchoUpstream, wallet: CashuWallet, tmp: Path
) -> None:
    from tests.peers.procs import free_port

    metrics_port = free_port()
    metrics = {"listen": f"127.0.0.1:{metrics_port}"}
    async with gate_stack(
        tmp, mint, upstream, wallet, OTHER_MNEMONIC, metrics=metrics, free_clients=edge.FREE_CLIENTS
    ) as s:
        token = await s.token(7)  # 6 after the fee: 3 requests
        script = [
            ("/free", {}),
            ("/api/a", {}),
            ("/api/a", {"X-Cashu": "cashuBjunk"}),
            *[("/api/a", {"X-Cashu": token})] * 4,
            ("/api/a", {"X-Paygress-Key": FREE_KEY}),
        ]
        codes = [(await s.http.get(path, headers=h)).status_code for path, h in script]
        assert codes == [200, 402, 400, 200, 200, 200, 402, 200]
        text = (await s.http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        mint_label = f'mint="{s.proxy.url}"'

    def value(sample: str) -> float:
        lines = [ln for ln in text.splitlines() if ln.startswith(sample + " ")]
        assert lines, f"no sample {sample}"
        return float(lines[0].rsplit(" ", 1)[1])

    assert value('paygress_checks_total{decision="allow",reason="free"}') == 1
    assert value('paygress_checks_total{decision="deny",reason="payment_required"}') == 1
    assert value('paygress_checks_total{decision="deny",reason="malformed"}') == 1
    assert value('paygress_checks_total{decision="allow",reason="paid"}') == 3
    assert value('paygress_checks_total{decision="deny",reason="exhausted"}') == 1
    assert value('paygress_checks_total{decision="allow",reason="free_client"}') == 1
    assert value("paygress_check_duration_seconds_count") == 8
    # junk and the first use miss; the exhausted replay misses too once the used-up grant
    # has been flushed out of memory (every 0.2 s here)
    misses = value('paygress_redeem_cache_total{result="miss"}')
    assert misses in (2, 3)
    assert value('paygress_redeem_cache_total{result="hit"}') + misses == 5
    assert value('paygress_payments_total{unit="sat"}') == 1
    assert value('paygress_paid_amount_total{unit="sat"}') == 6
    swaps = f'paygress_mint_requests_total{{endpoint="/v1/swap",{mint_label},outcome="2xx"}}'
    assert value(swaps) == 1
    assert value("paygress_dry_run") == 0
    assert token not in text


@pytest.mark.parametrize(
    "path", ["/%61pi/x", "//api/x", "/public/../api/x", "/./api/x", "/api%2Fx"]
)
async def test_other_spellings_of_a_priced_path_are_not_free(stack: Stack, path: str) -> None:
    # Sent as raw bytes: HTTP clients would clean the path up before it left.
    status = await send_raw(stack.envoy.url, raw_http.get(path))
    assert status in (400, 402), f"{path} answered {status}"


# -- spellings, stripping and free clients through Envoy (see edge_checks) --------------------


def through(stack: Stack) -> edge.Target:
    return edge.Target(stack.http, stack.upstream, stack.swaps)


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        *[(spelling, 402) for spelling in edge.PRICED_HOST_SPELLINGS],
        (raw_http.get("/hosted/x", "paid.example.com:80:80"), 400),
        (raw_http.get("/hosted/x", "paid.example.com%2e"), 400),
        # Two Host headers: Envoy joins them into one value, which names no host.
        (raw_http.get("/hosted/x", "paid.example.com", Host="free.example.com"), 400),
        # HTTP/1.0 without Host: Envoy refuses HTTP/1.0 (accept_http_10 is off).
        (raw_http.get("/hosted/x", None, version="1.0"), 426),
        (raw_http.get("/hosted/x", None), 400),
    ],
    ids=raw_http.case_id,
)
async def test_no_spelling_of_a_host_dodges_its_price(
    stack: Stack, request_bytes: bytes, expected: int
) -> None:
    assert await edge.unserved_status(through(stack), request_bytes) == expected


async def test_a_bad_host_is_answered_with_its_reason(stack: Stack) -> None:
    r = await stack.http.get("/hosted/x", headers={"Host": "paid.example.com:80:80"})
    assert r.status_code == 400 and reason(r) == "bad_host"
    assert "x-cashu" not in r.headers
    # Another host is another site: the host-bound route does not price it.
    r = await stack.http.get("/hosted/x", headers={"Host": "other.example.com"})
    assert r.status_code == 200


@pytest.mark.parametrize("path", [*edge.PRICED_PATH_SPELLINGS, "/%41PI/x"])
async def test_path_parameters_and_letter_case_do_not_dodge_a_price(
    stack: Stack, path: str
) -> None:
    assert await edge.unserved_status(through(stack), raw_http.get(path)) == 402


async def test_a_rule_for_get_prices_head_and_only_those(stack: Stack) -> None:
    await edge.head_is_priced_like_get(through(stack))


@pytest.mark.parametrize("carrier", edge.TOKEN_CARRIERS)
async def test_a_token_never_reaches_the_upstream_of_a_free_route(
    stack: Stack, carrier: str
) -> None:
    await edge.no_token_reaches_a_free_upstream(through(stack), edge.TOKEN_CARRIERS[carrier])


async def test_aliases_of_trusted_headers_never_reach_the_upstream(stack: Stack) -> None:
    """`_` names are dropped by Envoy (headers_with_underscores_action: DROP_HEADER), `.` names
    by Paygress; a CGI/WSGI/PHP upstream would read either as X-Paygress-*."""
    before = await stack.envoy.stats("dropped_headers_with_underscores")
    aliases = {"X_Paygress_Paid": "1000", "X.Paygress.Route": "api", "x-paygress_unit": "x"}
    r = await stack.http.get("/public/aliases", headers=aliases)
    assert r.status_code == 200, r.text
    seen = stack.upstream.requests[-1]["headers"]
    assert not [n for n in seen if "paygress" in n], seen
    r = await stack.http.get("/live/aliases", headers={**aliases, "X-Cashu": await stack.token(2)})
    assert r.status_code == 200, r.text
    seen = stack.upstream.requests[-1]["headers"]
    assert [n for n in seen if "paygress" in n and not n.startswith("x-paygress-")] == [], seen
    assert seen["x-paygress-route"] == "live" and seen["x-paygress-unit"] == "sat"
    after = await stack.envoy.stats("dropped_headers_with_underscores")
    assert sum(after.values()) - sum(before.values()) == 4  # two names, twice


async def test_a_listed_address_passes_and_a_spoofed_one_does_not(stack: Stack) -> None:
    await edge.a_listed_address_passes_and_a_spoofed_one_does_not(through(stack))


async def test_a_listed_key_passes_its_route_and_is_never_forwarded(stack: Stack) -> None:
    await edge.a_listed_key_passes_its_route_and_is_never_forwarded(through(stack))
