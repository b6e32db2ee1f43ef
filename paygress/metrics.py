"""Prometheus metrics: the core's Metrics port, mint-call instrumentation and the /metrics app.

Labels are bounded sets (decisions, reasons, configured mints, endpoints); no token, secret
or client value ever becomes a label.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

CHECK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 3)
MINT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class PrometheusMetrics:
    """Implements the core's Metrics port, plus the wallet's and the server's own series."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.checks = Counter(
            "paygress_checks", "Authorization checks by decision and reason.",
            ["decision", "reason"], registry=r,
        )  # fmt: skip
        self.check_seconds = Histogram(
            "paygress_check_duration_seconds", "Time to decide one check.",
            buckets=CHECK_BUCKETS, registry=r,
        )  # fmt: skip
        self.cache = Counter(
            "paygress_redeem_cache", "Token lookups in the in-memory redeem cache.",
            ["result"], registry=r,
        )  # fmt: skip
        self.payments = Counter(
            "paygress_payments", "Tokens redeemed into the wallet.", ["unit"], registry=r
        )
        self.paid = Counter(
            "paygress_paid_amount", "Amount credited to clients for redeemed tokens.",
            ["unit"], registry=r,
        )  # fmt: skip
        self.mint_requests = Counter(
            "paygress_mint_requests", "HTTP requests to mints by endpoint and outcome.",
            ["mint", "endpoint", "outcome"], registry=r,
        )  # fmt: skip
        self.mint_seconds = Histogram(
            "paygress_mint_request_duration_seconds", "Latency of HTTP requests to mints.",
            ["mint", "endpoint"], buckets=MINT_BUCKETS, registry=r,
        )  # fmt: skip
        self.pod_events = Counter(
            "paygress_pods", "Pods created and reaped.", ["event"], registry=r
        )
        self.kube_errors = Counter(
            "paygress_kubernetes_api_errors", "Failed Kubernetes API calls (before retries).",
            registry=r,
        )  # fmt: skip
        self.dry_run = Gauge(
            "paygress_dry_run", "1 when every request is allowed (dry-run mode).", registry=r
        )
        self._checks: dict[tuple[str, str], Counter] = {}
        self._hit = self.cache.labels("hit")
        self._miss = self.cache.labels("miss")

    # -- the core's port (on the hot path: labelled children are looked up once) --

    def decision(self, outcome: str, reason: str, seconds: float) -> None:
        child = self._checks.get((outcome, reason))
        if child is None:
            child = self._checks[(outcome, reason)] = self.checks.labels(outcome, reason)
        child.inc()
        self.check_seconds.observe(seconds)

    def redeem_cache(self, hit: bool) -> None:
        (self._hit if hit else self._miss).inc()

    def received(self, unit: str, amount: int) -> None:
        self.payments.labels(unit).inc()
        self.paid.labels(unit).inc(amount)

    # -- the rest --

    def pod_event(self, event: str) -> None:
        """`created`, `reaped` or `api_error`, from the pods module."""
        if event == "api_error":
            self.kube_errors.inc()
        else:
            self.pod_events.labels(event).inc()

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read at scrape time."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    def mint_transport(self, mint: str) -> httpx.AsyncBaseTransport:
        """An httpx transport that times and counts every request to `mint`."""
        return MeteredTransport(self, mint)

    def exposition(self) -> tuple[bytes, str]:
        """The /metrics body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MeteredTransport(httpx.AsyncBaseTransport):
    """Wraps the default transport with per-endpoint latency and outcome metrics."""

    def __init__(self, metrics: PrometheusMetrics, mint: str) -> None:
        self.metrics = metrics
        self.mint = mint
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        endpoint = _endpoint(request.url.path)
        started = time.perf_counter()
        try:
            response = await self.inner.handle_async_request(request)
        except httpx.TimeoutException:
            self._done(endpoint, "timeout", started)
            raise
        except httpx.HTTPError:
            self._done(endpoint, "error", started)
            raise
        self._done(endpoint, f"{response.status_code // 100}xx", started)
        return response

    def _done(self, endpoint: str, outcome: str, started: float) -> None:
        self.metrics.mint_requests.labels(self.mint, endpoint, outcome).inc()
        self.metrics.mint_seconds.labels(self.mint, endpoint).observe(time.perf_counter() - started)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _endpoint(path: str) -> str:
    """`/v1/keys/<id>` → `/v1/keys`: endpoints, not ids, make labels."""
    parts = [p for p in path.split("/") if p]
    return "/" + "/".join(parts[:2]) if parts else "/"
