"""JSON-lines wallet server around nutshell's Python ``Wallet``; runs under ``.venv-mint``.

Started by :class:`tests.peers.wallet.CashuWallet` as
``.venv-mint/bin/python tests/peers/wallet_server.py --workdir DIR``. It reads one JSON request
per line on stdin and writes one JSON answer per line on stdout (the first line written is
``{"ready": true, ...}``). Anything else that prints (nutshell's helpers do) or logs goes to
stderr, which the client sends to a log file. Answers echo the request's ``"id"`` if it has one;
failures are answered as ``{"error": "..."}``.

Requests:

``{"op": "tokens", "mint": URL, "amounts": [8, 8, 21], "version": 4|3, "include_dleq": false,
"token_mint": URL?}`` -> ``{"tokens": [...]}``
    One independent token per amount, each worth exactly that amount: the proofs are minted
    with a bolt11 mint quote (FakeWallet pays it at once) split into exactly the denominations
    the tokens need, so no swap is needed and no two tokens share a proof. Proofs put into a
    token are marked reserved. Unreserved proofs the wallet already holds (from ``receive``) are
    used first. ``token_mint`` writes another mint URL into the tokens than the one the proofs
    were minted at (e.g. a counting proxy in front of the same mint).
``{"op": "balance", "mint": URL?}`` -> ``{"balance": sats}``: unreserved proofs (of one mint, or
    of all mints this server has used).
``{"op": "check", "mint": URL?, "token": T}`` -> ``{"states": ["UNSPENT"|"SPENT"|"PENDING", ...],
    "spent": bool, "unspent": bool}``: the state of the token's proofs, asked of ``mint``
    (default: the token's own mint URL) with NUT-07 ``/v1/checkstate``.
``{"op": "receive", "token": T, "mint": URL?}`` -> ``{"amount": sats}``: swaps the token's
    proofs for new ones at the mint (input fees deducted) and keeps them.
``{"op": "decode", "token": T}`` -> ``{"amount", "mint", "unit", "keysets", "amounts",
    "secrets", "dleq"}`` as nutshell parses the token (no mint contact).
``{"op": "send", "mint": URL, "amount": n, "lock": "P2PK:<pubkey>"?, "dleq": bool,
"timelock_seconds": n?, "token_mint": URL?}`` -> ``{"token": T}``
    What ``cashu send [--lock P2PK:<pubkey>] [--dleq]`` does (nutshell's own ``send``, which
    swaps at the mint for proofs locked to the key, with its default locktime of a day), after
    minting enough to send.
``{"op": "pay_request", "request": creqA..., "token_mint": URL?}`` -> ``{"token": T}``
    What ``cashu pay <creqA…>`` does with an in-band request (no transport): decode it with
    nutshell's NUT-18 decoder, lock to its ``nut10`` P2PK key, send with DLEQ proofs and fees.
``{"op": "decode_request", "request": creqA...}`` -> the request as nutshell decodes it.
``{"op": "ping"}`` -> ``{"pong": true}``.
"""
# mypy: disable-error-code="import-not-found, import-untyped"

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import sys
import traceback
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any, TextIO

# Protocol output gets a private copy of the real stdout; fd 1 then points at stderr, so stray
# prints of nutshell (e.g. "Received 8 sat") cannot corrupt the protocol stream.
_PROTO_FD = os.dup(1)
os.dup2(2, 1)
PROTO_OUT: TextIO = os.fdopen(_PROTO_FD, "w", encoding="utf-8", buffering=1)

from cashu.core.base import Proof, TokenV3, TokenV4  # noqa: E402
from cashu.core.nuts.nut18 import deserialize as deserialize_payment_request  # noqa: E402
from cashu.core.settings import VERSION, settings  # noqa: E402
from cashu.core.split import amount_split  # noqa: E402
from cashu.wallet.crud import update_proof  # noqa: E402
from cashu.wallet.helpers import deserialize_token_from_string  # noqa: E402
from cashu.wallet.wallet import Wallet  # noqa: E402
from loguru import logger  # noqa: E402

# nutshell sets sys.tracebacklimit = 0 unless DEBUG; we want tracebacks in the log.
if hasattr(sys, "tracebacklimit"):
    del sys.tracebacklimit

MAX_OUTPUTS_PER_MINT = 250  # nutshell rejects requests with more than 1000 outputs
MINT_RETRIES = 40


class WalletServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.wallets: dict[str, Any] = {}

    async def wallet(self, mint_url: str) -> Any:
        """One nutshell Wallet (and sqlite DB) per mint URL, so that the same mint reached under
        two URLs (directly and through a proxy) does not mix keyset URLs."""
        key = mint_url.rstrip("/")
        if key in self.wallets:
            return self.wallets[key]
        slug = re.sub(r"[^A-Za-z0-9]+", "_", key.split("://", 1)[-1])[:40]
        digest = hashlib.sha256(key.encode()).hexdigest()[:8]
        db_dir = self.workdir / "wallets" / f"{slug}-{digest}"
        db_dir.mkdir(parents=True, exist_ok=True)
        wallet = await Wallet.with_db(key, str(db_dir), name="wallet")
        # load_mint() swallows errors; these raise if the mint cannot be reached.
        await wallet.load_mint_keysets()
        await wallet.activate_keyset()
        await wallet.load_mint_info(reload=True)
        await wallet.load_proofs(reload=True)
        self.wallets[key] = wallet
        return wallet

    # -- ops ---------------------------------------------------------------------------------

    async def op_ping(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True, "version": VERSION}

    async def op_tokens(self, req: dict[str, Any]) -> dict[str, Any]:
        mint_url = str(req["mint"])
        amounts = [int(a) for a in req["amounts"]]
        version = int(req.get("version", 4))
        include_dleq = bool(req.get("include_dleq", False))
        token_mint = req.get("token_mint")
        if version not in (3, 4):
            raise ValueError(f"unsupported token version {version}")
        if any(a <= 0 for a in amounts):
            raise ValueError("amounts must be positive")
        wallet = await self.wallet(mint_url)
        await wallet.load_proofs(reload=True)

        # Unreserved proofs of the active keyset, by denomination.
        pool: dict[int, list[Any]] = defaultdict(list)
        for proof in wallet.proofs:
            if not proof.reserved and proof.id == wallet.keyset_id:
                pool[proof.amount].append(proof)

        plans: list[list[Any]] = []
        missing: list[tuple[int, int]] = []  # (token index, denomination)
        for index, amount in enumerate(amounts):
            plan: list[Any] = []
            for denomination in amount_split(amount):
                if pool[denomination]:
                    plan.append(pool[denomination].pop())
                else:
                    missing.append((index, denomination))
            plans.append(plan)

        for start in range(0, len(missing), MAX_OUTPUTS_PER_MINT):
            chunk = missing[start : start + MAX_OUTPUTS_PER_MINT]
            minted = await self._mint(wallet, [d for _, d in chunk])
            by_denomination: dict[int, list[Any]] = defaultdict(list)
            for proof in minted:
                by_denomination[proof.amount].append(proof)
            for index, denomination in chunk:
                plans[index].append(by_denomination[denomination].pop())

        tokens: list[str] = []
        async with wallet.db.connect() as conn:
            for plan in plans:
                send_id = str(uuid.uuid4())
                for proof in plan:
                    proof.reserved = True
                    await update_proof(proof, reserved=True, send_id=send_id, conn=conn)
        for plan, amount in zip(plans, amounts, strict=True):
            assert sum(p.amount for p in plan) == amount
            tokens.append(await self._serialize(wallet, plan, version, include_dleq, token_mint))
        await wallet.load_proofs(reload=True)
        return {"tokens": tokens}

    async def _mint(self, wallet: Any, denominations: list[int]) -> list[Any]:
        total = sum(denominations)
        quote = await wallet.request_mint(total)
        last: Exception | None = None
        for _ in range(MINT_RETRIES):
            try:
                proofs: list[Any] = await wallet.mint(
                    total, quote_id=quote.quote, split=sorted(denominations)
                )
                return proofs
            except Exception as exc:  # quote not paid yet: FakeWallet pays asynchronously
                last = exc
                if "paid" not in str(exc).lower():
                    raise
                await asyncio.sleep(0.05)
        raise RuntimeError(f"mint quote {quote.quote} was never paid: {last}")

    async def _serialize(
        self,
        wallet: Any,
        proofs: list[Any],
        version: int,
        include_dleq: bool,
        token_mint: str | None,
    ) -> str:
        if version == 3:
            token3 = await wallet._make_tokenv3(proofs)
            if token_mint:
                for entry in token3.token:
                    entry.mint = token_mint
            serialized: str = token3.serialize(include_dleq)
            return serialized
        token4 = await wallet._make_token(proofs, include_dleq)
        if token_mint:
            token4.set_mint(token_mint)
        serialized = token4.serialize(include_dleq)
        return serialized

    async def op_send(self, req: dict[str, Any]) -> dict[str, Any]:
        mint_url = str(req["mint"])
        amount = int(req["amount"])
        lock = str(req.get("lock") or "")
        include_dleq = bool(req.get("dleq", False))
        wallet = await self.wallet(mint_url)
        await wallet.load_mint()
        # nutshell's `send --lock` path (helpers.send): a P2PK lock with the default locktime,
        # then swap_to_send; on freshly minted proofs, so that coin selection over a wallet
        # with many reserved proofs cannot get in the way.
        # One proof comfortably above the amount and both fees: nutshell's coin selection
        # ignores the receiver's fee (include_fees), and would pick too little from exact change.
        fresh = await self._mint(wallet, [1 << (amount + 8).bit_length()])
        secret_lock = None
        if lock:
            if not lock.startswith("P2PK:"):
                raise ValueError("lock must be P2PK:<pubkey>")
            timelock = req.get("timelock_seconds")
            secret_lock = await wallet.create_p2pk_lock(
                lock.split(":", 1)[1],
                locktime_seconds=settings.locktime_delta_seconds if timelock is None else timelock,
                sig_all=False,
                n_sigs=1,
            )
        _, send_proofs = await wallet.swap_to_send(
            fresh,
            amount,
            set_reserved=True,
            secret_lock=secret_lock,
            include_fees=bool(req.get("include_fees", False)),
        )
        token = await wallet.serialize_proofs(send_proofs, include_dleq=include_dleq, legacy=False)
        return {"token": self._remint(token, req.get("token_mint"), include_dleq)}

    async def op_pay_request(self, req: dict[str, Any]) -> dict[str, Any]:
        pr = deserialize_payment_request(str(req["request"]))
        if pr.t:
            raise ValueError("only in-band requests (no transport) are paid here")
        lock = ""
        if pr.nut10:
            if pr.nut10.k != "P2PK" or pr.nut10.t or len(pr.nut10.d) != 66:
                raise ValueError(f"unsupported lock {pr.nut10}")
            lock = f"P2PK:{pr.nut10.d}"
        mint_url = str(req.get("mint") or (pr.m or [""])[0])
        answer = await self.op_send(
            {
                "mint": mint_url,
                "amount": pr.a,
                "lock": lock,
                "dleq": True,
                "include_fees": True,
                "token_mint": req.get("token_mint"),
            }
        )
        return answer

    async def op_decode_request(self, req: dict[str, Any]) -> dict[str, Any]:
        pr = deserialize_payment_request(str(req["request"]))
        decoded: dict[str, Any] = pr.model_dump(exclude_none=True)
        return {"request": decoded}

    @staticmethod
    def _remint(token: str, token_mint: str | None, include_dleq: bool) -> str:
        """The token with another mint URL written in it (e.g. a proxy in front of the mint)."""
        if not token_mint:
            return token
        parsed = deserialize_token_from_string(token)
        assert isinstance(parsed, TokenV4)
        parsed.set_mint(token_mint)
        serialized: str = parsed.serialize(include_dleq)
        return serialized

    async def op_balance(self, req: dict[str, Any]) -> dict[str, Any]:
        mint_url = req.get("mint")
        wallets = [await self.wallet(str(mint_url))] if mint_url else list(self.wallets.values())
        total = 0
        for wallet in wallets:
            await wallet.load_proofs(reload=True)
            total += sum(p.amount for p in wallet.proofs if not p.reserved)
        return {"balance": total}

    @staticmethod
    def _parse(token: str) -> tuple[Any, list[Any]]:
        parsed = deserialize_token_from_string(token)
        if not isinstance(parsed, TokenV3 | TokenV4):
            raise ValueError("not a cashu token")
        proofs: list[Proof] = parsed.proofs
        return parsed, proofs

    async def op_check(self, req: dict[str, Any]) -> dict[str, Any]:
        parsed, proofs = self._parse(str(req["token"]))
        wallet = await self.wallet(str(req.get("mint") or parsed.mint))
        response = await wallet.check_proof_state(proofs)
        states = [s.state.value for s in response.states]
        return {
            "states": states,
            "spent": bool(states) and all(s == "SPENT" for s in states),
            "unspent": bool(states) and all(s == "UNSPENT" for s in states),
        }

    async def op_decode(self, req: dict[str, Any]) -> dict[str, Any]:
        parsed, proofs = self._parse(str(req["token"]))
        return {
            "amount": parsed.amount,
            "mint": parsed.mint,
            "unit": parsed.unit,
            "keysets": parsed.keysets,
            "amounts": [p.amount for p in proofs],
            "secrets": [p.secret for p in proofs],
            "dleq": all(p.dleq is not None for p in proofs),
        }

    async def op_receive(self, req: dict[str, Any]) -> dict[str, Any]:
        parsed, proofs = self._parse(str(req["token"]))
        wallet = await self.wallet(str(req.get("mint") or parsed.mint))
        await wallet._expand_short_keyset_ids(proofs)
        kept, _ = await wallet.redeem(proofs)
        await wallet.load_proofs(reload=True)
        return {"amount": sum(p.amount for p in kept)}

    async def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        handler = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        if handler is None:
            return {"error": f"unknown op {op!r}"}
        try:
            answer: dict[str, Any] = await handler(req)
        except Exception as exc:
            logger.error(f"op {op} failed:\n{traceback.format_exc()}")
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        return answer


def write(answer: dict[str, Any]) -> None:
    PROTO_OUT.write(json.dumps(answer) + "\n")
    PROTO_OUT.flush()


async def serve(workdir: Path) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=256 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    server = WalletServer(workdir)
    write({"ready": True, "pid": os.getpid(), "version": VERSION})
    while True:
        line = await reader.readline()
        if not line:
            return
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("request must be a JSON object")
        except ValueError as exc:
            write({"error": f"bad request: {exc}"})
            continue
        answer = await server.handle(req)
        if "id" in req:
            answer["id"] = req["id"]
        write(answer)


def main() -> None:
    parser = argparse.ArgumentParser(description="JSON-lines nutshell wallet server")
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--log-level", default=os.environ.get("WALLET_LOG_LEVEL", "INFO"))
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    args.workdir.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(args.workdir))


if __name__ == "__main__":
    main()
