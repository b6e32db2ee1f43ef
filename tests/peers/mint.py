"""A real nutshell Cashu mint (``.venv-mint/bin/mint``) with the FakeWallet Lightning backend.

Everything the mint writes stays in its working directory:

* ``MINT_DATABASE`` *and* ``MINT_AUTH_DATABASE``: both default to the relative path
  ``data/mint``; the auth database is created even when auth is off (that was the
  "Creating database directory: data/mint" line).
* ``CASHU_DIR``: the "Data dir" (default ``~/.cashu``).
* ``HOME`` and ``cwd``: nutshell reads ``./.env`` or else ``~/.cashu/.env`` *with override*,
  so a developer's own mint config would otherwise win over ours.

FakeWallet pays every mint quote immediately (``FAKEWALLET_DELAY_*=0``) and
``MINT_QUOTE_BACKEND_CHECK_RATE_LIMIT=0`` lets the mint re-check a quote at once.
``MINT_RATE_LIMIT=false`` switches off the per-IP limiter (60 req/min, 20 transactions/min by
default), which every test would hit since all clients are 127.0.0.1.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from .procs import LOOPBACK, VENV_MINT, ManagedProcess, base_env, free_port, wait_for_http

MINT_BIN = VENV_MINT / "bin" / "mint"

NUTSHELL_DEFAULT_INPUT_FEE_PPK = 100


class NutshellMint(ManagedProcess):
    """``await NutshellMint(workdir).start()``; ``.url``; ``stop()`` and ``start()`` again keep
    the same port, private key and database (so keysets and spent proofs survive)."""

    name = "mint"
    startup_timeout = 30.0

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        port: int | None = None,
        input_fee_ppk: int = NUTSHELL_DEFAULT_INPUT_FEE_PPK,
        private_key: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(workdir, name=name)
        self.port = port if port is not None else free_port()
        self.input_fee_ppk = input_fee_ppk
        self.private_key = private_key if private_key is not None else secrets.token_hex(32)
        self.extra_env = dict(extra_env or {})

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def db_dir(self) -> Path:
        return self.workdir / "mint"

    def command(self) -> list[str]:
        return [str(MINT_BIN)]

    def environment(self) -> dict[str, str]:
        env = base_env(
            self.workdir,
            {
                "CASHU_DIR": str(self.workdir / "cashu"),
                "MINT_BACKEND_BOLT11_SAT": "FakeWallet",
                "MINT_LISTEN_HOST": LOOPBACK,
                "MINT_LISTEN_PORT": str(self.port),
                "MINT_PRIVATE_KEY": self.private_key,
                "MINT_DATABASE": str(self.db_dir),
                "MINT_AUTH_DATABASE": str(self.workdir / "auth"),
                "MINT_INPUT_FEE_PPK": str(self.input_fee_ppk),
                "MINT_RATE_LIMIT": "false",
                "MINT_QUOTE_BACKEND_CHECK_RATE_LIMIT": "0",
                "FAKEWALLET_DELAY_INCOMING_PAYMENT": "0",
                "FAKEWALLET_DELAY_OUTGOING_PAYMENT": "0",
                "MINT_INFO_NAME": f"paygress-test-{self.name}",
            },
        )
        env.update(self.extra_env)
        return env

    async def wait_ready(self) -> None:
        await wait_for_http(
            f"{self.url}/v1/keysets", timeout=self.startup_timeout, interval=0.1, proc=self
        )

    async def keysets(self) -> list[dict[str, Any]]:
        """The mint's ``GET /v1/keysets`` answer."""
        async with httpx.AsyncClient(trust_env=False, timeout=5.0) as client:
            response = await client.get(f"{self.url}/v1/keysets")
            response.raise_for_status()
            keysets: list[dict[str, Any]] = response.json()["keysets"]
            return keysets
