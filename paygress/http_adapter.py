"""HTTP forward-auth for NGINX (auth_request, ingress-nginx auth-url) and Traefik (ForwardAuth).

The same gate decides as for Envoy. The original request comes in forwarding headers
(`X-Forwarded-Method/-Uri/-Host` from Traefik, `X-Original-Method/-URI`/`X-Original-URL` from
NGINX), so this port must be reachable by the proxy only.

- `/nginx` is for NGINX's auth_request, which passes only 2xx/401/403 on: a denial becomes 401
  with the real answer kept for a few seconds under the request's `X-Request-Id`, and the
  shipped config replays it from `/nginx/denied/<id>` (a real 402 with its `X-Cashu` header).
- Every other path answers with the decision as it is: 200 with the paid headers, or the
  denial's status, headers and JSON body (Traefik passes those to the client).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from urllib.parse import urlsplit

from aiohttp import web

from paygress.core.gate import Gate
from paygress.core.model import Allow, Answer, HttpRequest
from paygress.metrics import PrometheusMetrics

DENIAL_TTL_SECONDS = 30.0
DENIALS_MAX = 10_000
MAX_HEADER_BYTES = 64 * 1024


def client_address(request: web.Request, trusted_hops: int, *, nginx: bool = False) -> str:
    """The client's address: with `nginx`, X-Real-IP (deploy/nginx sets it from the
    connection); else the address `trusted_hops` entries from the right of X-Forwarded-For
    (each trusted proxy appends the address it saw), else the connection's peer. Entries a
    client wrote itself sit further left and are never read."""
    h = request.headers
    if nginx and h.get("X-Real-IP"):
        return h["X-Real-IP"].strip()
    hops = [a.strip() for a in ",".join(h.getall("X-Forwarded-For", [])).split(",") if a.strip()]
    if trusted_hops and len(hops) >= trusted_hops:
        return hops[-trusted_hops]
    return request.remote or ""


def to_request(request: web.Request, *, nginx: bool = False, trusted_hops: int = 1) -> HttpRequest:
    """The core's view of a forward-auth call: the original request, from forwarding headers.

    With `nginx`, only the headers NGINX itself sets are read, since it passes the client's
    own on too: X-Original-Method and X-Original-URL (ingress-nginx), or X-Original-URI and
    X-Forwarded-Host (deploy/nginx/nginx.conf, which also clears X-Original-URL). A client's
    X-Forwarded-Uri/-Method must not be able to turn a priced request into a free one there.
    """
    h = request.headers
    headers = {k.lower(): v for k, v in h.items()}
    if nginx:
        method = h.get("X-Original-Method")
        uri = h.get("X-Original-URI")
    else:
        method = h.get("X-Forwarded-Method") or h.get("X-Original-Method")
        uri = h.get("X-Forwarded-Uri") or h.get("X-Original-URI")
    # The Host of a forward-auth call names Paygress (the proxy's upstream for it), never the
    # client's request. That host is X-Forwarded-Host (Traefik's, or NGINX's $host: the
    # request line's authority wins over a Host header there, as at the proxy), else the
    # authority of X-Original-URL (ingress-nginx); neither means the request named none.
    host = h.get("X-Forwarded-Host", "")
    original_url = h.get("X-Original-URL")
    if original_url and (nginx or uri is None):  # ingress-nginx sends the full URL
        parts = urlsplit(original_url)
        uri = parts.path + (f"?{parts.query}" if parts.query else "")
        host = host or parts.netloc
    return HttpRequest(
        (method or request.method).upper(),
        host,
        uri or request.path_qs,
        headers,
        client=client_address(request, trusted_hops, nginx=nginx),
    )


def allow_headers(decision: Allow) -> dict[str, str]:
    """Headers of a 200: the upstream ones, then those meant for the client."""
    out = dict(decision.upstream_headers)
    out.update(decision.response_headers)
    return out


def deny_response(decision: Answer) -> web.Response:
    return web.Response(status=decision.status, headers=dict(decision.headers), body=decision.body)


class ForwardAuth:
    """aiohttp handlers around the gate."""

    def __init__(self, gate: Gate, *, trusted_hops: int = 1) -> None:
        self.gate = gate
        self.trusted_hops = trusted_hops
        self._denials: OrderedDict[str, tuple[float, Answer]] = OrderedDict()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_route("*", "/nginx/denied/{request_id}", self.nginx_denied)
        app.router.add_route("*", "/nginx", self.nginx)
        app.router.add_route("*", "/{tail:.*}", self.check)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def check(self, request: web.Request) -> web.Response:
        decision = await self.gate.check(to_request(request, trusted_hops=self.trusted_hops))
        if isinstance(decision, Allow):
            return web.Response(status=200, headers=allow_headers(decision))
        return deny_response(decision)

    async def nginx(self, request: web.Request) -> web.Response:
        decision = await self.gate.check(
            to_request(request, nginx=True, trusted_hops=self.trusted_hops)
        )
        if isinstance(decision, Allow):
            return web.Response(status=200, headers=allow_headers(decision))
        request_id = request.headers.get("X-Request-Id")
        if request_id:
            self._keep(request_id, decision)
        return web.Response(
            status=401 if decision.status != 403 else 403,
            headers={"x-paygress-status": str(decision.status), **_cashu(decision.headers)},
        )

    async def nginx_denied(self, request: web.Request) -> web.Response:
        """The real denial of an earlier /nginx call; decided again if it is not kept here
        (another replica answered the first call, or it expired)."""
        kept = self._denials.pop(request.match_info["request_id"], None)
        if kept is not None and kept[0] > time.monotonic():
            return deny_response(kept[1])
        decision = await self.gate.check(
            to_request(request, nginx=True, trusted_hops=self.trusted_hops)
        )
        if isinstance(decision, Allow):  # paid in between: let the client retry
            return web.Response(status=409, text="retry the request\n")
        return deny_response(decision)

    def _keep(self, request_id: str, decision: Answer) -> None:
        now = time.monotonic()
        denials = self._denials
        denials[request_id[:128]] = (now + DENIAL_TTL_SECONDS, decision)
        while denials and (len(denials) > DENIALS_MAX or next(iter(denials.values()))[0] < now):
            denials.popitem(last=False)


def _cashu(headers: tuple[tuple[str, str], ...]) -> Mapping[str, str]:
    return {k: v for k, v in headers if k in ("x-cashu", "retry-after")}


async def start_site(
    app: web.Application, address: str, *, reuse_port: bool = False
) -> tuple[web.AppRunner, int]:
    """Serves `app` on host:port (port 0 picks one); returns the runner and the bound port.
    With `reuse_port`, several processes share the port (SO_REUSEPORT)."""
    host, _, port = address.rpartition(":")
    # aiohttp refuses header lines over 8190 bytes with a bare 400: a token near
    # limits.max_token_bytes would never reach the gate, and a larger one would not get its
    # JSON `too_large` answer with a payment request.
    runner = web.AppRunner(
        app, access_log=None, max_line_size=MAX_HEADER_BYTES, max_field_size=MAX_HEADER_BYTES
    )
    await runner.setup()
    site = web.TCPSite(
        runner, host.strip("[]"), int(port), reuse_address=True, reuse_port=reuse_port or None
    )
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else int(port)
    return runner, int(bound)


def metrics_app(metrics: PrometheusMetrics) -> web.Application:
    """Serves /metrics."""

    async def handler(request: web.Request) -> web.Response:
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/metrics", handler)
    return app
