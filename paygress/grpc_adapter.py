"""The one module that speaks Envoy's ext_authz protobuf types (generated upb stubs).

Denials are CheckResponses (PERMISSION_DENIED + denied_response), never RPC errors: Envoy
treats an RPC error as a failure, which a fail-open config would let through.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.rpc import code_pb2, status_pb2

from paygress.core.gate import Gate
from paygress.core.model import Allow, Decision, Deny, Headers, HttpRequest
from paygress.core.responses import deny

log = logging.getLogger("paygress.grpc")

CheckRequest = external_auth_pb2.CheckRequest
CheckResponse = external_auth_pb2.CheckResponse

_OK = status_pb2.Status(code=code_pb2.OK)
_DENIED = status_pb2.Status(code=code_pb2.PERMISSION_DENIED)
_ALLOW_PLAIN = CheckResponse(status=_OK, ok_response=external_auth_pb2.OkHttpResponse())
_INTERNAL = deny(
    503,
    "internal_error",
    "internal_error",
    "Paygress could not decide this request; try again shortly.",
    extra_headers=(("retry-after", "5"),),
)


def to_request(check: Any) -> HttpRequest:
    """The core's view of an Envoy CheckRequest."""
    attrs = check.attributes
    http = attrs.request.http
    headers: dict[str, str] = dict(http.headers)
    if not headers and http.header_map.headers:
        for hv in http.header_map.headers:
            value = hv.value or hv.raw_value.decode("utf-8", "replace")
            headers[hv.key.lower()] = value
    return HttpRequest(
        method=http.method,
        host=http.host or headers.get(":authority", ""),
        path=http.path,
        headers=headers,
        context=attrs.context_extensions,
    )


def _options(headers: Headers) -> list[Any]:
    return [HeaderValueOption(header=HeaderValue(key=k, value=v)) for k, v in headers]


def to_response(decision: Decision) -> Any:
    """The Envoy CheckResponse for a core decision."""
    if isinstance(decision, Allow):
        if not (decision.upstream_headers or decision.response_headers or decision.remove_headers):
            return _ALLOW_PLAIN
        return CheckResponse(
            status=_OK,
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=_options(decision.upstream_headers),
                response_headers_to_add=_options(decision.response_headers),
                headers_to_remove=decision.remove_headers,
            ),
        )
    return _denied(decision)


def _denied(decision: Deny) -> Any:
    return CheckResponse(
        status=_DENIED,
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=HttpStatus(code=decision.status),  # type: ignore[arg-type]
            headers=_options(decision.headers),
            body=decision.body.decode("utf-8", "replace"),
        ),
    )


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """envoy.service.auth.v3.Authorization backed by the gate."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def Check(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:  # noqa: N802
        try:
            decision = await self.gate.check(to_request(request))
        except Exception:
            log.exception("check failed; denying")
            decision = _INTERNAL
        return to_response(decision)


def add_to_server(gate: Gate, server: grpc.aio.Server) -> None:
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(AuthorizationService(gate), server)
