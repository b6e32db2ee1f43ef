from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import code_pb2

from paygress.core.model import Allow, Answer
from paygress.grpc_adapter import to_request, to_response


def check_request(**headers: str) -> external_auth_pb2.CheckRequest:
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.method = "POST"
    http.host = "api.example.com"
    http.path = "/api/x?y=1"
    http.headers.update(headers)
    req.attributes.context_extensions["paygress.price"] = "3"
    return req


def test_to_request_reads_method_host_path_headers_and_context() -> None:
    request = to_request(check_request(**{"x-cashu": "cashuBxyz"}))
    assert (request.method, request.host, request.path) == ("POST", "api.example.com", "/api/x?y=1")
    assert request.headers["x-cashu"] == "cashuBxyz"
    assert request.context["paygress.price"] == "3"


def test_to_request_reads_header_map_when_envoy_sends_raw_headers() -> None:
    req = external_auth_pb2.CheckRequest()
    hv = req.attributes.request.http.header_map.headers.add()
    hv.key = "X-Cashu"
    hv.raw_value = b"cashuAabc"
    assert to_request(req).headers == {"x-cashu": "cashuAabc"}


def test_allow_carries_headers_up_and_down_and_removes_the_token() -> None:
    decision = Allow(
        reason="paid",
        upstream_headers=(("x-paygress-paid", "12"),),
        response_headers=(("x-paygress-remaining", "2"),),
        remove_headers=("x-cashu",),
    )
    response = to_response(decision)
    assert response.status.code == code_pb2.OK
    ok = response.ok_response
    assert [(h.header.key, h.header.value) for h in ok.headers] == [("x-paygress-paid", "12")]
    assert [(h.header.key, h.header.value) for h in ok.response_headers_to_add] == [
        ("x-paygress-remaining", "2")
    ]
    assert list(ok.headers_to_remove) == ["x-cashu"]


def test_deny_is_a_check_response_not_an_rpc_error() -> None:
    decision = Answer(
        status=402, reason="payment_required", headers=(("x-cashu", "creqA1"),), body=b"{}"
    )
    response = to_response(decision)
    assert response.status.code == code_pb2.PERMISSION_DENIED
    denied = response.denied_response
    assert denied.status.code == 402
    assert [(h.header.key, h.header.value) for h in denied.headers] == [("x-cashu", "creqA1")]
    assert denied.body == "{}"


def test_plain_allow_is_shared_and_empty() -> None:
    response = to_response(Allow(reason="free"))
    assert response.status.code == code_pb2.OK
    assert not response.ok_response.headers


def test_to_request_reads_the_client_address_envoy_reports() -> None:
    req = check_request()
    req.attributes.source.address.socket_address.address = "203.0.113.7"
    assert to_request(req).client == "203.0.113.7"
    assert to_request(check_request()).client == ""  # a pipe peer has no address
