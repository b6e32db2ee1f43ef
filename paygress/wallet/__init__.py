"""The operator's wallet: the Wallet port on top of the Ledger port (see `operator`)."""

from paygress.wallet.operator import OperatorWallet, WalletError

__all__ = ["OperatorWallet", "WalletError"]
