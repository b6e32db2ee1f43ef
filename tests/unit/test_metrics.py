import contextlib

import httpx

from paygress.metrics import MeteredTransport, PrometheusMetrics, _endpoint


def test_endpoint_labels_drop_ids() -> None:
    assert _endpoint("/v1/keys/01abcdef") == "/v1/keys"
    assert _endpoint("/v1/swap") == "/v1/swap"
    assert _endpoint("/") == "/"


async def test_metered_transport_counts_outcomes_and_latency() -> None:
    metrics = PrometheusMetrics()
    transport = MeteredTransport(metrics, "http://mint.test")

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/swap":
            return httpx.Response(400, json={"detail": "spent", "code": 11001})
        if request.url.path == "/v1/checkstate":
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json={"keysets": []})

    transport.inner = httpx.MockTransport(answer)  # type: ignore[assignment]
    async with httpx.AsyncClient(transport=transport, base_url="http://mint.test") as client:
        await client.get("/v1/keysets")
        await client.post("/v1/swap")
        with contextlib.suppress(httpx.ConnectError):
            await client.post("/v1/checkstate")
    count = metrics.mint_requests.labels
    assert count("http://mint.test", "/v1/keysets", "2xx")._value.get() == 1
    assert count("http://mint.test", "/v1/swap", "4xx")._value.get() == 1
    assert count("http://mint.test", "/v1/checkstate", "error")._value.get() == 1
    text = metrics.exposition()[0].decode()
    assert 'paygress_mint_request_duration_seconds_count{endpoint="/v1/keysets"' in text


def test_check_counters_expose_what_prometheus_client_would() -> None:
    """The hand-rolled check series read exactly like prometheus_client's Counter and
    Histogram fed the same observations."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from paygress.metrics import CHECK_BUCKETS

    ours = PrometheusMetrics()
    registry = CollectorRegistry()
    checks = Counter(
        "paygress_checks", "Authorization checks by decision and reason.",
        ["decision", "reason"], registry=registry,
    )  # fmt: skip
    seconds = Histogram(
        "paygress_check_duration_seconds", "Time to decide one check.",
        buckets=CHECK_BUCKETS, registry=registry,
    )  # fmt: skip
    cache = Counter(
        "paygress_redeem_cache", "Token lookups in the in-memory redeem cache.",
        ["result"], registry=registry,
    )  # fmt: skip
    observations = [
        ("allow", "free", 0.00005),
        ("allow", "free", 0.0001),  # on a bucket's bound: counted in it
        ("deny", "payment_required", 0.0003),
        ("allow", "paid", 0.02),
        ("deny", "mint_unavailable", 5.0),  # above the last bound: +Inf only
    ]
    for outcome, reason, took in observations:
        ours.decision(outcome, reason, took)
        checks.labels(outcome, reason).inc()
        seconds.observe(took)
    for hit in (True, True, False):
        ours.redeem_cache(hit)
        cache.labels("hit" if hit else "miss").inc()

    def samples(text: str) -> set[str]:
        return {
            line
            for line in text.splitlines()
            if line.startswith(("paygress_checks", "paygress_redeem", "paygress_check_duration"))
        }

    theirs = samples(generate_latest(registry).decode())
    assert samples(ours.exposition()[0].decode()) == theirs
    assert 'paygress_check_duration_seconds_bucket{le="5e-05"} 1.0' in theirs
    assert 'paygress_check_duration_seconds_bucket{le="0.0001"} 2.0' in theirs
    assert 'paygress_check_duration_seconds_bucket{le="+Inf"} 5.0' in theirs
    assert ours.checks.decisions[("allow", "free")] == 2


def sample_names(metrics: PrometheusMetrics) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    text = metrics.exposition()[0].decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_pod_events_are_a_counter_without_created_series() -> None:
    metrics = PrometheusMetrics()
    metrics.pod_event("created")
    metrics.pod_event("reaped")
    metrics.pod_event("api_error")
    metrics.received("sat", 5)
    text = metrics.exposition()[0].decode()
    assert 'paygress_pod_events_total{event="created"} 1.0' in text
    assert 'paygress_pod_events_total{event="reaped"} 1.0' in text
    assert "paygress_kubernetes_api_errors_total 1.0" in text
    names = sample_names(metrics)
    assert not {n for n in names if n.endswith("_created")}, "no _created timestamps"
    assert "paygress_pods_total" not in names


def test_process_platform_gc_and_build_info_are_exported() -> None:
    import paygress

    metrics = PrometheusMetrics()
    names = sample_names(metrics)
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= names
    assert {"python_info", "python_gc_collections_total", "paygress_build_info"} <= names
    text = metrics.exposition()[0].decode()
    assert f'paygress_build_info{{version="{paygress.__version__}"}} 1.0' in text


def test_check_buckets_resolve_cached_checks() -> None:
    from paygress.metrics import CHECK_BUCKETS

    assert CHECK_BUCKETS[:4] == (0.00001, 0.000025, 0.00005, 0.0001)
    assert list(CHECK_BUCKETS) == sorted(CHECK_BUCKETS)
    metrics = PrometheusMetrics()
    for seconds in (0.000004, 0.00002, 0.00004, 0.00009):
        metrics.decision("allow", "paid", seconds)
    assert metrics.checks.bucket_counts[:4] == [1, 1, 1, 1]
