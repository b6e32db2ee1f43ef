"""The operator's admin gRPC service (paygress.v1.WalletAdmin), served on the Unix socket only."""

from __future__ import annotations

from typing import Any

import grpc

from paygress.v1 import admin_pb2, admin_pb2_grpc
from paygress.wallet import OperatorWallet, WalletError


class WalletAdminService(admin_pb2_grpc.WalletAdminServicer):
    """Balance and withdraw; the server stays the only writer of the wallet."""

    def __init__(self, wallet: OperatorWallet) -> None:
        self.wallet = wallet

    async def Balance(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        balances = await self.wallet.balances()
        return admin_pb2.BalanceResponse(
            balances=[
                admin_pb2.MintBalance(
                    mint=b.mint, unit=b.unit, spendable=b.spendable, pending=b.pending
                )
                for b in balances
            ]
        )

    async def Withdraw(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if request.unit and request.unit != self.wallet.unit:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"this wallet holds {self.wallet.unit} only"
            )
        try:
            token, wid, amount = await self.wallet.withdraw(request.amount, request.mint or None)
        except WalletError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return admin_pb2.WithdrawResponse(token=token, amount=amount, withdrawal_id=wid)

    async def Restore(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            count, amount = await self.wallet.restore(request.mint or None)
        except WalletError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return admin_pb2.RestoreResponse(proofs=count, amount=amount)


def add_to_server(wallet: OperatorWallet, server: grpc.aio.Server) -> None:
    admin_pb2_grpc.add_WalletAdminServicer_to_server(  # type: ignore[no-untyped-call]
        WalletAdminService(wallet), server
    )
