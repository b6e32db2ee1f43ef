"""Baseline (b): a grpc.aio ext_authz server that allows everything and does nothing else.

`--loop uvloop` runs the same server on uvloop, the loop Paygress picks by default."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2

from paygress.event_loop import loop_factory

OK = external_auth_pb2.CheckResponse(
    status=status_pb2.Status(code=code_pb2.OK), ok_response=external_auth_pb2.OkHttpResponse()
)


class Empty(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    async def Check(self, request: Any, context: Any) -> Any:
        return OK


async def main(socket: str) -> None:
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(Empty(), server)
    server.add_insecure_port(f"unix:{socket}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    _, factory = loop_factory(args.loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main(args.socket))
