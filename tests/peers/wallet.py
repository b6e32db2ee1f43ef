"""Async client for ``wallet_server.py``: a real nutshell wallet, driven from the test's Python.

Paygress' venv cannot import nutshell (its pins clash), so the wallet runs as a child process
under ``.venv-mint/bin/python`` and is spoken to in JSON lines over stdin/stdout.

    async with CashuWallet() as wallet:
        token = await wallet.token(mint.url, 8)             # cashuB..., worth exactly 8 sat
        tokens = await wallet.tokens(mint.url, [8] * 10, version=3)
        assert not await wallet.check_spent(mint.url, token)
        received = await wallet.receive(token)              # 8 minus the mint's input fee
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from .lifecycle import Lifecycle
from .procs import (
    VENV_MINT,
    PeerError,
    StartupError,
    base_env,
    child_preexec,
    log_tail,
    register_group,
    unregister_group,
)

WALLET_SERVER = Path(__file__).resolve().with_name("wallet_server.py")
MINT_PYTHON = VENV_MINT / "bin" / "python"


class WalletError(PeerError):
    """The wallet server answered ``{"error": ...}``."""


class CashuWallet(Lifecycle):
    """A nutshell wallet in a child process. Starts lazily on first use (or ``await start()``).

    Requests are served one at a time (a lock serialises concurrent callers). ``timeout``
    bounds every request; the server is killed on :meth:`aclose`.
    """

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        timeout: float = 60.0,
        python: str | Path = MINT_PYTHON,
        log_level: str = "INFO",
    ) -> None:
        self._owns_workdir = workdir is None
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="paygress-wallet-")
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "wallet.log"
        self.timeout = timeout
        self.python = Path(python)
        self.log_level = log_level
        self.startup_seconds: float | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> Self:
        if self.running:
            return self
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                str(self.python),
                str(WALLET_SERVER),
                "--workdir",
                str(self.workdir),
                "--log-level",
                self.log_level,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=self.workdir,
                env=base_env(self.workdir, {"CASHU_DIR": str(self.workdir / "cashu")}),
                start_new_session=True,
                preexec_fn=child_preexec(),
                limit=256 * 1024 * 1024,
            )
        register_group(self._proc.pid)
        try:
            hello = await self._read(30.0)
        except Exception as exc:
            await self._kill()
            raise StartupError(
                f"wallet server did not start: {exc}\n"
                f"--- last lines of {self.log_path} ---\n{log_tail(self.log_path)}"
            ) from exc
        if not hello.get("ready"):
            await self._kill()
            raise StartupError(f"wallet server said {hello!r} instead of ready")
        self.startup_seconds = time.monotonic() - started
        return self

    async def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
        await proc.wait()
        unregister_group(proc.pid)

    async def aclose(self) -> None:
        """Stop the server (EOF on stdin, then SIGTERM/SIGKILL) and remove an owned workdir."""
        proc = self._proc
        if proc is not None:
            if proc.returncode is None:
                if proc.stdin is not None:
                    with contextlib.suppress(OSError, RuntimeError):
                        proc.stdin.close()
                try:
                    await asyncio.wait_for(proc.wait(), timeout=5.0)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.terminate()
                    try:
                        await asyncio.wait_for(proc.wait(), timeout=5.0)
                    except TimeoutError:
                        await self._kill()
            unregister_group(proc.pid)
            self._proc = None
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- protocol ----------------------------------------------------------------------------

    async def _read(self, seconds: float) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), timeout=seconds)
        if not line:
            code = await self._proc.wait()
            raise PeerError(
                f"wallet server exited with code {code}\n"
                f"--- last lines of {self.log_path} ---\n{log_tail(self.log_path)}"
            )
        answer = json.loads(line)
        if not isinstance(answer, dict):
            raise PeerError(f"wallet server sent {answer!r}")
        return answer

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return its answer; raise :class:`WalletError` on an error."""
        async with self._lock:
            if not self.running:
                await self.start()
            assert self._proc is not None and self._proc.stdin is not None
            request_id = next(self._ids)
            payload = {"op": op, "id": request_id, **fields}
            self._proc.stdin.write(json.dumps(payload).encode() + b"\n")
            await self._proc.stdin.drain()
            try:
                answer = await self._read(self.timeout)
            except TimeoutError:
                # The answer may still come; the stream is out of step: start afresh next time.
                await self._kill()
                self._proc = None
                raise
        if answer.get("id") != request_id:
            raise PeerError(f"wallet server answered {answer!r} to request {request_id}")
        if "error" in answer:
            raise WalletError(f"{op}: {answer['error']}")
        return answer

    # -- API ---------------------------------------------------------------------------------

    async def tokens(
        self,
        mint_url: str,
        amounts: Sequence[int],
        version: int = 4,
        *,
        include_dleq: bool = False,
        token_mint: str | None = None,
    ) -> list[str]:
        """One independent token per amount, each worth exactly that amount (no shared proofs).

        ``version`` 4 gives ``cashuB`` (CBOR) tokens, 3 gives ``cashuA`` (JSON). Proofs are
        minted at ``mint_url``; ``token_mint`` writes another URL into the tokens (e.g. a
        counting proxy in front of the same mint) than the one they were minted at.
        """
        fields: dict[str, Any] = {
            "mint": mint_url,
            "amounts": list(amounts),
            "version": version,
            "include_dleq": include_dleq,
        }
        if token_mint is not None:
            fields["token_mint"] = token_mint
        answer = await self.request("tokens", **fields)
        tokens: list[str] = answer["tokens"]
        return tokens

    async def token(
        self,
        mint_url: str,
        amount: int,
        version: int = 4,
        *,
        include_dleq: bool = False,
        token_mint: str | None = None,
    ) -> str:
        """A single token worth exactly ``amount``."""
        (token,) = await self.tokens(
            mint_url, [amount], version, include_dleq=include_dleq, token_mint=token_mint
        )
        return token

    async def proof_states(self, mint_url: str | None, token: str) -> list[str]:
        """NUT-07 state of each proof of ``token`` ("UNSPENT", "SPENT", "PENDING"), asked of
        ``mint_url`` (None: the mint URL written in the token)."""
        answer = await self.request("check", mint=mint_url, token=token)
        states: list[str] = answer["states"]
        return states

    async def check_spent(self, mint_url: str | None, token: str) -> bool:
        """True if every proof of ``token`` is spent at the mint."""
        answer = await self.request("check", mint=mint_url, token=token)
        return bool(answer["spent"])

    async def check_unspent(self, mint_url: str | None, token: str) -> bool:
        """True if no proof of ``token`` is spent or pending at the mint."""
        answer = await self.request("check", mint=mint_url, token=token)
        return bool(answer["unspent"])

    async def receive(self, token: str, *, mint_url: str | None = None) -> int:
        """Swap the token's proofs into this wallet; returns the sats received (after the
        mint's input fee). ``mint_url`` overrides the URL written in the token."""
        answer = await self.request("receive", token=token, mint=mint_url)
        return int(answer["amount"])

    async def decode(self, token: str) -> dict[str, Any]:
        """The token as nutshell parses it: ``amount``, ``mint``, ``unit``, ``keysets``,
        ``amounts``, ``secrets``, ``dleq`` (all proofs carry a DLEQ proof). Offline."""
        answer = await self.request("decode", token=token)
        answer.pop("id", None)
        return answer

    async def send(
        self,
        mint_url: str,
        amount: int,
        *,
        lock: str | None = None,
        dleq: bool = False,
        timelock_seconds: int | None = None,
        token_mint: str | None = None,
    ) -> str:
        """What ``cashu send AMOUNT [--lock P2PK:<pubkey>] [--dleq]`` prints: nutshell's own
        send (a locked token is swapped at the mint into proofs locked to the key)."""
        fields: dict[str, Any] = {"mint": mint_url, "amount": amount, "dleq": dleq}
        if lock:
            fields["lock"] = f"P2PK:{lock}"
        if timelock_seconds is not None:
            fields["timelock_seconds"] = timelock_seconds
        if token_mint:
            fields["token_mint"] = token_mint
        answer = await self.request("send", **fields)
        return str(answer["token"])

    async def pay_request(
        self, request: str, *, mint_url: str | None = None, token_mint: str | None = None
    ) -> str:
        """What ``cashu pay <creqA…>`` prints for an in-band NUT-18 request: a token for its
        amount from its mint (or `mint_url`), locked to its ``nut10`` key, with DLEQ proofs."""
        answer = await self.request(
            "pay_request", request=request, mint=mint_url, token_mint=token_mint
        )
        return str(answer["token"])

    async def decode_request(self, request: str) -> dict[str, Any]:
        """A NUT-18 payment request as nutshell's own decoder reads it."""
        answer = await self.request("decode_request", request=request)
        decoded: dict[str, Any] = answer["request"]
        return decoded

    async def balance(self, mint_url: str | None = None) -> int:
        """Unreserved sats held (at one mint, or at all mints used so far)."""
        answer = await self.request("balance", mint=mint_url)
        return int(answer["balance"])
