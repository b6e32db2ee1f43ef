"""Prometheus metrics: the core's Metrics port, mint-call instrumentation and the /metrics app.

Labels are bounded sets (decisions, reasons, configured mints, endpoints); no token, secret
or client value ever becomes a label.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator

import httpx
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

import paygress

# A cached check takes 5-50 µs in the server: the first buckets resolve that range.
CHECK_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 3,
)  # fmt: skip
MINT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class PrometheusMetrics:
    """Implements the core's Metrics port, plus the wallet's and the server's own series."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # prometheus_client adds a `<name>_created` timestamp series beside every counter and
        # histogram; it reads like a count and doubles the series. Process-wide switch.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # What any Prometheus client exports: process_* (CPU, memory, fds, start time),
        # python_info and python_gc_*.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)
        Info("paygress_build", "The running Paygress release.", registry=r).info(
            {"version": paygress.__version__}
        )
        self.checks = CheckCounters()
        r.register(self.checks)
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
            "paygress_pod_events", "Pods created and reaped.", ["event"], registry=r
        )
        self.kube_errors = Counter(
            "paygress_kubernetes_api_errors", "Failed Kubernetes API calls (before retries).",
            registry=r,
        )  # fmt: skip
        self.locked_proofs = Counter(
            "paygress_locked_proofs", "Proofs accepted offline (locked to the operator) by "
            "what became of them: accepted, settled, failed, lost.", ["event"], registry=r,
        )  # fmt: skip
        self.dry_run = Gauge(
            "paygress_dry_run", "1 when every request is allowed (dry-run mode).", registry=r
        )
        # The core's port: every check lands here, so these two are plain counters.
        self.decision = self.checks.decision
        self.redeem_cache = self.checks.redeem_cache

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

    def locked_event(self, event: str, proofs: int) -> None:
        """Proofs accepted offline: `locked_accepted`, `locked_settled`, `locked_failed` (the
        mint refused the swap), `locked_lost` (the mint says spent: only we could spend them)."""
        self.locked_proofs.labels(event.removeprefix("locked_")).inc(proofs)

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read at scrape time."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    def mint_transport(self, mint: str) -> httpx.AsyncBaseTransport:
        """An httpx transport that times and counts every request to `mint`."""
        return MeteredTransport(self, mint)

    def exposition(self) -> tuple[bytes, str]:
        """The /metrics body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class CheckCounters(Collector):
    """The per-check series, counted in plain ints and turned into Prometheus families at
    scrape time. prometheus_client's own Counter and Histogram take a lock and several calls
    per update: measured in the server, that was several percent of a check's CPU time.
    Updated and scraped on the event loop's thread only."""

    def __init__(self, buckets: tuple[float, ...] = CHECK_BUCKETS) -> None:
        self.buckets = buckets
        self.decisions: dict[tuple[str, str], int] = {}
        self.bucket_counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.seconds_sum = 0.0
        self.cache = {"hit": 0, "miss": 0}

    def decision(self, outcome: str, reason: str, seconds: float) -> None:
        key = (outcome, reason)
        self.decisions[key] = self.decisions.get(key, 0) + 1
        self.bucket_counts[bisect_left(self.buckets, seconds)] += 1
        self.seconds_sum += seconds

    def redeem_cache(self, hit: bool) -> None:
        self.cache["hit" if hit else "miss"] += 1

    def collect(self) -> Iterator[Metric]:
        checks = CounterMetricFamily(
            "paygress_checks", "Authorization checks by decision and reason.",
            labels=["decision", "reason"],
        )  # fmt: skip
        for labels, count in sorted(self.decisions.items()):
            checks.add_metric(labels, count)
        yield checks
        cumulative, total = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.bucket_counts, strict=True):
            total += count
            cumulative.append((floatToGoString(bound), total))  # type: ignore[no-untyped-call]
        yield HistogramMetricFamily(
            "paygress_check_duration_seconds", "Time to decide one check.",
            buckets=cumulative, sum_value=self.seconds_sum,
        )  # fmt: skip
        cache = CounterMetricFamily(
            "paygress_redeem_cache", "Token lookups in the in-memory redeem cache.",
            labels=["result"],
        )  # fmt: skip
        for result, count in self.cache.items():
            cache.add_metric([result], count)
        yield cache


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
