"""In-process cost of one Check, without gRPC or Envoy: decode → decide → encode, per scenario.

    .venv/bin/python -m bench.check_path [--n 20000]
Uses the real gate and the server's Prometheus metrics, with in-memory fakes for the wallet and
store (no mint needed). These are hot-loop numbers: inside the server, between gRPC's own work,
the same code runs several times slower (cold caches); `bench.ext_authz` measures that.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2

from paygress.core.gate import Gate, GateSettings
from paygress.core.pricing import Mode, Pricing, RouteRule
from paygress.grpc_adapter import encode, to_request
from paygress.metrics import PrometheusMetrics
from tests.unit.core.fakes import MINT, FakeStore, FakeWallet, make_token

HEADERS = {
    ":authority": "api.example.com",
    ":method": "GET",
    ":scheme": "http",
    "user-agent": "curl/8.5.0",
    "accept": "*/*",
    "x-forwarded-proto": "http",
    "x-request-id": "5a0b9c1e-6f4e-4d0e-9a8e-2f1f7f6c8b11",
}


def check_request(path: str, token: str | None) -> bytes:
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.method, http.host, http.path = "GET", "api.example.com", path
    http.headers.update(HEADERS)
    http.headers[":path"] = path
    if token:
        http.headers["x-cashu"] = token
    return bytes(req.SerializeToString())


async def measure(gate: Gate, wire: bytes, n: int) -> dict[str, float]:
    parse = external_auth_pb2.CheckRequest.FromString
    t0 = time.perf_counter()
    for _ in range(n):
        parse(wire)
    t1 = time.perf_counter()
    msg = parse(wire)
    for _ in range(n):
        to_request(msg)
    t2 = time.perf_counter()
    request = to_request(msg)
    for _ in range(n):
        await gate.check(request)
    t3 = time.perf_counter()
    decision = await gate.check(request)
    for _ in range(n):
        encode(decision)
    t4 = time.perf_counter()
    per = 1e6 / n
    return {
        "decode": (t1 - t0) * per,
        "to_request": (t2 - t1) * per,
        "gate.check": (t3 - t2) * per,
        "encode": (t4 - t3) * per,
    }


async def main(n: int) -> None:
    rule = RouteRule(name="paid", price=1, mode=Mode.PER_SECOND, grants=86_400, path_prefix="/paid")
    store = FakeStore()
    wallet = FakeWallet()
    wallet.store = store
    settings = GateSettings(unit="sat", mints=(MINT,))
    gate = Gate(Pricing((rule,)), settings, wallet, store, metrics=PrometheusMetrics())
    token = make_token((4,))
    rows: dict[str, Any] = {
        "free route": await measure(gate, check_request("/free", None), n),
        "priced, no token (402)": await measure(gate, check_request("/paid", None), n),
        "priced, cached token": await measure(gate, check_request("/paid", token), n),
    }
    print(f"µs per call, n={n}")
    print(
        f"{'scenario':26}"
        + "".join(f"{k:>12}" for k in next(iter(rows.values())))
        + f"{'total':>10}"
    )
    for name, parts in rows.items():
        cells = "".join(f"{v:12.2f}" for v in parts.values())
        print(f"{name:26}{cells}{sum(parts.values()):10.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    asyncio.run(main(parser.parse_args().n))
