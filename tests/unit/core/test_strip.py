from paygress.core.gate import TRUSTED_HEADERS
from paygress.core.strip import present, spellings, unwanted_names


def test_spellings_mix_every_separator_between_words() -> None:
    names = spellings("x-paygress-paid")
    assert len(names) == 9
    assert {"x-paygress-paid", "x_paygress_paid", "x.paygress.paid", "x-paygress_paid"} <= names
    assert spellings("cookie") == {"cookie"}


def test_unwanted_names_cover_trusted_headers_their_aliases_and_the_key() -> None:
    names = unwanted_names(TRUSTED_HEADERS, "x-paygress-key")
    assert {"x-paygress-remaining", "x_paygress_remaining", "x.paygress-remaining"} <= names
    assert {"x_paygress_free_client", "x-envoy-original-dst-host"} <= names
    assert {"x-paygress-key", "x_paygress_key"} <= names
    # Envoy reads its own header under one name only; its aliases mean nothing to anyone.
    assert "x_envoy_original_dst_host" not in names
    # Tokens are the gate's part: Authorization is often the app's own credential.
    assert not {"x-cashu", "authorization", "host"} & names


def test_present_is_sorted() -> None:
    names = unwanted_names(TRUSTED_HEADERS)
    headers = {"x.paygress.paid": "1", "x-paygress-unit": "sat", "accept": "*/*"}
    assert present(names, headers) == ("x-paygress-unit", "x.paygress.paid")


def test_the_pod_key_is_a_secret_of_the_payer_and_never_for_an_upstream() -> None:
    names = unwanted_names(TRUSTED_HEADERS, None, "x-paygress-pod-key")
    assert {"x-paygress-pod-key", "x_paygress_pod_key"} <= names
