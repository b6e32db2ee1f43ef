"""HTTP forward-auth for NGINX (auth_request, ingress-nginx auth-url) and Traefik (ForwardAuth).

The same gate decides as for Envoy. The original request comes in forwarding headers
(`X-Forwarded-Method/-Uri/-Host` from Traefik, `X-Original-Method/-URI`/`X-Original-URL` from
NGINX), so this port must be reachable by the proxy only.

- `/nginx` is for NGINX's auth_request, which passes only 2xx/401/403 on: a denial becomes 401
  with the real answer kept for a few seconds under the request's `X-Request-Id`, and the
  shipped config replays it from `/nginx/denied/<id>` (a real 402 with its `X-Cashu` header).
  Every answer says how long NGINX may reuse it (`X-Accel-Expires`): a time grant's or a
  session's allow up to its end (`@<the last whole second before it>`), anything else not at
  all (`0`).
- `/envoy/<the original path>` is for Envoy's HTTP ext_authz (`http_service`, path_prefix
  `/envoy`): the original method, path and headers (those the filter's `allowed_headers` let
  through), the client's address in `X-Paygress-Client` (set by Envoy); an allow is a 200 whose
  headers Envoy copies upstream or to the client by name, with the headers to remove from the
  request in `x-envoy-auth-headers-to-remove`.
- Every other path answers with the decision as it is: 200 with the paid headers, or the
  denial's status, headers and JSON body (Traefik passes those to the client).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlsplit

from aiohttp import web

from paygress.core.gate import Gate
from paygress.core.model import Allow, Answer, HttpRequest
from paygress.metrics import PrometheusMetrics

ENVOY_PREFIX = "/envoy"
DENIED_PREFIX = "/nginx/denied/"
CLIENT_HEADER = "X-Paygress-Client"  # set by Envoy's ext_authz from the downstream address
DENIAL_TTL_SECONDS = 30.0
DENIALS_MAX = 10_000
MAX_HEADER_BYTES = 64 * 1024
OK_HEADERS_MAX = 4096


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def client_address(request: web.BaseRequest, trusted_hops: int, *, nginx: bool = False) -> str:
    """The client's address: with `nginx`, X-Real-IP (deploy/nginx sets it from the
    connection); else the address `trusted_hops` entries from the right of X-Forwarded-For
    (each trusted proxy appends the address it saw), else the connection's peer. Entries a
    client wrote itself sit further left and are never read."""
    h = request.headers
    real_ip = h.get("X-Real-IP") if nginx else None
    if real_ip:
        return real_ip.strip()
    hops = [a.strip() for a in ",".join(h.getall("X-Forwarded-For", [])).split(",") if a.strip()]
    if trusted_hops and len(hops) >= trusted_hops:
        return hops[-trusted_hops]
    return request.remote or ""


def to_request(
    request: web.BaseRequest, *, nginx: bool = False, trusted_hops: int = 1
) -> HttpRequest:
    """The core's view of a forward-auth call: the original request, from forwarding headers.

    With `nginx`, only the headers NGINX itself sets are read, since it passes the client's
    own on too: X-Original-Method and X-Original-URL (ingress-nginx), or X-Original-URI and
    X-Forwarded-Host (deploy/nginx/nginx.conf, which also clears X-Original-URL). A client's
    X-Forwarded-Uri/-Method must not be able to turn a priced request into a free one there.
    """
    h = request.headers
    headers = {k.lower(): v for k, v in h.items()}  # (where the last of repeated names wins)
    get = h.get  # the first of repeated names, as the proxies set them
    if nginx:
        method = get("X-Original-Method")
        uri = get("X-Original-URI")
    else:
        method = get("X-Forwarded-Method") or get("X-Original-Method")
        uri = get("X-Forwarded-Uri") or get("X-Original-URI")
    # The Host of a forward-auth call names Paygress (the proxy's upstream for it), never the
    # client's request. That host is X-Forwarded-Host (Traefik's, or NGINX's $host: the
    # request line's authority wins over a Host header there, as at the proxy), else the
    # authority of X-Original-URL (ingress-nginx); neither means the request named none.
    host = get("X-Forwarded-Host", "")
    original_url = get("X-Original-URL")
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


def from_envoy(request: web.BaseRequest) -> HttpRequest:
    """The core's view of an Envoy HTTP ext_authz check: the original request itself, its path
    behind ENVOY_PREFIX."""
    h = request.headers
    path = request.raw_path[len(ENVOY_PREFIX) :] or "/"
    return HttpRequest(
        request.method,
        h.get("Host", ""),
        path,
        {k.lower(): v for k, v in h.items()},
        client=h.get(CLIENT_HEADER, ""),
    )


def allow_headers(decision: Allow) -> dict[str, str]:
    """Headers of a 200: the upstream ones, then those meant for the client."""
    out = dict(decision.upstream_headers)
    out.update(decision.response_headers)
    return out


def deny_response(decision: Answer) -> web.Response:
    return web.Response(status=decision.status, headers=dict(decision.headers), body=decision.body)


class ForwardAuth:
    """aiohttp handlers around the gate. `handle` serves every path: the server runs it on
    aiohttp's low-level server (no application, router or middlewares: measured, they cost a
    fifth of an empty handler's time, bench/forward_auth.py); `app()` wraps it for tests."""

    def __init__(self, gate: Gate, *, trusted_hops: int = 1) -> None:
        self.gate = gate
        self.trusted_hops = trusted_hops
        self._denials: OrderedDict[str, tuple[float, Answer]] = OrderedDict()
        self._ok_headers: dict[tuple[Allow, str], dict[str, str]] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Every path: /nginx, /envoy/..., /nginx/denied/<id>, /healthz, else a ForwardAuth
        check. (Dispatched on the path as sent: decoding it costs more than this whole
        function, and none of these names has anything to decode.)"""
        path = request.raw_path.partition("?")[0]
        if path == "/nginx":
            return await self.nginx(request)
        if path.startswith(ENVOY_PREFIX + "/"):
            return await self.envoy(request)
        request_id = path[len(DENIED_PREFIX) :] if path.startswith(DENIED_PREFIX) else ""
        if request_id and "/" not in request_id:
            return await self.nginx_denied(request, request_id)
        if path == "/healthz" and request.method in ("GET", "HEAD"):
            return web.Response(text="ok\n")
        return await self.check(request)

    async def check(self, request: web.BaseRequest) -> web.Response:
        decision = await self.gate.check(to_request(request, trusted_hops=self.trusted_hops))
        if isinstance(decision, Allow):
            return web.Response(status=200, headers=self._ok(decision, "check"))
        return deny_response(decision)

    async def envoy(self, request: web.BaseRequest) -> web.Response:
        decision = await self.gate.check(from_envoy(request))
        if isinstance(decision, Allow):
            return web.Response(status=200, headers=self._ok(decision, "envoy"))
        return deny_response(decision)

    async def nginx(self, request: web.BaseRequest) -> web.Response:
        decision = await self.gate.check(
            to_request(request, nginx=True, trusted_hops=self.trusted_hops)
        )
        if isinstance(decision, Allow):
            return web.Response(status=200, headers=self._ok(decision, "nginx"))
        request_id = request.headers.get("X-Request-Id")
        if request_id:
            self._keep(request_id, decision)
        return web.Response(
            status=401 if decision.status != 403 else 403,
            headers={
                "x-paygress-status": str(decision.status),
                "x-accel-expires": "0",
                **_cashu(decision.headers),
            },
        )

    async def nginx_denied(self, request: web.BaseRequest, request_id: str) -> web.Response:
        """The real denial of an earlier /nginx call; decided again if it is not kept here
        (another replica answered the first call, or it expired)."""
        kept = self._denials.pop(request_id, None)
        if kept is not None and kept[0] > time.monotonic():
            return deny_response(kept[1])
        decision = await self.gate.check(
            to_request(request, nginx=True, trusted_hops=self.trusted_hops)
        )
        if isinstance(decision, Allow):  # paid in between: let the client retry
            return web.Response(status=409, text="retry the request\n")
        return deny_response(decision)

    def _ok(self, decision: Allow, proxy: str) -> dict[str, str]:
        """The headers of an allow's 200 for `proxy` (check, nginx, envoy), built once per
        decision: decisions repeat (a time grant's, a session's, a free route's)."""
        key = (decision, proxy)
        headers = self._ok_headers.get(key)
        if headers is None:
            headers = allow_headers(decision)
            if proxy == "nginx":
                # NGINX reuses an answer while the whole seconds of now <= @t: t is the last
                # second that ends before the paid end.
                until = math.ceil(decision.cache_until) - 1
                headers["x-accel-expires"] = f"@{until}" if until > 0 else "0"
            elif proxy == "envoy" and decision.remove_headers:
                headers["x-envoy-auth-headers-to-remove"] = ",".join(decision.remove_headers)
            if len(self._ok_headers) >= OK_HEADERS_MAX:
                self._ok_headers.clear()
            self._ok_headers[key] = headers
        return headers

    def _keep(self, request_id: str, decision: Answer) -> None:
        now = time.monotonic()
        denials = self._denials
        denials[request_id[:128]] = (now + DENIAL_TTL_SECONDS, decision)
        while denials and (len(denials) > DENIALS_MAX or next(iter(denials.values()))[0] < now):
            denials.popitem(last=False)


def _cashu(headers: tuple[tuple[str, str], ...]) -> Mapping[str, str]:
    return {k: v for k, v in headers if k in ("x-cashu", "retry-after")}


async def start_site(
    app: web.Application | Handler, address: str, *, reuse_port: bool = False
) -> tuple[web.BaseRunner, int]:
    """Serves `app` (an application, or one handler on aiohttp's low-level server) on
    host:port (port 0 picks one); returns the runner and the bound port. With `reuse_port`,
    several processes share the port (SO_REUSEPORT)."""
    host, _, port = address.rpartition(":")
    # aiohttp refuses header lines over 8190 bytes with a bare 400: a token near
    # limits.max_token_bytes would never reach the gate, and a larger one would not get its
    # JSON `too_large` answer with a payment request.
    runner: web.BaseRunner
    if isinstance(app, web.Application):
        runner = web.AppRunner(
            app, access_log=None, max_line_size=MAX_HEADER_BYTES, max_field_size=MAX_HEADER_BYTES
        )
    else:
        server = web.Server(
            app, access_log=None, max_line_size=MAX_HEADER_BYTES, max_field_size=MAX_HEADER_BYTES
        )
        runner = web.ServerRunner(server)
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
