"""The payment gate: decides, for one HTTP request, allow or deny (402/400/503)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache

from paygress.cashu.models import Token
from paygress.cashu.token import TokenError, parse_token
from paygress.core.budget import SwapBudget
from paygress.core.fees import asked_amount
from paygress.core.free_clients import FREE_CLIENT_HEADER, FreeClient
from paygress.core.grants import GrantBook
from paygress.core.hosts import BadHost
from paygress.core.leases import Leases
from paygress.core.model import Allow, Answer, Decision, Grant, HttpRequest, Received
from paygress.core.pod_access import KEY_HEADER as POD_KEY_HEADER
from paygress.core.pod_access import ORIGINAL_DST, POD_HEADER, PodAccess, TopUp
from paygress.core.ports import (
    GrantStore,
    Metrics,
    NullMetrics,
    PaymentRejected,
    RedeemError,
    SettledMeanwhile,
    StoreUnavailable,
    TryAgainLater,
    Wallet,
)
from paygress.core.pricing import Mode, Pricing, RouteRule, normalize_mint_url
from paygress.core.refusals import Refusals
from paygress.core.responses import deny
from paygress.core.session_access import SessionAccess
from paygress.core.strip import present, unwanted_names

log = logging.getLogger("paygress.gate")

FREE = Allow(reason="free")
# Headers the upstream may trust because Paygress sets them: a client's copies never pass.
TRUSTED_HEADERS = (
    "x-paygress-paid",
    "x-paygress-unit",
    "x-paygress-grant",
    "x-paygress-route",
    "x-paygress-remaining",
    "x-paygress-expires",
    "x-paygress-pod",
    "x-paygress-dry-run",
    FREE_CLIENT_HEADER,
    ORIGINAL_DST,
)


DEFAULT_MAX_TOKEN_BYTES = 8192
DEFAULT_MAX_PROOFS = 64


@dataclass(frozen=True, slots=True)
class GateSettings:
    unit: str
    mints: tuple[str, ...]
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES
    max_proofs: int = DEFAULT_MAX_PROOFS
    retry_after_seconds: int = 5
    dry_run: bool = False
    # How long a check waits for a redemption before answering 503 payment_pending (the
    # redemption goes on; the same token is answered from its outcome later).
    payment_timeout_seconds: float = 2.5
    # Tokens refused for good are refused again from memory: how many, for how long.
    refusals_max: int = 10_000
    refusals_seconds: float = 600.0
    # The most requests of a per_request grant this process leases from the store at once
    # (what a process that dies holding them can cost a payer, per grant).
    lease_max_requests: int = 32
    # What cached grants do while the store cannot be reached: "closed" answers every paid
    # request 503; "cached" serves time grants to their known end and per_request grants from
    # the requests this process already holds (never more than was paid).
    on_store_outage: str = "closed"
    # A pod grant that looks over is read again from the store (a top-up by another process
    # may have moved its end) at most this often.
    refresh_seconds: float = 1.0


# What a refused token gets again from memory: status, reason, message.
Refusal = tuple[int, str, str]


def token_hash(raw: str) -> str:
    """Short, non-reversible name of a token for logs."""
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


def fingerprint(token: Token) -> str:
    """Identity of a token's proofs, independent of encoding (V3/V4) and proof order."""
    ys = sorted(p.y() for p in token.proofs)
    return hashlib.sha256("".join(ys).encode()).hexdigest()


