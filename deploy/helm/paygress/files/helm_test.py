"""`helm test`: Paygress answers as deployed. Runs in the Paygress image (its Python, grpcio,
xds-protos and httpx), configured by the test pod's environment:

  PAYGRESS_TEST_GRPC     host:port of Paygress's gRPC port (standalone mode): grpc.health.v1
                         must say SERVING, and an ext_authz Check of PAYGRESS_TEST_REQUEST
                         must be denied with 402 and an X-Cashu payment request
  PAYGRESS_TEST_GATEWAY  base URL of the gateway Service (sidecar mode): the request, sent
                         through the Istio gateway, must get 402 with X-Cashu from Paygress
  PAYGRESS_TEST_REQUEST  JSON {"method", "host", "path"} of an unpaid request to a priced route
                         ("" when no route is priced: then only health is checked)

Exits 0 when every check passed; prints one line per check either way.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

TIMEOUT = 10.0


def check_grpc(target: str, request: dict[str, str] | None) -> list[str]:
    import grpc
    from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    failures = []
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=TIMEOUT
        )
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
        report(f"grpc.health.v1 at {target}: {status}", status == "SERVING", failures)
        if request is None:
            return failures
        check = external_auth_pb2.CheckRequest()
        http = check.attributes.request.http
        http.method, http.host, http.path = request["method"], request["host"], request["path"]
        http.headers.update({":authority": request["host"], ":path": request["path"]})
        answer: Any = external_auth_pb2_grpc.AuthorizationStub(channel).Check(
            check, timeout=TIMEOUT
        )
        denied = answer.denied_response
        headers = {h.header.key.lower(): h.header.value for h in denied.headers}
        code = int(denied.status.code)
        ok = code == 402 and headers.get("x-cashu", "").startswith("creq")
        report(f"ext_authz Check {describe(request)}: {code or 'allowed'}", ok, failures)
    return failures


def check_gateway(base: str, request: dict[str, str]) -> list[str]:
    import httpx

    failures: list[str] = []
    url = base.rstrip("/") + request["path"]
    headers = {"host": request["host"]}
    response = httpx.request(request["method"], url, headers=headers, timeout=TIMEOUT)
    ok = response.status_code == 402 and response.headers.get("x-cashu", "").startswith("creq")
    report(f"{describe(request)} through {base}: {response.status_code}", ok, failures)
    return failures


def describe(request: dict[str, str]) -> str:
    return f"{request['method']} {request['host']}{request['path']}"


def report(line: str, ok: bool, failures: list[str]) -> None:
    print(("ok    " if ok else "FAIL  ") + line, flush=True)
    if not ok:
        failures.append(line)


def main() -> int:
    raw = os.environ.get("PAYGRESS_TEST_REQUEST", "")
    request = json.loads(raw) if raw else None
    grpc_target = os.environ.get("PAYGRESS_TEST_GRPC", "")
    gateway = os.environ.get("PAYGRESS_TEST_GATEWAY", "")
    failures: list[str] = []
    try:
        if grpc_target:
            failures += check_grpc(grpc_target, request)
        if gateway and request is not None:
            failures += check_gateway(gateway, request)
    except Exception as exc:  # one line, not a traceback: this is read in `helm test --logs`
        report(f"{type(exc).__name__}: {exc}", False, failures)
    if request is None:
        print("no priced route in config.routes: only health was checked", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
