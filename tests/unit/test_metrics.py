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