class Gate:
    """The decision. Knows prices, grants and the wallet port; nothing of gRPC or SQL."""

    def __init__(
        self,
        pricing: Pricing,
        settings: GateSettings,
        wallet: Wallet,
        store: GrantStore,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        pods: PodAccess | None = None,
        budget: SwapBudget | None = None,
        sessions: SessionAccess | None = None,
    ) -> None:
        self.pricing = pricing
        self.settings = settings
        self.wallet = wallet
        self.store = store
        self.metrics = metrics or NullMetrics()
        self.clock = clock
        self.pods = pods
        self.budget = budget
        self.sessions = sessions
        self.book = GrantBook()
        self.refusals: Refusals[Refusal] = Refusals(
            settings.refusals_max, settings.refusals_seconds, clock
        )
        self.leases = Leases(
            store,
            max_block=settings.lease_max_requests,
            wait_seconds=settings.payment_timeout_seconds,
        )
        self._fail_closed = settings.on_store_outage == "closed"
        self._refreshed: dict[str, float] = {}
        self._inflight: dict[str, asyncio.Task[Grant]] = {}
        self._allowed = frozenset(settings.mints)
        free = pricing.free_clients
        self._unwanted = unwanted_names(
            TRUSTED_HEADERS, free.key_header if free else None, POD_KEY_HEADER
        )
        self._unwanted_or_token = self._unwanted | _TOKEN_HEADERS
        self._denials: dict[tuple[RouteRule, int, str, str, int], Answer] = {}
        self._later: dict[tuple[int, str, str, int], Answer] = {}
        self._time_allows: dict[tuple[str, float, tuple[str, ...]], Allow] = {}
        self._store_down = deny(
            503,
            "store_unavailable",
            "store_unavailable",
            StoreUnavailable().message,
            extra_headers=(("retry-after", str(settings.retry_after_seconds)),),
        )
        self._internal_error = deny(
            503,
            "internal_error",
            "internal_error",
            "Paygress could not decide this request; try again shortly.",
            extra_headers=(("retry-after", str(settings.retry_after_seconds)),),
        )

    async def start(self) -> None:
        """Loads the live grants from the store into memory."""
        for grant in await self.store.load_active_grants(self.clock()):
            self.book.add(grant)

    async def flush(self) -> int:
        """Gives back this process's leases, writes moved ends of time grants, and forgets
        used-up grants; returns how many ends were written."""
        dirty = self.book.take_dirty()
        try:
            await self.leases.flush()
        finally:
            if dirty:
                try:
                    await self.store.save_expiry(dirty)
                except BaseException:
                    for grant in dirty:
                        self.book.mark_dirty(grant)
                    raise
        for gone in self.book.evict_unusable(self.clock(), keep=self.leases.holds):
            self.leases.forget(gone)
        return len(dirty)

    async def drain(self, within: float) -> None:
        """Waits up to `within` seconds for redemptions under way (they hold money not yet
        persisted). Those still running keep their durable swap records: the wallet recovers
        them at the next start."""
        if not self._inflight:
            return
        _, pending = await asyncio.wait(list(self._inflight.values()), timeout=within)
        if pending:
            log.warning(
                "%d redemptions still under way at shutdown; their swap records are kept",
                len(pending),
            )

    def _redemption_ended(self, fp: str, key: bytes, task: asyncio.Task[Grant]) -> None:
        """A redemption ended: a refusal for good is remembered (by the token's bytes, its
        proofs' fingerprint and the proofs the mint reported spent)."""
        self._inflight.pop(fp, None)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        if isinstance(exc, PaymentRejected):
            if exc.remember:
                refusal = (exc.status, exc.reason, exc.message)
                # What our own checks refused is this token's text (another encoding of the
                # same proofs may carry, say, valid DLEQ proofs); what the mint refused is the
                # proofs, whatever carries them.
                names = (key, fp, *exc.spent_ys) if exc.by_mint else (key,)
                for name in names:
                    self.refusals.add(name, refusal)
        elif not isinstance(exc, RedeemError):
            log.error("redemption failed unexpectedly", exc_info=exc)

    async def check(self, request: HttpRequest) -> Decision:
        """Judges one request. Never raises for bad input: every problem becomes a Answer."""
        started = time.perf_counter()
        try:
            decision = await self._check(request)
        except Exception:
            log.exception("check failed; denying")
            decision = self._internal_error
        if isinstance(decision, Allow):
            outcome = "allow"
        else:  # offers and pod status are answers, not denials
            outcome = "answer" if decision.status < 400 else "deny"
        self.metrics.decision(outcome, decision.reason, time.perf_counter() - started)
        if self.settings.dry_run and isinstance(decision, Answer):
            # Dry run: the decision is made and recorded as usual, but everything passes;
            # the upstream learns what would have happened.
            return Allow(
                reason="dry_run",
                upstream_headers=(("x-paygress-dry-run", f"{decision.status} {decision.reason}"),),
                remove_headers=self._removals(request.headers, self._spoofed(request.headers)),
            )
        return decision

    async def _check(self, request: HttpRequest) -> Decision:
        headers = request.headers
        if self.pods is not None and self.pods.answers(request.path):
            return await self.pods.answer(request.path)
        try:
            rule = self.pricing.match(request.method, request.host, request.path, request.context)
        except BadHost as exc:
            return deny(400, "bad_request", exc.reason, str(exc))
        except ValueError as exc:
            log.error("route misconfigured: %s", exc)
            return deny(500, "misconfigured", "route_misconfigured", str(exc))
        if rule is None:
            # One pass over the header names finds anything to strip (usually nothing).
            if self._unwanted_or_token.isdisjoint(headers):
                return FREE
            return _free(self._removals(headers, self._spoofed(headers)))
        # Forged trusted headers, their aliases, the free-client key: usually none.
        spoofed = () if self._unwanted.isdisjoint(headers) else present(self._unwanted, headers)
        if rule.mode is Mode.POD and self.pods is None:
            return deny(500, "misconfigured", "route_misconfigured", "tier route without pods")
        free = self.pricing.free_clients
        if free is not None and rule.mode is not Mode.POD:
            entry = free.find(request.client, headers, rule.name)
            if entry is not None:
                return _free_client(entry, rule, self._removals(headers, spoofed))
        raw = _extract_token(headers)
        if raw is None:
            session = self.sessions.presented(headers) if self.sessions is not None else None
            if session is not None:
                return self._session(session, rule, spoofed)
            return self._ask_payment(rule, 402, "payment_required", "Payment required.")
        if len(raw) > self.settings.max_token_bytes:
            return self._ask_payment(
                rule,
                400,
                "too_large",
                f"The token is larger than {self.settings.max_token_bytes} bytes.",
            )
        # The in-memory key of a token. BLAKE2s is built into CPython: measured in the server,
        # it costs less per check than OpenSSL's SHA-256 (context set-up dominates).
        key = hashlib.blake2s(raw.encode()).digest()
        grant = self.book.by_token(key)
        if grant is None:
            self.metrics.redeem_cache(False)
            found = await self._grant_for(raw, key, rule, request)
            if isinstance(found, Answer):
                return found
            grant = found
        else:
            self.metrics.redeem_cache(True)
        if self._fail_closed and not self.store.available:
            return self._store_down
        if grant.route == rule.name:
            if grant.mode is Mode.PER_REQUEST:
                try:
                    if self.leases.take(grant) or await self.leases.refill(grant):
                        return self._paid_request(grant, headers, spoofed)
                except TryAgainLater as exc:
                    return self._try_later(exc)
            elif grant.mode is Mode.POD:
                if not grant.usable(self.clock()):
                    await self._refresh(grant)
                if grant.usable(self.clock()):
                    assert self.pods is not None
                    decision = await self.pods.use(grant, rule, headers)
                    if isinstance(decision, Allow):
                        return _also_removing(decision, self._removals(headers, spoofed))
                    return decision
        return self._use(grant, rule, headers, spoofed)

    async def _refresh(self, grant: Grant) -> None:
        """A pod grant that looks over may have been topped up by another process: its end
        is read again from the store, at most once per `refresh_seconds`."""
        now = self.clock()
        if now - self._refreshed.get(grant.id, 0.0) < self.settings.refresh_seconds:
            return
        if len(self._refreshed) >= 10_000:
            self._refreshed.clear()
        self._refreshed[grant.id] = now
        try:
            stored = await self.store.get_grant(grant.id)
            ends = [stored.expires_at] if stored else []
            if grant.pod:
                ends += [g.expires_at for g in await self.store.grants_of_pod(grant.pod)]
        except StoreUnavailable:
            return
        if ends and max(ends) > grant.expires_at:
            grant.expires_at = max(ends)

    def _spoofed(self, headers: Mapping[str, str]) -> tuple[str, ...]:
        """Forged trusted headers, their aliases and the free-client key: usually none."""
        return () if self._unwanted.isdisjoint(headers) else present(self._unwanted, headers)

    def _removals(self, headers: Mapping[str, str], spoofed: tuple[str, ...]) -> tuple[str, ...]:
        """What no upstream gets: `spoofed`, `X-Cashu`, and an Authorization header that
        carries a token."""
        remove = spoofed
        if "x-cashu" in headers:
            remove += ("x-cashu",)
        auth = headers.get("authorization")
        if auth and _authorization_token(auth):
            remove += ("authorization",)
        return remove

    def _use(
        self, grant: Grant, rule: RouteRule, headers: Mapping[str, str], spoofed: tuple[str, ...]
    ) -> Decision:
        now = self.clock()
        if grant.route != rule.name:
            return self._ask_payment(
                rule,
                400,
                "wrong_route",
                f"This token paid for route {grant.route!r}, not {rule.name!r}.",
            )
        # A per_request grant reaches here only when its leases have nothing left.
        if grant.mode is Mode.PER_REQUEST or not grant.usable(now):
            reason = "exhausted" if grant.mode is Mode.PER_REQUEST else "expired"
            return self._ask_payment(
                rule, 402, reason, f"The token's payment is used up ({reason})."
            )
        left_header = "x-paygress-expires"
        remove = _removed(headers, spoofed, left_header)
        # A time grant answers the same until it is topped up: build that answer once.
        key = (grant.id, grant.expires_at, remove)
        allow = self._time_allows.get(key)
        if allow is None:
            if len(self._time_allows) >= 4096:
                self._time_allows.clear()
            allow = _paid(grant, (left_header, str(int(grant.expires_at))), remove)
            # ...with a session for the client, and the paid end as the cache lifetime
            if self.sessions is not None:
                allow = self.sessions.with_session(allow, grant)
            else:
                allow = replace(allow, cache_until=grant.expires_at)
            self._time_allows[key] = allow
        return allow

    def _session(self, token: str, rule: RouteRule, spoofed: tuple[str, ...]) -> Decision:
        """A request that presents a session instead of a token (the proxy did not verify it
        itself): allowed when we signed it, for this route, before its paid end."""
        assert self.sessions is not None
        claims = self.sessions.read(token)
        # (never for a counted route: a stateless credential cannot count requests)
        if claims is None or claims.route != rule.name or rule.mode is Mode.PER_REQUEST:
            why = "not one of ours" if claims is None else f"for route {claims.route!r}"
            return self._ask_payment(
                rule, 402, "session_invalid", f"The session is {why}; pay, or send the token."
            )
        if self.clock() >= claims.expires_at:
            return self._ask_payment(
                rule, 402, "session_expired", "The session's paid time is over."
            )
        allow = self.sessions.allow(claims, spoofed)
        if claims.pod:
            if self.pods is None or not self.pods.still_at(claims.pod, claims.destination):
                return self._ask_payment(
                    rule,
                    402,
                    "session_invalid",
                    f"Pod {claims.pod} is no longer at the session's address; send the token "
                    "for a new session.",
                )
            dst = (ORIGINAL_DST, claims.destination)
            allow = replace(allow, upstream_headers=(dst, *allow.upstream_headers))
        return allow

    def _paid_request(
        self, grant: Grant, headers: Mapping[str, str], spoofed: tuple[str, ...]
    ) -> Allow:
        """The allow of a request taken from a per_request grant."""
        left = ("x-paygress-remaining", str(grant.requests_left))
        return _paid(grant, left, _removed(headers, spoofed, left[0]))

    async def _grant_for(
        self, raw: str, key: bytes, rule: RouteRule, request: HttpRequest
    ) -> Grant | Answer:
        """Finds or creates the grant of a token seen for the first time in memory. Everything
        a client can send for free is answered from memory where it can be: a token refused
        before, malformed, from another mint, worth too little, or holding a proof the mint
        reported spent costs no mint call."""
        refused = self.refusals.get(key)
        if refused is not None:
            return self._ask_payment(rule, *refused)
        try:
            token = parse_token(
                raw,
                max_bytes=self.settings.max_token_bytes,
                max_proofs=self.settings.max_proofs,
            )
        except TokenError as exc:
            return self._ask_payment(rule, 400, exc.reason, f"Invalid Cashu token: {exc}")
        problem = self._precheck(token, rule)
        if problem is None and self.pods is not None and rule.mode is Mode.POD:
            problem = self.pods.precheck(rule, request.headers)
        if problem is not None:
            return problem
        if self.budget is not None and not _carries_dleq(token):
            # A client over its budget of unproven swaps is turned away before any more work
            # is spent on its token (fingerprint, verification, a task).
            wait = self.budget.wait(normalize_mint_url(token.mint), request.client)
            if wait:
                return self._try_later(_over_budget(wait))
        fp = fingerprint(token)
        grant = self.book.by_id(fp)
        if grant is not None:
            return self.book.add(grant, key)
        refused = self.refusals.any_of((fp, *(p.y() for p in token.proofs)))
        if refused is not None:
            self.refusals.add(key, refused)
            return self._ask_payment(rule, *refused)
        task = self._inflight.get(fp)
        if task is None and not self.store.available:
            return self._store_down  # a swap must not start that could not be recorded
        if task is None:
            # The redemption runs as its own task: a client that goes away (Envoy timeout,
            # cancelled RPC) must not cancel a swap whose proofs are not yet persisted.
            task = asyncio.create_task(
                self._redeem(token, fp, rule, raw, request.client, request.headers.get(POD_HEADER))
            )
            self._inflight[fp] = task
            task.add_done_callback(lambda t: self._redemption_ended(fp, key, t))
        try:
            grant = await asyncio.wait_for(
                asyncio.shield(task), timeout=self.settings.payment_timeout_seconds
            )
        except TimeoutError:
            return self._try_later(
                TryAgainLater(
                    "payment_pending",
                    "The mint is settling this payment; send the same token again shortly.",
                )
            )
        except PaymentRejected as exc:
            return self._ask_payment(rule, exc.status, exc.reason, exc.message)
        except TryAgainLater as exc:
            return self._try_later(exc)
        if grant.mode is Mode.PER_REQUEST or grant.usable(self.clock()):
            # A per_request grant's pool may be empty while other processes hold some of
            # it: its leases decide.
            grant = self.book.add(grant, key)
        return grant

    def _try_later(self, exc: TryAgainLater) -> Answer:
        """503 (or 429) with Retry-After. A flood gets the same few answers: built once."""
        retry_after = exc.retry_after or self.settings.retry_after_seconds
        key = (exc.status, exc.reason, exc.message, retry_after)
        answer = self._later.get(key)
        if answer is None:
            if exc.status == 429:
                error = "rate_limited"
            else:
                error = exc.reason if isinstance(exc, StoreUnavailable) else "mint_unavailable"
            answer = deny(
                exc.status,
                error,
                exc.reason,
                exc.message,
                extra_headers=(("retry-after", str(retry_after)),),
            )
            if len(self._later) >= 256:
                self._later.clear()
            self._later[key] = answer
        return answer

    async def _redeem(
        self,
        token: Token,
        fp: str,
        rule: RouteRule,
        raw: str,
        client: str,
        top_up_pod: str | None = None,
    ) -> Grant:
        stored = await self.store.get_grant(fp)
        if stored is not None:
            log.info("token %s known from the store (grant %s)", token_hash(raw), fp[:16])
            return stored
        verified = await self.wallet.verify(token)
        top_up = await self._top_up(rule, top_up_pod) if top_up_pod else None
        mint = normalize_mint_url(token.mint)

        def grant_for(received: Received) -> Grant:
            if rule.mode is Mode.POD:
                assert self.pods is not None
                return self.pods.new_grant(fp, rule, mint, received, top_up)
            return self._new_grant(fp, rule, token, received)

        def admit() -> None:
            """A new swap is about to go to the mint: unproven tokens pay from the budget."""
            if verified.proven or self.budget is None:
                return
            wait = self.budget.admit(mint, client)
            if wait:
                raise _over_budget(wait)

        try:
            grant = await self.wallet.redeem(verified, fp, grant_for, admit)
        except (SettledMeanwhile, PaymentRejected) as exc:
            # Another path (the wallet's background task, another replica) may have redeemed
            # this very token meanwhile, so that the mint now says "spent": the store knows.
            if isinstance(exc, PaymentRejected) and exc.reason != "already_spent":
                raise
            stored = await self.store.get_grant(fp)
            if stored is None:
                raise
            return stored
        if top_up is not None:
            assert self.pods is not None
            for owner in top_up.owners:
                owner.expires_at = grant.expires_at
                self.book.mark_dirty(self.book.add(owner))
            await self.pods.patch_expiry_annotation(top_up.pod, grant.expires_at)
        self.metrics.received(grant.unit, grant.paid)
        log.info(
            "redeemed token %s: %d %s for route %s (grant %s)",
            token_hash(raw),
            grant.paid,
            grant.unit,
            grant.route,
            fp[:16],
        )
        return grant

    async def _top_up(self, rule: RouteRule, pod: str) -> TopUp:
        """The grants that reach `pod`, which a payment with X-Paygress-Pod extends."""
        owners = tuple(
            self.book.by_id(g.id) or g
            for g in await self.store.grants_of_pod(pod)
            if g.route == rule.name
        )
        if not owners:
            raise PaymentRejected(
                "unknown_pod",
                f"No pod {pod!r} was paid for on this route.",
                status=404,
                remember=False,
            )
        return TopUp(pod, owners)

    def _new_grant(self, fp: str, rule: RouteRule, token: Token, received: Received) -> Grant:
        if received.credited < rule.price:
            raise PaymentRejected(
                "insufficient_after_fees",
                f"The token is worth {received.credited} {self.settings.unit} after the mint's "
                f"fee of {received.fee} for its {len(token.proofs)} proofs; the price is "
                f"{rule.price}. Send {self._asked(rule)} {self.settings.unit} in the fewest "
                "proofs.",
            )
        now = self.clock()
        units = rule.buys(received.credited)
        return Grant(
            id=fp,
            route=rule.name,
            mode=rule.mode,
            unit=self.settings.unit,
            mint=normalize_mint_url(token.mint),
            paid=received.credited,
            created_at=now,
            requests_left=units if rule.mode is Mode.PER_REQUEST else 0,
            expires_at=now + units if rule.mode is Mode.PER_SECOND else 0.0,
        )

    def _precheck(self, token: Token, rule: RouteRule) -> Answer | None:
        """Checks that need no network: mint allow-list, unit, amount."""
        try:
            mint = normalize_mint_url(token.mint)
        except ValueError:
            return self._ask_payment(
                rule, 400, "bad_mint_url", "The token's mint URL is not valid."
            )
        if mint not in self._allowed:
            return self._ask_payment(
                rule, 400, "mint_not_accepted", "The token's mint is not accepted here."
            )
        if token.unit != self.settings.unit:
            return self._ask_payment(
                rule,
                400,
                "wrong_unit",
                f"The token's unit is {token.unit!r}; this route is priced in "
                f"{self.settings.unit!r}.",
            )
        if token.amount < rule.price:
            return self._ask_payment(
                rule,
                400,
                "insufficient",
                f"The token is worth {token.amount} {self.settings.unit}; "
                f"the price is {rule.price}.",
            )
        return None

    def _asked(self, rule: RouteRule) -> int:
        """What a 402 asks for: the price plus the mint's fee of paying it."""
        return asked_amount(rule.price, self.wallet.input_fee_ppk())

    def _ask_payment(self, rule: RouteRule, status: int, reason: str, message: str) -> Answer:
        """A denial that asks for payment. The same few repeat (every unpaid request to a
        route gets the same 402), so they are built once (per known mint fee)."""
        fee_ppk = self.wallet.input_fee_ppk()
        lock = self.wallet.lock_pubkey()
        key = (rule, status, reason, message, fee_ppk)
        denial = self._denials.get(key)
        if denial is None:
            error = "payment_required" if status == 402 else "bad_payment"
            denial = deny(
                status,
                error,
                reason,
                message,
                rule=rule,
                unit=self.settings.unit,
                mints=self.settings.mints,
                amount=asked_amount(rule.price, fee_ppk),
                lock=lock,
            )
            if len(self._denials) >= 1024:
                self._denials.clear()
            self._denials[key] = denial
        return denial


