"""The operator wallet against an in-memory mint (real BDHKE, NUT-12 DLEQ, nutshell's error
codes), on a real SQLite ledger: redemption, its failure paths and recovery, withdrawals,
restore. The mint's lost answers and late completions are injected at the HTTP transport."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from coincurve import PrivateKey

from paygress.cashu.crypto import blind_message, unblind_signature
from paygress.cashu.mint_client import MintClient
from paygress.cashu.models import DLEQ, Proof, Token
from paygress.cashu.nut13 import Seed
from paygress.core.ledger import RESTORE_GAP_COUNTERS, Ledger
from paygress.core.model import Grant, Received
from paygress.core.ports import PaymentRejected, TryAgainLater
from paygress.core.pricing import Mode
from paygress.store.sqlite import SqliteStore
from paygress.wallet import OperatorWallet, WalletError
from tests.unit.cashu.fakemint import FakeMint

URL = "http://mint.test"
SEED = Seed(bytes(range(64)))


class Mint:
    """The fake mint behind a transport that can lose answers or hold requests back."""

    def __init__(self, fee_ppk: int = 0) -> None:
        self.fake = FakeMint(input_fee_ppk=fee_ppk)
        self.lose_next: set[str] = set()  # paths whose next answer is lost after the work
        self.hold_next: set[str] = set()  # paths whose next request times out, not done yet
        self.held: list[httpx.Request] = []
        self.down = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if self.down:
            raise httpx.ConnectError("down", request=request)
        if path in self.hold_next:
            self.hold_next.discard(path)
            self.held.append(request)
            raise httpx.ReadTimeout("held", request=request)
        response = self.fake.handle(request)
        if path in self.lose_next:
            self.lose_next.discard(path)
            raise httpx.ReadTimeout("answer lost", request=request)
        return response

    def calls(self, path: str) -> int:
        return sum(1 for _, p, _ in self.fake.requests if p == path)

    def issue(self, amount: int, *, dleq: bool = False, secret: str | None = None) -> Proof:
        """A real proof, blinded and signed as a wallet gets it (with the NUT-12 proof)."""
        secret = secret or secrets.token_hex(32)
        r = secrets.token_bytes(32)
        b_ = blind_message(secret.encode(), r)
        sig = self.fake.sign_output(amount, b_)
        c = unblind_signature(sig["C_"], r, self.fake.pubkeys[amount])
        proof = Proof(self.fake.keyset_id, amount, secret, c)
        if dleq:
            proof = replace(proof, dleq=DLEQ(sig["dleq"]["e"], sig["dleq"]["s"], r.hex()))
        return proof

    def token(
        self,
        *amounts: int,
        dleq: bool = False,
        lock: str | None = None,
        locktime: int | None = None,
    ) -> Token:
        """A token of real proofs; with `lock`, each locked to that key (NUT-11 P2PK)."""

        def secret() -> str | None:
            if lock is None:
                return None
            tags = [["sigflag", "SIG_INPUTS"]]
            if locktime is not None:
                tags.append(["locktime", str(locktime)])
            body = {"nonce": secrets.token_hex(16), "data": lock, "tags": tags}
            return json.dumps(["P2PK", body])

        proofs = tuple(self.issue(a, dleq=dleq, secret=secret()) for a in amounts)
        return Token(URL, "sat", proofs, None, 4)

    def fake_token(self, *amounts: int) -> Token:
        """Well-formed proofs for the mint's keyset that the mint never signed."""
        proofs = tuple(
            Proof(self.fake.keyset_id, a, secrets.token_hex(32), _random_point()) for a in amounts
        )
        return Token(URL, "sat", proofs, None, 4)


def _random_point() -> str:
    return str(PrivateKey().public_key.format().hex())


