"""Baseline for the HTTP authorization paths: an aiohttp server that answers 200 to anything,
as Paygress's forward-auth and Envoy HTTP ext_authz listener would, and does nothing else.

`--loop uvloop` (the default, the loop Paygress picks) or `--loop asyncio`; `--lowlevel` serves
with aiohttp's low-level server (no application, router or middlewares)."""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from paygress.event_loop import loop_factory


async def ok(request: web.BaseRequest) -> web.Response:
    return web.Response(status=200)


async def main(port: int, lowlevel: bool) -> None:
    if lowlevel:
        server = web.Server(ok, access_log=None)
        loop = asyncio.get_running_loop()
        await loop.create_server(server, "127.0.0.1", port, reuse_address=True)
    else:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", ok)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
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