_TOKEN_HEADERS = frozenset(("x-cashu", "authorization"))
_PAID_HEADERS = frozenset(
    ("x-paygress-paid", "x-paygress-unit", "x-paygress-grant", "x-paygress-route")
)


def _paid(grant: Grant, left: tuple[str, str], remove: tuple[str, ...]) -> Allow:
    """The allow of a paid request: what the grant paid for goes upstream, what is left (and
    the grant's id) to the client; the token and forged paid headers are removed."""
    grant_id = ("x-paygress-grant", grant.id[:16])
    upstream = (
        ("x-paygress-paid", str(grant.paid)),
        ("x-paygress-unit", grant.unit),
        grant_id,
        ("x-paygress-route", grant.route),
        left,
    )
    return Allow(
        reason="paid",
        upstream_headers=upstream,
        response_headers=(left, grant_id),
        remove_headers=remove,
    )


def _carries_dleq(token: Token) -> bool:
    """Every proof carries a DLEQ proof (valid or not: the wallet checks)."""
    return all(p.dleq is not None and p.dleq.r is not None for p in token.proofs)


def _over_budget(wait: float) -> TryAgainLater:
    return TryAgainLater(
        "swap_budget",
        "Too many payments that the mint has to check; try again shortly, or pay with a "
        "token that carries DLEQ proofs (NUT-12).",
        status=429,
        retry_after=max(1, math.ceil(wait)),
    )