@dataclass
class Setup:
    mint: Mint
    store: SqliteStore
    wallet: OperatorWallet
    path: Path

    async def redeem(self, token: Token, admit: Callable[[], None] = lambda: None) -> Grant:
        verified = await self.wallet.verify(token)
        return await self.wallet.redeem(verified, fp(token), grant_for(token), admit)

    async def balance(self) -> tuple[int, int]:
        balances = await self.wallet.balances()
        return (sum(b.spendable for b in balances), sum(b.pending for b in balances))

    async def reopen(self, *, lose_database: bool = False) -> None:
        """A new process: the same seed, the same (or a lost) database."""
        await self.wallet.aclose()
        await self.store.close()
        if lose_database:
            for f in self.path.parent.iterdir():
                f.unlink()
        self.store, self.wallet = await open_wallet(self.mint, self.path)


def fp(token: Token) -> str:
    import hashlib

    return hashlib.sha256("".join(sorted(p.y() for p in token.proofs)).encode()).hexdigest()


def grant_for(token: Token) -> Callable[[Received], Grant]:
    def make(received: Received) -> Grant:
        if received.credited < 1:
            raise PaymentRejected("insufficient_after_fees", "too little")
        return Grant(fp(token), "api", Mode.PER_REQUEST, "sat", URL, received.credited, 1.0, 1)

    return make


def wallet_on(ledger: Ledger, mint: Mint, **options: Any) -> OperatorWallet:
    """The seed's wallet on `ledger`, talking to the in-memory mint."""
    transport = httpx.MockTransport(mint.handle)
    return OperatorWallet(
        ledger,
        SEED,
        [URL],
        "sat",
        client_factory=lambda url: MintClient(url, transport=transport),
        keyset_refresh_seconds=60,
        **options,
    )


async def open_wallet(mint: Mint, path: Path) -> tuple[SqliteStore, OperatorWallet]:
    store = SqliteStore(path)
    await store.open("seed")
    return store, wallet_on(store.ledger, mint)


@pytest_asyncio.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    mint = Mint(fee_ppk=100)
    path = tmp_path / "state" / "p.db"
    store, wallet = await open_wallet(mint, path)
    s = Setup(mint, store, wallet, path)
    yield s
    await s.wallet.aclose()
    await s.store.close()


# -- redeem ----------------------------------------------------------------------------------------


async def test_a_token_is_swapped_into_seed_outputs_and_stored_with_its_grant(
    setup: Setup,
) -> None:
    token = setup.mint.token(8, 2)
    grant = await setup.redeem(token)
    assert grant.paid == 9  # 10 less the mint's fee of 1 (2 proofs at 100 ppk)
    assert await setup.store.grants.get_grant(fp(token)) == grant
    assert await setup.balance() == (9, 0)
    assert await setup.wallet.ledger.swap_records() == []
    assert setup.mint.calls("/v1/swap") == 1


async def test_made_up_proofs_are_refused_and_their_counters_reused(setup: Setup) -> None:
    for _ in range(12):
        with pytest.raises(PaymentRejected) as info:
            await setup.redeem(setup.mint.fake_token(*[2**i for i in range(10)]))
        assert info.value.reason == "mint_rejected"
    keyset = setup.mint.fake.keyset_id
    assert await setup.wallet.ledger.counter_mark(keyset) <= 10, "counters given back"
    assert await setup.wallet.ledger.swap_records() == []
    await setup.redeem(setup.mint.token(16))
    # Lose the database: restore from the seed alone finds every sat.
    await setup.reopen(lose_database=True)
    assert await setup.wallet.restore() == (4, 15)  # 8 + 4 + 2 + 1
    assert await setup.balance() == (15, 0)


async def test_a_token_spent_elsewhere_is_refused_naming_its_spent_proofs(setup: Setup) -> None:
    token = setup.mint.token(4, 4)
    setup.mint.fake.spent.add(token.proofs[1].y())
    with pytest.raises(PaymentRejected) as info:
        await setup.redeem(token)
    assert info.value.reason == "already_spent"
    assert info.value.spent_ys == (token.proofs[1].y(),)
    assert await setup.wallet.ledger.swap_records() == []


