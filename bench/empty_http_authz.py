"""Baseline for the HTTP authorization paths: an aiohttp server that answers 200 to anything,
as Paygress's forward-auth and Envoy HTTP ext_authz listener would, and does nothing else.

`--loop uvloop` (the default, the loop Paygress picks) or `--loop asyncio`; `--lowlevel` serves
with aiohttp's low-level server (no application, router or middlewares). `GET /__stats` says
how many connections and requests it has had (the proxies' connection reuse)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from aiohttp import web

from paygress.event_loop import loop_factory

COUNTS = {"connections": 0, "requests": 0}


async def ok(request: web.BaseRequest) -> web.Response:
    if request.path == "/__stats":
        return web.Response(text=json.dumps(COUNTS))
    COUNTS["requests"] += 1
    return web.Response(status=200)


async def main(port: int, lowlevel: bool) -> None:
    if lowlevel:
        server = web.Server(ok, access_log=None)
    else:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", ok)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        assert runner.server is not None
        server = runner.server

    def counting(**kwargs: Any) -> Any:
        COUNTS["connections"] += 1
        return server(**kwargs)

    loop = asyncio.get_running_loop()
    await loop.create_server(counting, "127.0.0.1", port, reuse_address=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    parser.add_argument("--lowlevel", action="store_true")
    args = parser.parse_args()
    _, factory = loop_factory(args.loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main(args.port, args.lowlevel))