@lru_cache(maxsize=256)
def _free(remove: tuple[str, ...]) -> Allow:
    """The allow of a free route whose request carried headers the upstream must not see."""
    return Allow(reason="free", remove_headers=remove) if remove else FREE


@lru_cache(maxsize=1024)
def _free_client(entry: FreeClient, rule: RouteRule, remove: tuple[str, ...]) -> Allow:
    """A listed client on a priced route: no payment, and the upstream learns who and where
    (the headers Paygress sets replace any copies, so they are not removed too)."""
    upstream = ((FREE_CLIENT_HEADER, entry.name), ("x-paygress-route", rule.name))
    set_here = {name for name, _ in upstream}
    return Allow(
        reason="free_client",
        upstream_headers=upstream,
        remove_headers=tuple(h for h in remove if h not in set_here),
    )


def _also_removing(decision: Allow, remove: tuple[str, ...]) -> Allow:
    """`decision`, also removing `remove` (except what it sets itself)."""
    set_here = {name for name, _ in decision.upstream_headers}
    extra = tuple(h for h in remove if h not in set_here and h not in decision.remove_headers)
    return replace(decision, remove_headers=decision.remove_headers + extra)


def _extract_token(headers: Mapping[str, str]) -> str | None:
    value = (headers.get("x-cashu") or "").strip()
    if value:
        return value
    auth = headers.get("authorization")
    return _authorization_token(auth) if auth else None


def _authorization_token(value: str) -> str | None:
    scheme, _, rest = value.strip().partition(" ")
    scheme = scheme.lower()
    rest = rest.strip()
    if scheme == "cashu" and rest:
        return rest
    if scheme == "bearer" and rest.startswith("cashu"):
        return rest
    return None


def _removed(
    headers: Mapping[str, str], spoofed: tuple[str, ...], left_header: str
) -> tuple[str, ...]:
    """Headers a paid request loses: the token, and forged copies of paid headers that are not
    overwritten anyway."""
    remove: tuple[str, ...] = ("x-cashu",) if "x-cashu" in headers else ()
    if "authorization" in headers and _authorization_token(headers["authorization"]):
        remove += ("authorization",)
    if spoofed:  # forged copies of the headers set below are simply overwritten
        remove += tuple(h for h in spoofed if h not in _PAID_HEADERS and h != left_header)
    return remove
