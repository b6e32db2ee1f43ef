"""Exceptions shared by the wallet math (`outputs`) and the HTTP client (`mint_client`).

Messages never contain token, secret or blinding-factor text.
"""

from __future__ import annotations

__all__ = [
    "CODE_AMOUNT_OUTSIDE_LIMIT",
    "CODE_DUPLICATE_INPUTS",
    "CODE_DUPLICATE_OUTPUTS",
    "CODE_KEYSET_INACTIVE",
    "CODE_KEYSET_NOT_FOUND",
    "CODE_MULTIPLE_UNITS",
    "CODE_OUTPUTS_ALREADY_SIGNED",
    "CODE_OUTPUTS_PENDING",
    "CODE_PROOFS_ALREADY_SPENT",
    "CODE_PROOFS_PENDING",
    "CODE_PROOF_VERIFICATION_FAILED",
    "CODE_TRANSACTION_ERROR",
    "CODE_TRANSACTION_NOT_BALANCED",
    "CODE_UNIT_MISMATCH",
    "MintError",
    "MintProtocolError",
    "MintRejected",
    "MintUnavailable",
]

# NUT error codes as returned by nutshell 0.21 (cashu/core/errors.py) in a 400 answer
# ``{"detail": str, "code": int}``. Unknown failures come back with code 0.
CODE_PROOF_VERIFICATION_FAILED = 10001  # bad signature / no secret
CODE_TRANSACTION_ERROR = 11000  # generic; also "secret too long", "witness too long"
CODE_PROOFS_ALREADY_SPENT = 11001
CODE_PROOFS_PENDING = 11002
CODE_OUTPUTS_ALREADY_SIGNED = 11003
CODE_OUTPUTS_PENDING = 11004
CODE_TRANSACTION_NOT_BALANCED = 11005  # inputs - fees != outputs
CODE_AMOUNT_OUTSIDE_LIMIT = 11006
CODE_DUPLICATE_INPUTS = 11007
CODE_DUPLICATE_OUTPUTS = 11008
CODE_MULTIPLE_UNITS = 11009
CODE_UNIT_MISMATCH = 11010
CODE_KEYSET_NOT_FOUND = 12001
CODE_KEYSET_INACTIVE = 12002


class MintError(Exception):
    """Base class of every error raised while talking to a mint. Expected (a mint is another
    party on the network); callers catch this one class unless they react differently to
    the three below."""


class MintUnavailable(MintError):
    """No answer: the mint could not be reached, timed out, or answered 5xx / 429 /
    non-JSON. Retry later. The outcome of a request that changes state (a swap) is unknown,
    unless `sent` is False: no connection was made, so the mint did nothing."""

    def __init__(self, detail: str, *, sent: bool = True) -> None:
        super().__init__(detail)
        self.sent = sent


class MintProtocolError(MintError):
    """The mint answered, but the answer is syntactically or semantically wrong. Like
    MintUnavailable for the caller (the outcome is unknown), and worth an error log."""


class MintRejected(MintError):
    """The mint refused the request (4xx, usually ``{"detail": ..., "code": ...}``): it
    answered, so for a swap it signed nothing in this call. `code` says why (the properties
    below name the codes a wallet must tell apart)."""

    def __init__(self, detail: str, code: int | None = None, status: int | None = None) -> None:
        self.detail = detail
        self.code = code
        self.status = status
        super().__init__(f"mint rejected request (code={code}, status={status}): {detail}")

    @property
    def is_spent(self) -> bool:
        """True when the mint says (some of) the inputs are already spent (11001)."""
        return self.code == CODE_PROOFS_ALREADY_SPENT

    @property
    def is_pending(self) -> bool:
        """True when (some of) the inputs are locked in another pending transaction (11002)."""
        return self.code == CODE_PROOFS_PENDING

    @property
    def outputs_already_signed(self) -> bool:
        """True when the outputs were signed before (11003): recover them with NUT-09 restore."""
        return self.code == CODE_OUTPUTS_ALREADY_SIGNED

    @property
    def is_invalid_proof(self) -> bool:
        """True when the mint could not verify the inputs' signatures (10001)."""
        return self.code == CODE_PROOF_VERIFICATION_FAILED