async def test_a_lost_answer_is_found_out_and_never_swapped_twice(setup: Setup) -> None:
    token = setup.mint.token(8)
    setup.mint.lose_next.add("/v1/swap")
    with pytest.raises(TryAgainLater) as info:
        await setup.redeem(token)
    assert info.value.reason == "payment_pending"
    [record] = await setup.wallet.ledger.swap_records()
    assert record.unknown
    grant = await setup.redeem(token)  # the client sends the same token again
    assert grant.paid == 7 and setup.mint.calls("/v1/swap") == 1
    assert setup.mint.calls("/v1/restore") == 1
    assert await setup.balance() == (7, 0)
    assert await setup.wallet.ledger.swap_records() == []


async def test_a_slow_swap_completing_after_the_retry_looked_is_still_ours(
    setup: Setup,
) -> None:
    """Swap #1 times out on our side and reaches the mint only after the retry has found
    nothing: the retry's swap is refused as spent, which is found out, not believed."""
    token = setup.mint.token(8)
    setup.mint.hold_next.add("/v1/swap")
    with pytest.raises(TryAgainLater):
        await setup.redeem(token)
    original = setup.mint.fake.handle

    def late(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/swap":
            for held in setup.mint.held:  # swap #1 lands just before the retry's swap
                original(held)
            setup.mint.held.clear()
        return original(request)

    setup.mint.fake.handle = late  # type: ignore[method-assign]
    grant = await setup.redeem(token)
    assert grant.paid == 7
    assert await setup.balance() == (7, 0)
    assert await setup.wallet.ledger.swap_records() == []


async def test_inputs_pending_at_the_mint_mean_not_settled_yet(setup: Setup) -> None:
    token = setup.mint.token(8)
    setup.mint.fake.pending.add(token.proofs[0].y())
    with pytest.raises(TryAgainLater) as info:
        await setup.redeem(token)
    assert info.value.reason == "payment_pending"
    [record] = await setup.wallet.ledger.swap_records()
    assert record.unknown
    setup.mint.fake.pending.clear()
    assert (await setup.redeem(token)).paid == 7


async def test_a_swap_interrupted_by_a_crash_is_settled_after_the_restart(setup: Setup) -> None:
    token = setup.mint.token(8)
    setup.mint.lose_next.add("/v1/swap")
    with pytest.raises(TryAgainLater):
        await setup.redeem(token)
    await setup.reopen()
    assert await setup.wallet.recover_pending() == 1
    assert await setup.store.grants.get_grant(fp(token)) is not None
    assert await setup.balance() == (7, 0)


async def test_a_record_whose_inputs_were_spent_by_someone_else_goes_away(setup: Setup) -> None:
    token = setup.mint.token(8)
    setup.mint.hold_next.add("/v1/swap")  # never reaches the mint
    with pytest.raises(TryAgainLater):
        await setup.redeem(token)
    setup.mint.held.clear()
    setup.mint.fake.spent.add(token.proofs[0].y())  # the client spent it elsewhere
    with pytest.raises(PaymentRejected) as info:
        await setup.redeem(token)
    assert info.value.reason == "already_spent"
    assert await setup.wallet.ledger.swap_records() == []
    assert await setup.balance() == (0, 0)


async def test_mint_down_is_try_again_later(setup: Setup) -> None:
    setup.mint.down = True
    with pytest.raises(TryAgainLater) as info:
        await setup.redeem(setup.mint.token(8))
    assert info.value.reason == "mint_unavailable"


async def test_counters_behind_the_mint_are_caught_up_by_a_restore(setup: Setup) -> None:
    await setup.redeem(setup.mint.token(8))
    await setup.reopen(lose_database=True)  # no restore: the counters start at 0 again
    grant = await setup.redeem(setup.mint.token(4))
    assert grant.paid == 3
    assert await setup.balance() == (10, 0), "the old proofs were restored on the way"


async def test_the_budget_is_asked_only_before_a_new_swap(setup: Setup) -> None:
    asked: list[int] = []
    token = setup.mint.token(8)
    setup.mint.lose_next.add("/v1/swap")
    with pytest.raises(TryAgainLater):
        await setup.redeem(token, admit=lambda: asked.append(1))
    await setup.redeem(token, admit=lambda: asked.append(2))
    assert asked == [1]


async def test_the_budget_refusing_sends_nothing(setup: Setup) -> None:
    def no() -> None:
        raise TryAgainLater("swap_budget", "later", status=429)

    with pytest.raises(TryAgainLater):
        await setup.redeem(setup.mint.token(8), admit=no)
    assert setup.mint.calls("/v1/swap") == 0
    assert await setup.wallet.ledger.swap_records() == []


# -- verify ----------------------------------------------------------------------------------------


async def test_dleq_proofs_prove_a_token_in_memory(setup: Setup) -> None:
    verified = await setup.wallet.verify(setup.mint.token(8, 4, dleq=True))
    assert verified.proven and verified.fee == 1
    assert not (await setup.wallet.verify(setup.mint.token(8))).proven
    tampered = setup.mint.token(8, 4, dleq=True)
    dleq = tampered.proofs[1].dleq
    assert dleq is not None
    bad = replace(tampered.proofs[1], dleq=replace(dleq, s="11" * 32))
    swaps = setup.mint.calls("/v1/swap")
    with pytest.raises(PaymentRejected) as info:
        await setup.wallet.verify(replace(tampered, proofs=(tampered.proofs[0], bad)))
    assert info.value.reason == "invalid_dleq"
    assert setup.mint.calls("/v1/swap") == swaps


async def test_require_dleq_refuses_unproven_tokens(setup: Setup) -> None:
    setup.wallet.require_dleq = True
    with pytest.raises(PaymentRejected) as info:
        await setup.wallet.verify(setup.mint.token(8))
    assert info.value.reason == "dleq_required"
    assert (await setup.wallet.verify(setup.mint.token(8, dleq=True))).proven


async def test_an_amount_the_keyset_does_not_sign_is_refused_in_memory(setup: Setup) -> None:
    token = setup.mint.token(8)
    odd = replace(token, proofs=(replace(token.proofs[0], amount=3),))
    with pytest.raises(PaymentRejected) as info:
        await setup.wallet.verify(odd)
    assert info.value.reason == "invalid_amount"


async def test_unknown_keysets_ask_the_mint_at_most_once_per_interval(setup: Setup) -> None:
    await setup.wallet.verify(setup.mint.token(8))
    setup.wallet.keysets(URL).refresh_seconds = 0.2
    await asyncio.sleep(0.25)
    before = setup.mint.calls("/v1/keysets")
    for _ in range(20):
        token = setup.mint.token(8)
        unknown = replace(token, proofs=(replace(token.proofs[0], keyset_id="00" + "ab" * 7),))
        with pytest.raises(PaymentRejected) as info:
            await setup.wallet.verify(unknown)
        assert info.value.reason == "unknown_keyset"
    assert setup.mint.calls("/v1/keysets") - before == 1


# -- withdraw -------------------------------------------------------------------------------------


async def test_withdraw_with_change_is_recorded_like_a_redemption(setup: Setup) -> None:
    await setup.redeem(setup.mint.token(8, 1))  # 8 in the wallet, as one proof
    setup.mint.lose_next.add("/v1/swap")
    with pytest.raises(WalletError, match="settled in the background"):
        await setup.wallet.withdraw(3)  # 8 is split: 3 out, 4 change, 1 fee
    assert len(await setup.wallet.ledger.swap_records()) == 1
    assert await setup.wallet.recover_pending() == 1
    assert await setup.balance() == (7, 0), "the change swap's fee is the only cost"
    token, _, amount = await setup.wallet.withdraw(3)  # 2 + 1 of the 7: no swap
    assert amount == 3 and token.startswith("cashuB")
    assert await setup.balance() == (4, 3)


async def test_withdraw_says_what_is_there(setup: Setup) -> None:
    await setup.redeem(setup.mint.token(8))
    with pytest.raises(WalletError, match="7 sat available"):
        await setup.wallet.withdraw(50)
    with pytest.raises(WalletError, match="not an accepted mint"):
        await setup.wallet.withdraw(1, "http://elsewhere.test")


# -- restore ---------------------------------------------------------------------------------------


async def test_restore_crosses_the_gaps_the_wallet_leaves(setup: Setup) -> None:
    """Counters that were reserved and never signed (swaps in flight at a crash) leave gaps;
    they are never longer than RESTORE_GAP_COUNTERS, and restore crosses them."""
    keyset = setup.mint.fake.keyset_id
    await setup.redeem(setup.mint.token(8))
    await setup.wallet.ledger.advance_counter(keyset, RESTORE_GAP_COUNTERS - 5)
    await setup.redeem(setup.mint.token(4))  # above a gap of ~1,000 unsigned counters
    await setup.reopen(lose_database=True)
    assert await setup.wallet.restore() == (5, 10)  # 7 = 4 + 2 + 1, then 3 = 2 + 1
    assert await setup.wallet.restore() == (0, 0), "idempotent"


async def test_a_swap_that_could_not_connect_was_never_sent(setup: Setup) -> None:
    token = setup.mint.token(8)
    verified = await setup.wallet.verify(token)  # keysets and keys known
    setup.mint.down = True
    with pytest.raises(TryAgainLater) as info:
        await setup.wallet.redeem(verified, fp(token), grant_for(token), lambda: None)
    assert info.value.reason == "mint_unavailable"
    assert await setup.wallet.ledger.swap_records() == [], "nothing sent: no record kept"
    setup.mint.down = False
    assert (await setup.redeem(token)).paid == 7
    assert await setup.wallet.ledger.counter_mark(setup.mint.fake.keyset_id) == 3  # 4 + 2 + 1


async def test_a_swap_waits_for_room_and_then_says_try_later(setup: Setup) -> None:
    from paygress.core.ledger import RESTORE_GAP_COUNTERS, NewSwap, SwapKind

    filler = NewSwap(
        "filler", SwapKind.REDEEM, URL, "sat", setup.mint.fake.keyset_id,
        (1,) * RESTORE_GAP_COUNTERS, (),
    )  # fmt: skip
    await setup.wallet.ledger.begin_swap(filler)
    setup.wallet.swaps.room_wait_seconds = 0.1
    with pytest.raises(TryAgainLater) as info:
        await setup.redeem(setup.mint.token(8))
    assert info.value.reason == "mint_unavailable"
    assert setup.mint.calls("/v1/swap") == 0


# -- offline acceptance of tokens locked to us --------------------------------------------------


async def test_a_locked_proven_token_is_accepted_without_the_mint_and_swapped_later(
    setup: Setup,
) -> None:
    events: list[tuple[str, int]] = []
    setup.wallet.events = lambda event, count: events.append((event, count))
    token = setup.mint.token(8, 4, dleq=True, lock=setup.wallet.pubkey)
    await setup.wallet.verify(setup.mint.token(1))  # keysets and keys known already
    calls = len(setup.mint.fake.requests)
    verified = await setup.wallet.verify(token)
    assert verified.offline
    grant = await setup.wallet.redeem(verified, fp(token), grant_for(token), lambda: None)
    assert grant.paid == 11 and len(setup.mint.fake.requests) == calls, "no mint call"
    assert await setup.store.grants.get_grant(fp(token)) == grant
    count, oldest = await setup.wallet.ledger.locked_summary()
    assert count == 2 and abs(oldest - time.time()) < 5
    assert await setup.wallet.settle_locked() == 2
    assert setup.mint.calls("/v1/swap") == 1
    assert await setup.wallet.ledger.locked_queue(10) == []
    assert await setup.balance() == (11, 0)
    assert events == [("locked_accepted", 2), ("locked_settled", 2)]
    # The same proofs again, in any token: refused.
    again = await setup.wallet.verify(replace(token, proofs=token.proofs[:1]))
    with pytest.raises(PaymentRejected) as info:
        await setup.wallet.redeem(again, "other", grant_for(token), lambda: None)
    assert info.value.reason == "already_spent"


async def test_a_proof_redeemed_online_is_never_accepted_offline_later(setup: Setup) -> None:
    """Paid once online (no DLEQ proofs), then the same proof offered again with them."""
    token = setup.mint.token(8, dleq=True, lock=setup.wallet.pubkey)
    bare = replace(token, proofs=tuple(replace(p, dleq=None) for p in token.proofs))
    online = await setup.wallet.verify(bare)
    assert not online.offline
    await setup.wallet.redeem(online, fp(bare), grant_for(bare), lambda: None)
    offline = await setup.wallet.verify(token)
    assert offline.offline
    with pytest.raises(PaymentRejected) as info:
        await setup.wallet.redeem(offline, "another-fingerprint", grant_for(token), lambda: None)
    assert info.value.reason == "already_spent"


async def test_tokens_locked_to_another_key_are_refused_before_the_mint(setup: Setup) -> None:
    other = PrivateKey().public_key.format().hex()
    with pytest.raises(PaymentRejected) as info:
        await setup.wallet.verify(setup.mint.token(8, dleq=True, lock=other))
    assert info.value.reason == "locked_to_another_key"
    assert setup.mint.calls("/v1/swap") == 0


async def test_a_lock_that_expires_too_soon_is_swapped_at_once_with_our_signature(
    setup: Setup,
) -> None:
    soon = int(time.time()) + 60  # within the default margin of 600 s
    token = setup.mint.token(8, dleq=True, lock=setup.wallet.pubkey, locktime=soon)
    verified = await setup.wallet.verify(token)
    assert verified.proven and not verified.offline
    await setup.wallet.redeem(verified, fp(token), grant_for(token), lambda: None)
    assert setup.mint.calls("/v1/swap") == 1, "swapped online, the mint checked our signature"
    assert await setup.balance() == (7, 0)


async def test_without_dleq_proofs_a_locked_token_takes_the_online_path(setup: Setup) -> None:
    token = setup.mint.token(8, lock=setup.wallet.pubkey)
    verified = await setup.wallet.verify(token)
    assert not verified.offline
    await setup.wallet.redeem(verified, fp(token), grant_for(token), lambda: None)
    assert setup.mint.calls("/v1/swap") == 1


async def test_a_full_queue_sends_tokens_online(setup: Setup) -> None:
    setup.wallet.offline = replace(setup.wallet.offline, max_queue=1)
    token = setup.mint.token(8, 4, dleq=True, lock=setup.wallet.pubkey)
    verified = await setup.wallet.verify(token)
    await setup.wallet.redeem(verified, fp(token), grant_for(token), lambda: None)
    assert setup.mint.calls("/v1/swap") == 1
    assert await setup.wallet.ledger.locked_summary() == (0, 0.0)


async def test_a_locked_proof_spent_elsewhere_is_an_alarm(setup: Setup) -> None:
    events: list[tuple[str, int]] = []
    setup.wallet.events = lambda event, count: events.append((event, count))
    token = setup.mint.token(8, dleq=True, lock=setup.wallet.pubkey)
    verified = await setup.wallet.verify(token)
    await setup.wallet.redeem(verified, fp(token), grant_for(token), lambda: None)
    setup.mint.fake.spent.add(token.proofs[0].y())  # impossible unless our key leaked
    assert await setup.wallet.settle_locked() == 0
    assert ("locked_lost", 1) in events
    assert await setup.wallet.ledger.locked_summary() == (0, 0.0)


async def test_a_keyset_the_mint_retired_is_noticed_and_the_swap_made_again(
    setup: Setup,
) -> None:
    token = setup.mint.token(8)
    verified = await setup.wallet.verify(token)
    keysets_before = setup.mint.calls("/v1/keysets")
    setup.mint.fake.fail_next = httpx.Response(
        400, json={"detail": "keyset is inactive", "code": 12002}
    )
    grant = await setup.wallet.redeem(verified, fp(token), grant_for(token), lambda: None)
    assert grant.paid == 7
    assert setup.mint.calls("/v1/swap") == 2
    assert setup.mint.calls("/v1/keysets") == keysets_before + 1
    assert await setup.balance() == (7, 0)
