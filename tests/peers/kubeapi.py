"""A strict, in-process fake of the Kubernetes core/v1 *pods* API, spoken over real HTTP/1.1.

The real ``kubernetes_asyncio`` client talks to it through a kubeconfig (or a ``Configuration``)
over a loopback socket -- nothing in the client is patched. The fake aims to answer the way a
real API server (~v1.33) answers, status codes, ``Status`` bodies and messages included, for what
Paygress does with pods: create, get, list by label/field selector (with ``limit``/``continue``),
watch (chunked, newline-delimited events), patch (JSON, merge and strategic-merge patches), replace,
delete (one or a collection), plus a small "kubelet" that schedules pods, and fails them once
``activeDeadlineSeconds`` have passed on the fake's clock.

In-process::

    async with FakeKubeApi(namespaces=["default", "paid"]) as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig", namespace="paid")
        cfg = kube.client_configuration()          # or load_kube_config(config_file=kubeconfig)
        kube.set_running("paid", "pod-abc")        # what the kubelet would report
        kube.advance_time(120)                     # deadlines, graceful deletions
        kube.fail_next("POST", r"/pods$", status=503)
        kube.request_log[-1]                       # RequestRecord(method, path, query, status, ...)

Deliberate differences from a real server:

* One resource (pods, plus read-only namespaces); no admission webhooks, quota, RBAC
  (``anonymous=True`` gives the 403 a real server gives ``system:anonymous``), managedFields or
  server-side apply (``application/apply-patch+yaml`` is answered 415).
* The "kubelet" only moves phases when told to (``set_running``/``set_phase``) or when a
  deadline passes; pods are bound to ``node_name`` at the first request after their creation.
* Defaulting covers the fields a pod spec round trip shows (restartPolicy, dnsPolicy,
  imagePullPolicy, terminationMessage*, requests from limits, the two default tolerations, QoS);
  no service-account token volume is injected.
* Watches from a ``resourceVersion`` and ``continue`` tokens are served from the in-memory
  history, which is only dropped by :meth:`FakeKubeApi.compact` (then they get 410 Expired).
* Errors name the field paths and reasons a real server uses, but messages that embed Go
  detail (the spec diff after "pod updates may not change fields", decode errors) are close
  imitations, not byte-for-byte copies: match on reason/field/prefix, not on the whole text.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime as dt
import http
import json
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Final, Literal, Self
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

from .lifecycle import Lifecycle
from .procs import LOOPBACK, free_port

JSON = Any
Obj = dict[str, Any]

KUBE_VERSION: Final = {"major": "1", "minor": "33", "gitVersion": "v1.33.0-paygress-fake"}
MAX_BODY_BYTES: Final = 3 * 1024 * 1024
MAX_HEADER_BYTES: Final = 64 * 1024
TOTAL_ANNOTATION_SIZE_LIMIT: Final = 256 * 1024
MAX_INT32: Final = 2**31 - 1

# =============================================================================================
# Kubernetes quantities (k8s.io/apimachinery/pkg/api/resource)

QUANTITY_FORMAT_ERROR: Final = (
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)
QUANTITY_SUFFIX_ERROR: Final = "unable to parse quantity's suffix"

_DEC_SUFFIXES: Final = {
    "": 0, "n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18,
}  # fmt: skip
_DEC_BY_EXP: Final = {v: k for k, v in _DEC_SUFFIXES.items()}
_BIN_SUFFIXES: Final = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_BIN_BY_EXP: Final = {v: k for k, v in _BIN_SUFFIXES.items()}
_DIGITS: Final = frozenset("0123456789")
_NANO: Final = 10**9

QuantityFormat = Literal["DecimalSI", "BinarySI", "DecimalExponent"]


class QuantityError(ValueError):
    """A string that Kubernetes would not accept as a resource quantity."""


@dataclass(frozen=True, order=False)
class Quantity:
    """A parsed quantity: its exact ``value``, its ``format`` and the ``text`` the API server
    stores and returns for it (``"0.5"`` -> ``"500m"``, ``"2048Ki"`` -> ``"2Mi"``)."""

    value: Fraction
    format: QuantityFormat
    text: str

    def __str__(self) -> str:
        return self.text

    def __lt__(self, other: Quantity) -> bool:
        return self.value < other.value

    def __le__(self, other: Quantity) -> bool:
        return self.value <= other.value

    def __gt__(self, other: Quantity) -> bool:
        return self.value > other.value

    def __ge__(self, other: Quantity) -> bool:
        return self.value >= other.value


def _go_mod(a: int, b: int) -> int:
    """Go's ``%`` (the sign follows the dividend)."""
    return int(math.fmod(a, b))


def _split_quantity(text: str) -> tuple[bool, str, str, str]:
    """(positive, numerator digits, denominator digits, suffix), as Go's parseQuantityString."""
    pos, end = 0, len(text)
    positive = True
    if text[0] == "-":
        positive = False
        pos += 1
    elif text[0] == "+":
        pos += 1
    while True:  # leading zeros
        if pos >= end:
            return positive, "0", "", ""
        if text[pos] != "0":
            break
        pos += 1
    start = pos
    while pos < end and text[pos] in _DIGITS:
        pos += 1
    if pos >= end:
        return positive, text[start:end], "", ""
    num = text[start:pos] or "0"
    denom = ""
    if text[pos] == ".":
        pos += 1
        dstart = pos
        while pos < end and text[pos] in _DIGITS:
            pos += 1
        denom = text[dstart:pos]
        if pos >= end:
            return positive, num, denom, ""
    suffix_start = pos
    while pos < end and text[pos] in "eEinumkKMGTP":
        pos += 1
    if pos < end and text[pos] in "+-":
        pos += 1
    while pos < end and text[pos] in _DIGITS:
        pos += 1
    if pos < end:
        raise QuantityError(QUANTITY_FORMAT_ERROR)
    return positive, num, denom, text[suffix_start:end]


def _interpret_suffix(suffix: str) -> tuple[int, int, QuantityFormat]:
    if suffix in _DEC_SUFFIXES:
        return 10, _DEC_SUFFIXES[suffix], "DecimalSI"
    if suffix in _BIN_SUFFIXES:
        return 2, _BIN_SUFFIXES[suffix], "BinarySI"
    if len(suffix) > 1 and suffix[0] in "eE" and re.fullmatch(r"[+-]?[0-9]+", suffix[1:]):
        return 10, int(suffix[1:]), "DecimalExponent"
    raise QuantityError(QUANTITY_SUFFIX_ERROR)


def _canonical_quantity(value: Fraction, fmt: QuantityFormat) -> str:
    """Go's Quantity.String() for a value already rounded to nano precision."""
    if value == 0:
        return "0"
    if fmt == "BinarySI" and (-1024 < value < 1024 or value.denominator != 1):
        fmt = "DecimalSI"
    if fmt == "BinarySI":
        mantissa, exp = int(value), 0
        while abs(mantissa) >= 1024 and mantissa % 1024 == 0:
            mantissa //= 1024
            exp += 10
        while exp > 60:
            mantissa *= 1024
            exp -= 10
        return f"{mantissa}{_BIN_BY_EXP.get(exp, '')}"
    mantissa, exp = int(value * _NANO), -9
    while abs(mantissa) >= 10 and mantissa % 10 == 0:
        mantissa //= 10
        exp += 1
    rem = _go_mod(exp, 3)
    if rem in (1, -2):
        mantissa, exp = mantissa * 10, exp - 1
    elif rem in (2, -1):
        mantissa, exp = mantissa * 100, exp - 2
    if fmt == "DecimalExponent" or exp not in _DEC_BY_EXP:
        return f"{mantissa}e{exp}" if exp else str(mantissa)
    return f"{mantissa}{_DEC_BY_EXP[exp]}"


def parse_quantity(text: str) -> Quantity:
    """Parse a quantity exactly as the API server does (``resource.ParseQuantity``).

    Decimal SI (``n u m k M G T P E``), binary SI (``Ki Mi Gi Ti Pi Ei``) and exponents
    (``1e3``, ``5E-3``); values finer than a nano are rounded up (away from zero). The
    returned ``text`` is what the server would store: the input when Go keeps it verbatim,
    else the canonical form. Raises :class:`QuantityError` with the server's message.
    """
    if not isinstance(text, str) or text == "":
        raise QuantityError(QUANTITY_FORMAT_ERROR)
    if text == "0":
        return Quantity(Fraction(0), "DecimalSI", "0")
    positive, num, denom, suffix = _split_quantity(text)
    base, exponent, fmt = _interpret_suffix(suffix)
    value = Fraction(int(num + denom), 10 ** len(denom)) * Fraction(base) ** exponent
    scaled = value * _NANO
    if scaled.denominator != 1:  # finer than nano: round up, away from zero
        value = Fraction(math.ceil(scaled), _NANO)
    if not positive:
        value = -value
    keep = False  # Go keeps the original string when it is already in canonical form
    if fmt == "BinarySI":
        precision = 15 - len(num) - int(exponent * 3 / 10) - 1 if not denom else -1
        if precision >= 0 and int(num + denom) & 0x07 != 0 and exponent % 10 == 0:
            keep = True
    else:
        precision = 18 - (len(num) + len(denom))
        scale = exponent - len(denom)
        shifted = num + denom
        if (
            precision >= 0
            and scale >= -9
            and _go_mod(scale, 3) == 0
            and not shifted.endswith("000")
            and shifted[0] != "0"
        ):
            keep = True
    return Quantity(value, fmt, text if keep else _canonical_quantity(value, fmt))


def quantity_from_json(raw: JSON) -> Quantity:
    """A quantity as it may appear in JSON: a string or a number."""
    if isinstance(raw, bool):
        raise QuantityError(QUANTITY_FORMAT_ERROR)
    if isinstance(raw, int):
        return parse_quantity(str(raw))
    if isinstance(raw, float):
        return parse_quantity(repr(raw).replace("e+", "e"))
    if isinstance(raw, str):
        return parse_quantity(raw.strip())
    raise QuantityError(QUANTITY_FORMAT_ERROR)


# =============================================================================================
# validation messages (k8s.io/apimachinery/pkg/util/validation)

_DNS1123_LABEL_FMT: Final = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT: Final = _DNS1123_LABEL_FMT + r"(\." + _DNS1123_LABEL_FMT + ")*"
_QUALIFIED_NAME_FMT: Final = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE_FMT: Final = "(" + _QUALIFIED_NAME_FMT + ")?"
_DNS1123_LABEL_RE: Final = re.compile(_DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN_RE: Final = re.compile(_DNS1123_SUBDOMAIN_FMT)
_QUALIFIED_NAME_RE: Final = re.compile(_QUALIFIED_NAME_FMT)
_LABEL_VALUE_RE: Final = re.compile(_LABEL_VALUE_FMT)


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    out = msg + " (e.g. "
    for i, example in enumerate(examples):
        if i:
            out += " or "
        out += f"'{example}', "
    return out + f"regex used for validation is '{fmt}')"


def _max_len_error(n: int) -> str:
    return f"must be no more than {n} characters"


def _inclusive_range_error(lo: int, hi: int) -> str:
    return f"must be between {lo} and {hi}, inclusive"


def is_dns1123_label(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append(_max_len_error(63))
    if not _DNS1123_LABEL_RE.fullmatch(value):
        errs.append(
            _regex_error(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
                "or '-', and must start and end with an alphanumeric character",
                _DNS1123_LABEL_FMT,
                "my-name",
                "123-abc",
            )
        )
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > 253:
        errs.append(_max_len_error(253))
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(value):
        errs.append(
            _regex_error(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character",
                _DNS1123_SUBDOMAIN_FMT,
                "example.com",
            )
        )
    return errs


def _qualified_name_error() -> str:
    return _regex_error(
        "must consist of alphanumeric characters, '-', '_' or '.', and must start and "
        "end with an alphanumeric character",
        _QUALIFIED_NAME_FMT,
        "MyName",
        "my.name",
        "123-abc",
    )


def is_qualified_name(value: str) -> list[str]:
    """Label keys, annotation keys, finalizers: ``[prefix/]name``."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in is_dns1123_subdomain(prefix))
    else:
        return [
            "a qualified name "
            + _qualified_name_error()
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part " + _max_len_error(63))
    if name and not _QUALIFIED_NAME_RE.fullmatch(name):
        errs.append("name part " + _qualified_name_error())
    return errs


def is_valid_label_value(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append(_max_len_error(63))
    if not _LABEL_VALUE_RE.fullmatch(value):
        errs.append(
            _regex_error(
                "a valid label must be an empty string or consist of alphanumeric characters, "
                "'-', '_' or '.', and must start and end with an alphanumeric character",
                _LABEL_VALUE_FMT,
                "MyValue",
                "my_value",
                "12345",
            )
        )
    return errs


def _is_valid_port_name(name: str) -> list[str]:
    errs = []
    if len(name) > 15:
        errs.append(_max_len_error(15))
    if not re.fullmatch("[-a-z0-9]+", name):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", name):
        errs.append("must contain at least one letter (a-z)")
    if "--" in name:
        errs.append("must not contain consecutive hyphens")
    if name.startswith("-") or name.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def _go_value(value: JSON) -> str:
    """How field.Error prints a bad value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


_CAUSE_TYPES: Final = {
    "Required value": "FieldValueRequired",
    "Invalid value": "FieldValueInvalid",
    "Forbidden": "FieldValueForbidden",
    "Duplicate value": "FieldValueDuplicate",
    "Unsupported value": "FieldValueNotSupported",
    "Not found": "FieldValueNotFound",
    "Too long": "FieldValueTooLong",
}
_NO_VALUE_TYPES: Final = frozenset({"Required value", "Forbidden", "Too long"})


@dataclass(frozen=True)
class FieldError:
    """One ``field.Error``: ``spec.containers[0].image: Required value``."""

    type: str
    field: str
    value: JSON = None
    detail: str = ""

    def body(self) -> str:
        text = (
            self.type if self.type in _NO_VALUE_TYPES else f"{self.type}: {_go_value(self.value)}"
        )
        return f"{text}: {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"

    def cause(self) -> Obj:
        return {"reason": _CAUSE_TYPES[self.type], "message": self.body(), "field": self.field}


def _required(path: str, detail: str = "") -> FieldError:
    return FieldError("Required value", path, None, detail)


def _invalid(path: str, value: JSON, detail: str) -> FieldError:
    return FieldError("Invalid value", path, value, detail)


def _forbidden(path: str, detail: str) -> FieldError:
    return FieldError("Forbidden", path, None, detail)


def _unsupported(path: str, value: JSON, supported: Iterable[str]) -> FieldError:
    quoted = ", ".join(json.dumps(s) for s in sorted(supported))
    return FieldError("Unsupported value", path, value, f"supported values: {quoted}")


# =============================================================================================
# API errors (k8s.io/apimachinery/pkg/api/errors)


class ApiError(Exception):
    """An error answer: ``code`` and a ``metav1.Status`` body."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: Obj | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = dict(headers or {})

    def status(self) -> Obj:
        out: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            out["details"] = self.details
        out["code"] = self.code
        return out


def not_found(name: str, resource: str = "pods") -> ApiError:
    return ApiError(
        404, "NotFound", f'{resource} "{name}" not found', {"name": name, "kind": resource}
    )


def already_exists(name: str, resource: str = "pods") -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{resource} "{name}" already exists',
        {"name": name, "kind": resource},
    )


def conflict(name: str, why: str, resource: str = "pods") -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource} "{name}": {why}',
        {"name": name, "kind": resource},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(name: str, errors: Sequence[FieldError], kind: str = "Pod") -> ApiError:
    messages: list[str] = []
    for err in errors:  # errs.ToAggregate() drops duplicates
        if str(err) not in messages:
            messages.append(str(err))
    agg = messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {agg}',
        {"name": name, "kind": kind, "causes": [e.cause() for e in errors]},
    )


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def internal_error(message: str) -> ApiError:
    return ApiError(
        500,
        "InternalError",
        f"Internal error occurred: {message}",
        {"causes": [{"message": message}]},
    )


def decode_error(message: str) -> ApiError:
    return bad_request(f'Pod in version "v1" cannot be handled as a Pod: {message}')


_UNPROCESSABLE_GENERIC: Final = "the server rejected our request due to an error in our request"


def injected_error(code: int, message: str | None = None) -> ApiError:
    """The error a real server (or something in front of it) sends with this status code."""
    if code == 500:
        return internal_error(message or "injected failure")
    if code == 503:
        return ApiError(
            503,
            "ServiceUnavailable",
            message or "the server is currently unable to handle the request",
        )
    if code == 429:
        return ApiError(
            429,
            "TooManyRequests",
            message or "Too many requests, please try again later.",
            {"retryAfterSeconds": 1},
            {"Retry-After": "1"},
        )
    if code == 504:
        return ApiError(
            504,
            "Timeout",
            message
            or "the server was unable to return a response in the time allotted, "
            "but may still be processing the request",
        )
    reasons = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict"}
    return ApiError(code, reasons.get(code, "Unknown"), message or http.HTTPStatus(code).phrase)


# =============================================================================================
# label and field selectors (k8s.io/apimachinery/pkg/labels, .../fields)


class SelectorError(ValueError):
    """An unparsable selector (the API server answers 400 BadRequest)."""


@dataclass(frozen=True)
class Requirement:
    """``key <operator> values``; operator one of ``in notin = == != exists !`` ``gt lt``."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op in ("=", "==", "in"):
            return self.key in labels and labels[self.key] in self.values
        if op in ("!=", "notin"):
            return self.key not in labels or labels[self.key] not in self.values
        if op == "exists":
            return self.key in labels
        if op == "!":
            return self.key not in labels
        if op in ("gt", "lt"):
            if self.key not in labels:
                return False
            try:
                have = int(labels[self.key])
            except ValueError:
                return False
            want = int(self.values[0])
            return have > want if op == "gt" else have < want
        raise AssertionError(op)


_SEL_SPECIAL: Final = frozenset("!=,()<>")


def _lex_selector(text: str) -> list[tuple[str, str]]:
    """Tokens (kind, text); kinds: id, op, ',', '(', ')', 'in', 'notin'."""
    tokens: list[tuple[str, str]] = []
    i, end = 0, len(text)
    while i < end:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "(),":
            tokens.append((ch, ch))
            i += 1
            continue
        if ch in "!=<>":
            two = text[i : i + 2]
            if two in ("!=", "=="):
                tokens.append(("op", two))
                i += 2
            else:
                tokens.append(("op", ch))
                i += 1
            continue
        start = i
        while i < end and not text[i].isspace() and text[i] not in _SEL_SPECIAL:
            i += 1
        word = text[start:i]
        tokens.append((word if word in ("in", "notin") else "id", word))
    return tokens


def _check_key(key: str) -> None:
    errs = is_qualified_name(key)
    if errs:
        raise SelectorError(f'unable to parse requirement: key: Invalid value: "{key}": {errs[0]}')


def _check_values(key: str, values: Sequence[str]) -> None:
    for i, value in enumerate(values):
        errs = is_valid_label_value(value)
        if errs:
            raise SelectorError(
                f"unable to parse requirement: values[{i}][{key}]: "
                f"Invalid value: {json.dumps(value)}: {errs[0]}"
            )


def parse_label_selector(text: str) -> list[Requirement]:
    """Parse a label selector (``a=b,c!=d,e in (x,y),f notin (z),g,!h,n>3``).

    Raises :class:`SelectorError`. An empty selector selects everything.
    """
    tokens = _lex_selector(text)
    reqs: list[Requirement] = []
    pos = 0

    def peek() -> tuple[str, str]:
        return tokens[pos] if pos < len(tokens) else ("eos", "")

    def describe(tok: tuple[str, str]) -> str:
        return "end of string" if tok[0] == "eos" else tok[1]

    while True:
        kind, tok = peek()
        if kind == "eos":
            break
        if not (kind == "id" or (kind == "op" and tok == "!")):
            raise SelectorError(f"found '{tok}', expected: !, identifier, or 'end of string'")
        # a requirement
        if kind == "op":  # '!key'
            pos += 1
            kind, key = peek()
            if kind != "id":
                raise SelectorError(f"found '{describe((kind, key))}', expected: identifier")
            pos += 1
            _check_key(key)
            reqs.append(Requirement(key, "!"))
        else:
            key = tok
            pos += 1
            _check_key(key)
            kind, tok = peek()
            if kind in ("eos", ","):
                reqs.append(Requirement(key, "exists"))
            elif kind in ("in", "notin"):
                pos += 1
                if peek()[0] != "(":
                    raise SelectorError(f"found '{describe(peek())}', expected: '('")
                pos += 1
                values: list[str] = []
                while True:
                    kind2, tok2 = peek()
                    if kind2 == "id":
                        values.append(tok2)
                        pos += 1
                        kind2, tok2 = peek()
                    elif kind2 in (",", ")"):
                        values.append("")
                    else:
                        raise SelectorError(
                            f"found '{describe((kind2, tok2))}', expected: ',', ')' or identifier"
                        )
                    if kind2 == ",":
                        pos += 1
                        continue
                    if kind2 == ")":
                        pos += 1
                        break
                    raise SelectorError(f"found '{describe((kind2, tok2))}', expected: ',' or ')'")
                if values == [""]:
                    raise SelectorError("for 'in', 'notin' operators, values set can't be empty")
                _check_values(key, values)
                reqs.append(Requirement(key, kind, tuple(sorted(set(values)))))
            elif kind == "op" and tok in ("=", "==", "!=", ">", "<"):
                pos += 1
                kind2, value = peek()
                if kind2 == "id":
                    pos += 1
                elif kind2 in ("eos", ","):
                    value = ""
                else:
                    raise SelectorError(f"found '{describe((kind2, value))}', expected: identifier")
                if tok in (">", "<"):
                    if not re.fullmatch(r"-?[0-9]+", value):
                        raise SelectorError(
                            f"unable to parse requirement: values[0]: Invalid value: "
                            f"\"{value}\": for 'Gt', 'Lt' operators, the value must be an integer"
                        )
                    reqs.append(Requirement(key, "gt" if tok == ">" else "lt", (value,)))
                else:
                    _check_values(key, [value])
                    reqs.append(Requirement(key, tok, (value,)))
            else:
                raise SelectorError(f"found '{tok}', expected: in, notin, =, ==, !=, gt, lt")
        kind, tok = peek()
        if kind == "eos":
            break
        if kind != ",":
            raise SelectorError(f"found '{tok}', expected: ',' or 'end of string'")
        pos += 1
        kind, tok = peek()
        if not (kind == "id" or (kind == "op" and tok == "!")):
            raise SelectorError(f"found '{describe((kind, tok))}', expected: identifier after ','")
    return reqs


def labels_match(requirements: Sequence[Requirement], labels: Mapping[str, str] | None) -> bool:
    have = labels or {}
    return all(r.matches(have) for r in requirements)


POD_FIELD_SELECTORS: Final = (
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
)


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, cur, i = [], "", 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur += text[i : i + 2]
            i += 2
            continue
        if ch == sep:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    parts.append(cur)
    return parts


def _unescape_field_value(value: str) -> str:
    out, i = "", 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            if value[i + 1] not in "\\,=":
                raise SelectorError(
                    f"invalid field selector: invalid escape sequence: \\{value[i + 1]}"
                )
            out += value[i + 1]
            i += 2
        else:
            out += value[i]
            i += 1
    return out


def parse_field_selector(
    text: str, supported: Sequence[str] = POD_FIELD_SELECTORS
) -> list[Requirement]:
    """Parse a field selector (``metadata.name=x,status.phase!=Running``).

    Only ``=``, ``==`` and ``!=``; fields outside ``supported`` are refused the way the pods
    endpoint refuses them.
    """
    reqs: list[Requirement] = []
    if not text.strip():
        return reqs
    for term in _split_unescaped(text, ","):
        if not term:
            continue
        i, op = 0, ""
        while i < len(term):
            if term[i] == "\\":
                i += 2
                continue
            op = next((o for o in ("!=", "==", "=") if term.startswith(o, i)), "")
            if op:
                break
            i += 1
        if not op:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        key, value = term[:i].strip(), _unescape_field_value(term[i + len(op) :])
        if key not in supported:
            raise SelectorError(f"field label not supported: {key}")
        reqs.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
    return reqs


def pod_fields(pod: Obj) -> dict[str, str]:
    """The selectable fields of a pod (pkg/registry/core/pod/strategy.go ToSelectableFields)."""
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    ips = [ip.get("ip", "") for ip in status.get("podIPs") or []]
    return {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.restartPolicy": spec.get("restartPolicy", ""),
        "spec.schedulerName": spec.get("schedulerName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "spec.hostNetwork": "true" if spec.get("hostNetwork") else "false",
        "status.phase": status.get("phase", ""),
        "status.podIP": status.get("podIP", ""),
        "status.podIPs": ips[0] if ips else "",
        "status.nominatedNodeName": status.get("nominatedNodeName", ""),
    }


def fields_match(requirements: Sequence[Requirement], pod: Obj) -> bool:
    have = pod_fields(pod)
    for r in requirements:
        equal = have.get(r.key, "") == r.values[0]
        if equal != (r.operator != "!="):
            return False
    return True


# =============================================================================================
# patches


class PatchError(Exception):
    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f'invalid JSON pointer: "{path}"', 400)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve_parent(doc: JSON, parts: list[str], op: str, path: str) -> JSON:
    cur = doc
    for part in parts[:-1]:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and re.fullmatch("[0-9]+", part) and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise PatchError(
                f'{op} operation does not apply: doc is missing path: "{path}": missing value'
            )
        if cur is None:
            raise PatchError(
                f'{op} operation does not apply: doc is missing path: "{path}": missing value'
            )
    return cur


def _list_index(container: list[Any], part: str, op: str, path: str, *, adding: bool) -> int:
    if adding and part == "-":
        return len(container)
    if not re.fullmatch("-?[0-9]+", part):
        raise PatchError(
            f'{op} operation does not apply: doc is missing path: "{path}": missing value'
        )
    idx = int(part)
    limit = len(container) if adding else len(container) - 1
    if idx < 0 or idx > limit:
        raise PatchError(
            f'{op} operation does not apply: doc is missing path: "{path}": missing value'
        )
    return idx


def _get_at(doc: JSON, path: str, op: str) -> JSON:
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _resolve_parent(doc, parts, op, path)
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(
                f'{op} operation does not apply: doc is missing path: "{path}": missing value'
            )
        return parent[last]
    if isinstance(parent, list):
        return parent[_list_index(parent, last, op, path, adding=False)]
    raise PatchError(f'{op} operation does not apply: doc is missing path: "{path}": missing value')


def _add_at(doc: JSON, path: str, value: JSON, op: str = "add") -> JSON:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _resolve_parent(doc, parts, op, path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_list_index(parent, last, op, path, adding=True), value)
    else:
        raise PatchError(
            f'{op} operation does not apply: doc is missing path: "{path}": missing value'
        )
    return doc


def _remove_at(doc: JSON, path: str, op: str = "remove") -> JSON:
    parts = _pointer(path)
    if not parts:
        raise PatchError(f"{op} operation does not apply: cannot remove the root")
    parent = _resolve_parent(doc, parts, op, path)
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(
                f'{op} operation does not apply: doc is missing path: "{path}": missing value'
            )
        del parent[last]
    elif isinstance(parent, list):
        del parent[_list_index(parent, last, op, path, adding=False)]
    else:
        raise PatchError(
            f'{op} operation does not apply: doc is missing path: "{path}": missing value'
        )
    return doc


def apply_json_patch(doc: JSON, ops: JSON) -> JSON:
    """RFC 6902: add, remove, replace, move, copy, test."""
    if not isinstance(ops, list):
        raise PatchError("json: cannot unmarshal object into Go value of type jsonpatch.Patch", 400)
    out = copy.deepcopy(doc)
    for raw in ops:
        if not isinstance(raw, dict) or not isinstance(raw.get("op"), str):
            raise PatchError("Unexpected kind: unknown", 400)
        op, path = raw["op"], raw.get("path")
        if not isinstance(path, str):
            raise PatchError(f"{op} operation does not apply: missing path", 400)
        if op in ("add", "replace", "test") and "value" not in raw:
            raise PatchError(f"{op} operation does not apply: missing value", 400)
        if op == "add":
            out = _add_at(out, path, copy.deepcopy(raw["value"]))
        elif op == "remove":
            out = _remove_at(out, path)
        elif op == "replace":
            _get_at(out, path, "replace")
            parts = _pointer(path)
            if not parts:
                out = copy.deepcopy(raw["value"])
            else:
                parent = _resolve_parent(out, parts, "replace", path)
                if isinstance(parent, dict):
                    parent[parts[-1]] = copy.deepcopy(raw["value"])
                else:
                    parent[_list_index(parent, parts[-1], "replace", path, adding=False)] = (
                        copy.deepcopy(raw["value"])
                    )
        elif op in ("move", "copy"):
            src = raw.get("from")
            if not isinstance(src, str):
                raise PatchError(f"{op} operation does not apply: missing from", 400)
            value = copy.deepcopy(_get_at(out, src, op))
            if op == "move":
                out = _remove_at(out, src, op)
            out = _add_at(out, path, value, op)
        elif op == "test":
            if _get_at(out, path, "test") != raw["value"]:
                raise PatchError(f"testing value {path} failed: test failed")
        else:
            raise PatchError(f"Unexpected kind: {op}", 400)
    return out


def apply_merge_patch(target: JSON, patch: JSON) -> JSON:
    """RFC 7386 JSON merge patch (null deletes, lists are replaced)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


# patchMergeKey of the lists in a pod (k8s.io/api/core/v1 types.go); other lists are replaced
_SMP_MERGE_KEYS: Final[dict[tuple[str, ...], str]] = {
    ("metadata", "ownerReferences"): "uid",
    ("spec", "containers"): "name",
    ("spec", "initContainers"): "name",
    ("spec", "ephemeralContainers"): "name",
    ("spec", "volumes"): "name",
    ("spec", "imagePullSecrets"): "name",
    ("spec", "hostAliases"): "ip",
    ("spec", "resourceClaims"): "name",
    ("spec", "schedulingGates"): "name",
    ("spec", "topologySpreadConstraints"): "topologyKey",
    **{
        (*c, sub): key
        for c in (("spec", "containers"), ("spec", "initContainers"))
        for sub, key in (
            ("ports", "containerPort"),
            ("env", "name"),
            ("volumeMounts", "mountPath"),
            ("volumeDevices", "devicePath"),
        )
    },
}
_SMP_PRIMITIVE_MERGE: Final = frozenset({("metadata", "finalizers")})


def _strip_directives(value: JSON) -> JSON:
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if not k.startswith("$") and v is not None
        }
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def apply_strategic_merge_patch(original: JSON, patch: JSON, path: tuple[str, ...] = ()) -> JSON:
    """A strategic merge patch for the fields of a pod: maps merge (null deletes), lists with a
    ``patchMergeKey`` merge by key (``$patch: delete`` removes an item, ``$patch: replace``
    replaces the list), finalizers merge as a set (``$deleteFromPrimitiveList/finalizers``)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return _strip_directives(patch)
    result = copy.deepcopy(original) if isinstance(original, dict) else {}
    deletions: list[tuple[str, JSON]] = []
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            deletions.append((key.split("/", 1)[1], value))
            continue
        sub = (*path, key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            if value.get("$patch") == "delete":
                result.pop(key, None)
            else:
                result[key] = apply_strategic_merge_patch(result.get(key), value, sub)
        elif isinstance(value, list):
            current = result.get(key)
            if sub in _SMP_MERGE_KEYS and isinstance(current, list):
                result[key] = _smp_merge_list(current, value, _SMP_MERGE_KEYS[sub], sub)
            elif sub in _SMP_PRIMITIVE_MERGE and isinstance(current, list):
                result[key] = current + [v for v in value if v not in current]
            else:
                result[key] = [
                    _strip_directives(v)
                    for v in value
                    if not (isinstance(v, dict) and v.get("$patch") == "replace")
                ]
        else:
            result[key] = value
    for key, values in deletions:
        if isinstance(result.get(key), list) and isinstance(values, list):
            result[key] = [v for v in result[key] if v not in values]
    return result


def _smp_merge_list(
    current: list[Any], patch: list[Any], key: str, path: tuple[str, ...]
) -> list[Any]:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [
            _strip_directives(p)
            for p in patch
            if not (isinstance(p, dict) and p.get("$patch") == "replace")
        ]
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(
                f"map: {_go_value(item)} does not contain declared merge key: {key}", 400
            )
        idx = next(
            (
                i
                for i, have in enumerate(result)
                if isinstance(have, dict) and have.get(key) == item[key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if idx is not None:
                del result[idx]
            continue
        if idx is None:
            result.append(apply_strategic_merge_patch({}, item, path))
        else:
            result[idx] = apply_strategic_merge_patch(result[idx], item, path)
    return result


# =============================================================================================
# the schema: field names and types, taken from the client's generated models


def _model(name: str) -> type[Any] | None:
    from kubernetes_asyncio.client import models

    found = getattr(models, name, None)
    return found if isinstance(found, type) else None


_QUANTITY_MAPS: Final = frozenset({"limits", "requests", "overhead"})
_GO_TYPES: Final = {"str": "string", "int": "int64", "bool": "bool", "float": "float64"}


def _json_type(value: JSON) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


class _Decoder:
    """Checks a decoded JSON object against the v1 types: wrong JSON types are decode errors
    (400), unknown fields are dropped with a warning (or refused with ``fieldValidation=Strict``),
    quantities are parsed and stored in the server's form."""

    def __init__(self) -> None:
        self.unknown: list[str] = []

    def decode(self, value: JSON, type_name: str, path: str, struct: str, attr: str) -> JSON:
        if value is None:
            return None
        if type_name == "object":
            return value
        if type_name in _GO_TYPES:
            ok = {
                "str": isinstance(value, str),
                "int": isinstance(value, int) and not isinstance(value, bool),
                "bool": isinstance(value, bool),
                "float": isinstance(value, int | float) and not isinstance(value, bool),
            }[type_name]
            if type_name == "int" and isinstance(value, float) and value.is_integer():
                return int(value)
            if not ok:
                raise decode_error(
                    f"json: cannot unmarshal {_json_type(value)} into Go struct field "
                    f"{struct}.{path} of type {_GO_TYPES[type_name]}"
                )
            return value
        if type_name == "datetime":
            if not isinstance(value, str):
                raise decode_error(
                    f"json: cannot unmarshal {_json_type(value)} into Go struct field "
                    f"{struct}.{path} of type string"
                )
            return value
        if type_name.startswith("list["):
            if not isinstance(value, list):
                raise decode_error(
                    f"json: cannot unmarshal {_json_type(value)} into Go struct field "
                    f"{struct}.{path} of type []{type_name[5:-1]}"
                )
            return [self.decode(v, type_name[5:-1], path, struct, attr) for v in value]
        if type_name.startswith("dict("):
            inner = type_name[5:-1].split(",", 1)[1].strip()
            if not isinstance(value, dict):
                raise decode_error(
                    f"json: cannot unmarshal {_json_type(value)} into Go struct field "
                    f"{struct}.{path} of type map[string]{_GO_TYPES.get(inner, inner)}"
                )
            if attr in _QUANTITY_MAPS and inner == "str":
                out: Obj = {}
                for k, v in value.items():
                    try:
                        out[k] = quantity_from_json(v).text
                    except QuantityError as exc:
                        raise decode_error(str(exc)) from None
                return out
            return {k: self.decode(v, inner, path, struct, attr) for k, v in value.items()}
        model = _model(type_name)
        if model is None:
            return value
        if not isinstance(value, dict):
            raise decode_error(
                f"json: cannot unmarshal {_json_type(value)} into Go struct field "
                f"{struct}.{path} of type v1.{type_name.removeprefix('V1')}"
            )
        by_json = {j: a for a, j in model.attribute_map.items()}
        out = {}
        for key, sub in value.items():
            sub_path = f"{path}.{key}" if path else key
            if key not in by_json:
                self.unknown.append(sub_path)
                continue
            attr_name = by_json[key]
            decoded = self.decode(
                sub, model.openapi_types[attr_name], sub_path, type_name.removeprefix("V1"), key
            )
            if decoded is not None:
                out[key] = decoded
        return out


def decode_pod(raw: JSON, field_validation: str) -> tuple[Obj, list[str]]:
    """(pod, warnings); raises ApiError 400 for undecodable bodies."""
    if not isinstance(raw, dict):
        raise bad_request(
            f"json: cannot unmarshal {_json_type(raw)} into Go value of type struct "
            '{ APIVersion string "json:\\"apiVersion,omitempty\\""; Kind string '
            '"json:\\"kind,omitempty\\"" }'
        )
    kind, version = raw.get("kind", "Pod"), raw.get("apiVersion", "v1")
    if kind not in ("Pod", "") or version not in ("v1", ""):
        raise bad_request(
            f"the API version in the data ({version}) does not match the expected API version (v1)"
            if version not in ("v1", "")
            else f'{kind} in version "v1" cannot be handled as a Pod: no kind "{kind}" is '
            'registered for version "v1" in scheme "pkg/api/legacyscheme/scheme.go:30"'
        )
    decoder = _Decoder()
    pod = decoder.decode(raw, "V1Pod", "", "", "")
    pod["kind"], pod["apiVersion"] = "Pod", "v1"
    unknown = [f'unknown field "{p}"' for p in decoder.unknown]
    if unknown and field_validation == "Strict":
        raise decode_error("strict decoding error: " + ", ".join(unknown))
    return pod, ([] if field_validation == "Ignore" else unknown)


# =============================================================================================
# defaulting and validation of pods

_STANDARD_CONTAINER_RESOURCES: Final = frozenset({"cpu", "memory", "ephemeral-storage"})
_RESTART_POLICIES: Final = ("Always", "OnFailure", "Never")
_DNS_POLICIES: Final = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
_PULL_POLICIES: Final = ("Always", "IfNotPresent", "Never")
_PROTOCOLS: Final = ("TCP", "UDP", "SCTP")
_PHASES: Final = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
_DEFAULT_TOLERATIONS: Final = (
    {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
    {
        "key": "node.kubernetes.io/unreachable",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
)


def _image_pull_policy(image: str) -> str:
    name = image.split("@", 1)[0]
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
    if "@" in image:
        return "IfNotPresent"
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def default_pod(pod: Obj) -> None:
    """The defaults the API server fills in (SetObjectDefaults_Pod); only missing fields."""
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            if not isinstance(container, dict):
                continue
            if isinstance(container.get("image"), str) and container["image"]:
                container.setdefault("imagePullPolicy", _image_pull_policy(container["image"]))
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            resources = container.setdefault("resources", {})
            limits = resources.get("limits")
            if limits:
                requests = resources.setdefault("requests", {})
                for name, value in limits.items():
                    requests.setdefault(name, value)
            for port in container.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")


def qos_class(pod: Obj) -> str:
    containers = [
        c for key in ("containers", "initContainers") for c in pod.get("spec", {}).get(key) or []
    ]
    requests: list[dict[str, str]] = [
        c.get("resources", {}).get("requests") or {} for c in containers
    ]
    limits: list[dict[str, str]] = [c.get("resources", {}).get("limits") or {} for c in containers]
    if not any(requests) and not any(limits):
        return "BestEffort"
    for req, lim in zip(requests, limits, strict=True):
        for name in ("cpu", "memory"):
            if name not in lim or name not in req:
                return "Burstable"
            if parse_quantity(req[name]).value != parse_quantity(lim[name]).value:
                return "Burstable"
    return "Guaranteed"


def _validate_labels(labels: Mapping[str, str], path: str) -> list[FieldError]:
    errs = []
    for key, value in labels.items():
        errs += [_invalid(path, key, m) for m in is_qualified_name(key)]
        errs += [_invalid(path, value, m) for m in is_valid_label_value(value)]
    return errs


def _validate_metadata(meta: Obj) -> list[FieldError]:
    errs: list[FieldError] = []
    name = meta.get("name", "")
    if not name:
        errs.append(_required("metadata.name", "name or generateName is required"))
    else:
        errs += [_invalid("metadata.name", name, m) for m in is_dns1123_subdomain(name)]
    errs += _validate_labels(meta.get("labels") or {}, "metadata.labels")
    annotations: dict[str, str] = meta.get("annotations") or {}
    total = 0
    for key, value in annotations.items():
        errs += [_invalid("metadata.annotations", key, m) for m in is_qualified_name(key.lower())]
        total += len(key) + len(value)
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        errs.append(
            FieldError(
                "Too long",
                "metadata.annotations",
                None,
                f"may not be more than {TOTAL_ANNOTATION_SIZE_LIMIT} bytes",
            )
        )
    for i, finalizer in enumerate(meta.get("finalizers") or []):
        errs += [
            _invalid(f"metadata.finalizers[{i}]", finalizer, m)
            for m in is_qualified_name(finalizer)
        ]
    return errs


def _validate_resources(resources: Obj, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    limits: dict[str, str] = resources.get("limits") or {}
    requests: dict[str, str] = resources.get("requests") or {}
    for kind, values in (("limits", limits), ("requests", requests)):
        for name, text in values.items():
            fpath = f"{path}.{kind}[{name}]"
            if name not in _STANDARD_CONTAINER_RESOURCES and not name.startswith("hugepages-"):
                if "/" not in name:
                    errs.append(
                        _invalid(fpath, name, "must be a standard resource type or fully qualified")
                    )
                    continue
                errs += [_invalid(fpath, name, m) for m in is_qualified_name(name)]
            quantity = parse_quantity(text)
            if quantity.value < 0:
                errs.append(_invalid(fpath, quantity.text, "must be greater than or equal to 0"))
            extended = name not in _STANDARD_CONTAINER_RESOURCES
            if extended and not name.startswith("hugepages-") and quantity.value.denominator != 1:
                errs.append(_invalid(fpath, quantity.text, "must be an integer"))
    for name, text in requests.items():
        if name in limits:
            req, lim = parse_quantity(text), parse_quantity(limits[name])
            if req.value > lim.value:
                errs.append(
                    _invalid(
                        f"{path}.requests",
                        req.text,
                        f"must be less than or equal to {name} limit of {lim.text}",
                    )
                )
    return errs


def _validate_container(c: Obj, path: str, volumes: set[str]) -> list[FieldError]:
    errs: list[FieldError] = []
    name = c.get("name", "")
    if not name:
        errs.append(_required(f"{path}.name"))
    else:
        errs += [_invalid(f"{path}.name", name, m) for m in is_dns1123_label(name)]
    image = c.get("image", "")
    if not image:
        errs.append(_required(f"{path}.image"))
    elif image != image.strip():
        errs.append(
            _invalid(f"{path}.image", image, "must not have leading or trailing whitespace")
        )
    if "imagePullPolicy" in c and c["imagePullPolicy"] not in _PULL_POLICIES:
        errs.append(_unsupported(f"{path}.imagePullPolicy", c["imagePullPolicy"], _PULL_POLICIES))
    port_names: set[str] = set()
    for i, port in enumerate(c.get("ports") or []):
        ppath = f"{path}.ports[{i}]"
        if port.get("name"):
            errs += [
                _invalid(f"{ppath}.name", port["name"], m)
                for m in _is_valid_port_name(port["name"])
            ]
            if port["name"] in port_names:
                errs.append(FieldError("Duplicate value", f"{ppath}.name", port["name"]))
            port_names.add(port["name"])
        cport = port.get("containerPort", 0)
        if cport == 0:
            errs.append(_required(f"{ppath}.containerPort"))
        elif not 1 <= cport <= 65535:
            errs.append(_invalid(f"{ppath}.containerPort", cport, _inclusive_range_error(1, 65535)))
        hport = port.get("hostPort", 0)
        if hport and not 1 <= hport <= 65535:
            errs.append(_invalid(f"{ppath}.hostPort", hport, _inclusive_range_error(1, 65535)))
        protocol = port.get("protocol", "")
        if not protocol:
            errs.append(_required(f"{ppath}.protocol"))
        elif protocol not in _PROTOCOLS:
            errs.append(_unsupported(f"{ppath}.protocol", protocol, _PROTOCOLS))
    for i, env in enumerate(c.get("env") or []):
        env_name = env.get("name", "")
        if not env_name:
            errs.append(_required(f"{path}.env[{i}].name"))
        elif "=" in env_name or not all(" " <= ch <= "~" for ch in env_name):
            errs.append(
                _invalid(
                    f"{path}.env[{i}].name",
                    env_name,
                    "a valid environment variable name must consist only of printable ASCII "
                    "characters other than '='",
                )
            )
    for i, mount in enumerate(c.get("volumeMounts") or []):
        if mount.get("name") not in volumes:
            errs.append(
                FieldError("Not found", f"{path}.volumeMounts[{i}].name", mount.get("name"))
            )
        if not mount.get("mountPath"):
            errs.append(_required(f"{path}.volumeMounts[{i}].mountPath"))
    errs += _validate_resources(c.get("resources") or {}, f"{path}.resources")
    return errs


def validate_pod(pod: Obj) -> list[FieldError]:
    """ValidatePod: metadata and spec of a pod after defaulting."""
    errs = _validate_metadata(pod.get("metadata", {}))
    spec = pod.get("spec", {})
    volumes: set[str] = set()
    for i, volume in enumerate(spec.get("volumes") or []):
        vname = volume.get("name", "")
        if not vname:
            errs.append(_required(f"spec.volumes[{i}].name"))
        else:
            errs += [_invalid(f"spec.volumes[{i}].name", vname, m) for m in is_dns1123_label(vname)]
            if vname in volumes:
                errs.append(FieldError("Duplicate value", f"spec.volumes[{i}].name", vname))
        volumes.add(vname)
    containers = spec.get("containers") or []
    if not containers:
        errs.append(_required("spec.containers"))
    seen: set[str] = set()
    for key in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(key) or []):
            path = f"spec.{key}[{i}]"
            errs += _validate_container(container, path, volumes)
            cname = container.get("name", "")
            if cname and cname in seen:
                errs.append(FieldError("Duplicate value", f"{path}.name", cname))
            seen.add(cname)
    if spec.get("restartPolicy") not in _RESTART_POLICIES:
        errs.append(
            _unsupported("spec.restartPolicy", spec.get("restartPolicy"), _RESTART_POLICIES)
        )
    if spec.get("dnsPolicy") not in _DNS_POLICIES:
        errs.append(_unsupported("spec.dnsPolicy", spec.get("dnsPolicy"), _DNS_POLICIES))
    ads = spec.get("activeDeadlineSeconds")
    if ads is not None and not 1 <= ads <= MAX_INT32:
        errs.append(
            _invalid("spec.activeDeadlineSeconds", ads, _inclusive_range_error(1, MAX_INT32))
        )
    errs += _validate_labels(spec.get("nodeSelector") or {}, "spec.nodeSelector")
    return errs


_UPDATE_FORBIDDEN: Final = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
    "(allow it to be set to 1 if it was previously negative)"
)


def _json_diff(old: JSON, new: JSON, path: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            _json_diff(old.get(key), new.get(key), f"{path}.{key}", out)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            _json_diff(a, b, f"{path}[{i}]", out)
    elif old != new:
        out.append(f"-  {path}: {_go_value(old)}")
        out.append(f"+  {path}: {_go_value(new)}")


def validate_pod_update(new: Obj, old: Obj) -> list[FieldError]:
    """ValidatePodUpdate: what may change on a live pod."""
    errs = validate_pod(new)
    new_meta, old_meta = new.get("metadata", {}), old.get("metadata", {})
    if old_meta.get("deletionTimestamp"):
        added = [
            f
            for f in new_meta.get("finalizers") or []
            if f not in (old_meta.get("finalizers") or [])
        ]
        if added:
            errs.append(
                _forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted, found new "
                    "finalizers []string{" + ", ".join(json.dumps(f) for f in added) + "}",
                )
            )
    new_spec, old_spec = new.get("spec", {}), old.get("spec", {})
    new_ads, old_ads = new_spec.get("activeDeadlineSeconds"), old_spec.get("activeDeadlineSeconds")
    if new_ads is not None:
        if not 0 <= new_ads <= MAX_INT32:
            return [
                *errs,
                _invalid(
                    "spec.activeDeadlineSeconds", new_ads, _inclusive_range_error(0, MAX_INT32)
                ),
            ]
        if old_ads is not None and old_ads < new_ads:
            return [
                *errs,
                _invalid(
                    "spec.activeDeadlineSeconds",
                    new_ads,
                    "must be less than or equal to previous value",
                ),
            ]
    elif old_ads is not None:
        return [
            *errs,
            _invalid(
                "spec.activeDeadlineSeconds",
                None,
                "must not update from a positive integer to nil value",
            ),
        ]
    for key in ("containers", "initContainers"):
        if len(new_spec.get(key) or []) != len(old_spec.get(key) or []):
            return [
                *errs,
                _forbidden(f"spec.{key}", "pod updates may not add or remove containers"),
            ]
    munged = copy.deepcopy(new_spec)
    for key in ("containers", "initContainers"):
        for mc, oc in zip(munged.get(key) or [], old_spec.get(key) or [], strict=True):
            if "image" in oc:
                mc["image"] = oc["image"]
            else:
                mc.pop("image", None)
    if old_ads is None:
        munged.pop("activeDeadlineSeconds", None)
    else:
        munged["activeDeadlineSeconds"] = old_ads
    old_tol, new_tol = old_spec.get("tolerations") or [], munged.get("tolerations") or []
    if all(t in new_tol for t in old_tol):
        if "tolerations" in old_spec:
            munged["tolerations"] = old_spec["tolerations"]
        else:
            munged.pop("tolerations", None)
    old_grace = old_spec.get("terminationGracePeriodSeconds")
    if old_grace is not None and old_grace < 0 and munged.get("terminationGracePeriodSeconds") == 1:
        munged["terminationGracePeriodSeconds"] = old_grace
    if munged != old_spec:
        diff: list[str] = []
        _json_diff(old_spec, munged, "spec", diff)
        detail = (
            _UPDATE_FORBIDDEN
            + "\n  core.PodSpec{\n"
            + "\n".join("  " + d for d in diff)
            + "\n  }\n"
        )
        errs.append(_forbidden("spec", detail))
    return errs


# =============================================================================================
# the store


def _rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(int(ts), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_rfc3339(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


_NAME_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"


@dataclass
class _Event:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj  # the object after the change (for DELETED: as it was deleted)
    prev: Obj | None  # the object before the change


@dataclass
class _Watcher:
    namespace: str | None
    labels: list[Requirement]
    fields: list[Requirement]
    bookmarks: bool
    queue: asyncio.Queue[Obj | None] = field(default_factory=asyncio.Queue)

    def selects(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return labels_match(self.labels, meta.get("labels")) and fields_match(self.fields, obj)

    def translate(self, event: _Event) -> Obj | None:
        """The event as this watcher sees it (objects entering or leaving its selection turn
        into ADDED / DELETED, as in the watch cache), or None."""
        if event.type == "DELETED":
            return {"type": "DELETED", "object": event.obj} if self.selects(event.obj) else None
        now, before = self.selects(event.obj), self.selects(event.prev)
        if now and before:
            return {"type": event.type, "object": event.obj}
        if now:
            return {"type": "ADDED", "object": event.obj}
        if before:
            return {"type": "DELETED", "object": event.obj}
        return None


@dataclass(frozen=True)
class RequestRecord:
    """One request as the fake saw it."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    content_type: str = ""
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    body: bytes = field(default=b"", repr=False)


@dataclass
class _Injection:
    method: str
    pattern: re.Pattern[str]
    status: int | None
    times: int
    delay: float
    message: str | None


@dataclass
class _Request:
    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


class _BadHttp(Exception):
    pass


def _strip_list_item(obj: Obj) -> Obj:
    out = dict(obj)
    out.pop("kind", None)
    out.pop("apiVersion", None)
    return out


def _parse_bool(value: str | None) -> bool:
    """strconv.ParseBool, as the API server parses ``watch=``."""
    if value is None or value == "":
        return False
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise bad_request(f'strconv.ParseBool: parsing "{value}": invalid syntax')


def _parse_int(name: str, value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not re.fullmatch(r"-?[0-9]+", value):
        raise bad_request(f'strconv.ParseInt: parsing "{value}": invalid syntax')
    return int(value)


_PODS_RE: Final = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+)(/status)?)?/?$")
_NAMESPACE_RE: Final = re.compile(r"^/api/v1/namespaces(?:/([^/]+))?/?$")
_PATCH_TYPES: Final = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
_PUBLIC_PATHS: Final = frozenset({"/version", "/healthz", "/livez", "/readyz"})


class FakeKubeApi(Lifecycle):
    """The fake API server. See the module docstring.

    ``namespaces``: the namespaces that exist (creating a pod elsewhere: 404 NotFound).
    ``token``: the bearer token accepted (random by default). ``anonymous``: a request without
    a token is ``system:anonymous`` and gets 403 (as with anonymous auth on) instead of 401.
    ``node_name``: pods are bound to this node at the first request after their creation
    (None: never; ``set_running`` binds too). ``graceful_deletion``: deleting a bound,
    non-terminal pod sets ``deletionTimestamp`` (+ grace period) and the pod goes away only
    once the fake's clock passes it, as with a real kubelet; otherwise deletion is immediate.
    ``clock``: wall-clock seconds (``time.time``); :meth:`advance_time` adds to it.
    ``watch_timeout``: how long a watch without ``timeoutSeconds`` lasts.
    """

    def __init__(
        self,
        namespaces: Iterable[str] = ("default",),
        *,
        token: str | None = None,
        host: str = LOOPBACK,
        port: int | None = None,
        anonymous: bool = False,
        node_name: str | None = "fake-node",
        host_ip: str = "10.0.0.1",
        graceful_deletion: bool = False,
        clock: Callable[[], float] = time.time,
        watch_timeout: float = 1800.0,
        first_resource_version: int = 1000,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.token = token if token is not None else secrets.token_urlsafe(24)
        self.anonymous = anonymous
        self.node_name = node_name
        self.host_ip = host_ip
        self.graceful_deletion = graceful_deletion
        self.watch_timeout = watch_timeout
        self._clock = clock
        self._offset = 0.0
        self._namespaces: dict[str, Obj] = {}
        self._rv = first_resource_version
        for ns in namespaces:
            self.add_namespace(ns)
        self._objects: dict[tuple[str, str], Obj] = {}
        self._base: dict[tuple[str, str], Obj] = {}
        self._base_rv = self._rv
        self._events: list[_Event] = []
        self._watchers: list[_Watcher] = []
        self._injections: list[_Injection] = []
        self.request_log: list[RequestRecord] = []
        self.warnings: list[str] = []
        self.connections = 0  # TCP connections accepted (keep-alive reuses them)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> Self:
        self._server = await asyncio.start_server(
            self._serve_connection, self.host, self.port, reuse_address=True, limit=MAX_HEADER_BYTES
        )
        return self

    async def stop(self) -> None:
        for watcher in self._watchers:
            watcher.queue.put_nowait(None)
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=2.0)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2.0)
            self._server = None

    # -- client configuration --------------------------------------------------------------

    def kubeconfig(self, namespace: str = "default", *, token: str | None = None) -> Obj:
        """The kubeconfig as a dict (``load_kube_config_from_dict`` takes it too)."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "paygress-fake", "cluster": {"server": self.url}}],
            "users": [{"name": "paygress-fake", "user": {"token": token or self.token}}],
            "contexts": [
                {
                    "name": "paygress-fake",
                    "context": {
                        "cluster": "paygress-fake",
                        "user": "paygress-fake",
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": "paygress-fake",
            "preferences": {},
        }

    def write_kubeconfig(
        self, path: str | Path, namespace: str = "default", *, token: str | None = None
    ) -> Path:
        """Write a kubeconfig (server, bearer ``token:``, context with ``namespace``)."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(yaml.safe_dump(self.kubeconfig(namespace, token=token), sort_keys=False))
        out.chmod(0o600)
        return out

    def client_configuration(self, *, token: str | None = None) -> Any:
        """A ``kubernetes_asyncio.client.Configuration`` for this server, built directly.

        Both ``api_key`` and ``api_key_prefix`` are set: with the key alone the client sends
        ``authorization: <token>`` (no ``Bearer``), which a real server refuses with 401.
        """
        from kubernetes_asyncio.client import Configuration

        return Configuration(
            host=self.url,
            api_key={"BearerToken": token or self.token},
            api_key_prefix={"BearerToken": "Bearer"},
        )

    # -- test controls ---------------------------------------------------------------------

    def now(self) -> float:
        return self._clock() + self._offset

    def advance_time(self, seconds: float) -> None:
        """Move the fake's clock forward (then run the kubelet: deadlines, deletions)."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._offset += seconds
        self.tick()

    def add_namespace(self, name: str) -> None:
        if is_dns1123_label(name):
            raise ValueError(f"bad namespace name {name!r}")
        self._namespaces.setdefault(
            name,
            {
                "metadata": {
                    "name": name,
                    "uid": str(uuid.uuid4()),
                    "resourceVersion": str(self._rv),
                    "creationTimestamp": _rfc3339(self.now()),
                    "labels": {"kubernetes.io/metadata.name": name},
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            },
        )

    @property
    def resource_version(self) -> int:
        """The current (latest) resourceVersion."""
        return self._rv

    def pods(self, namespace: str | None = None) -> list[Obj]:
        """Copies of the stored pods (of one namespace, or all), sorted by namespace/name."""
        return [
            copy.deepcopy(obj)
            for (ns, _), obj in sorted(self._objects.items())
            if namespace is None or ns == namespace
        ]

    def pod(self, namespace: str, name: str) -> Obj | None:
        obj = self._objects.get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def create_pod(self, namespace: str, body: Obj) -> Obj:
        """Create a pod as POST would (validation included); raises :class:`ApiError`."""
        return self._create(namespace, copy.deepcopy(body), {})[0]

    def set_running(self, namespace: str, name: str, ip: str = "10.0.0.5") -> Obj:
        """What the kubelet reports once all containers run: phase Running, podIP, Ready."""
        pod = self._must_get(namespace, name)
        prev = copy.deepcopy(pod)
        self._bind(pod)
        now = _rfc3339(self.now())
        status = pod["status"]
        status["phase"] = "Running"
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
        status["conditions"] = [
            {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
            for t in (
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled",
            )
        ]
        status["containerStatuses"] = [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": f"{c.get('image', '')}@sha256:{'0' * 64}",
                "containerID": f"containerd://{secrets.token_hex(32)}",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
                "lastState": {},
            }
            for c in pod["spec"].get("containers", [])
        ]
        return self._commit("MODIFIED", pod, prev)

    def set_phase(
        self,
        namespace: str,
        name: str,
        phase: str,
        *,
        reason: str | None = None,
        message: str | None = None,
    ) -> Obj:
        """Set ``status.phase`` (Pending, Running, Succeeded, Failed, Unknown) as a kubelet
        would, container states and the Ready condition included."""
        if phase not in _PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        if phase == "Running":
            current = self._must_get(namespace, name)
            return self.set_running(namespace, name, current["status"].get("podIP") or "10.0.0.5")
        pod = self._must_get(namespace, name)
        prev = copy.deepcopy(pod)
        if phase in ("Succeeded", "Failed"):
            self._terminate(pod, phase, reason, message, exit_code=0 if phase == "Succeeded" else 1)
        else:
            pod["status"]["phase"] = phase
            if reason is not None:
                pod["status"]["reason"] = reason
            if message is not None:
                pod["status"]["message"] = message
        return self._commit("MODIFIED", pod, prev)

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int | None = 500,
        times: int = 1,
        delay: float = 0.0,
        message: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests whose method is ``method`` (``*``: any) and whose
        target (path and query string) matches ``path_regex`` (``re.search``) with ``status``
        (500 InternalError, 503 ServiceUnavailable, 429 TooManyRequests with Retry-After,
        504 Timeout, ...), after ``delay`` seconds. ``status=None``: only the delay, then the
        request is served normally -- a delay above the client's timeout is a timeout."""
        self._injections.append(
            _Injection(method.upper(), re.compile(path_regex), status, times, delay, message)
        )

    def clear_failures(self) -> None:
        self._injections.clear()

    def tick(self) -> None:
        """Run the fake scheduler and kubelet once: bind new pods, fail pods past their
        ``activeDeadlineSeconds``, finish graceful deletions whose time has come. Runs before
        every request too."""
        now = self.now()
        for key in sorted(self._objects):
            pod = self._objects.get(key)
            if pod is None:
                continue
            meta, spec, status = pod["metadata"], pod["spec"], pod["status"]
            deletion = meta.get("deletionTimestamp")
            if deletion is not None:
                if not meta.get("finalizers") and now >= _parse_rfc3339(deletion):
                    self._remove(key)
                continue
            if self.node_name is not None and not spec.get("nodeName"):
                prev = copy.deepcopy(pod)
                self._bind(pod)
                self._commit("MODIFIED", pod, prev)
            ads, start = spec.get("activeDeadlineSeconds"), status.get("startTime")
            if (
                ads is not None
                and start is not None
                and status.get("phase") in ("Pending", "Running")
                and now >= _parse_rfc3339(start) + ads
            ):
                prev = copy.deepcopy(pod)
                self._terminate(
                    pod,
                    "Failed",
                    "DeadlineExceeded",
                    "Pod was active on the node longer than the specified deadline",
                    exit_code=137,
                )
                self._commit("MODIFIED", pod, prev)

    def compact(self, resource_version: int | None = None) -> None:
        """Forget history up to ``resource_version`` (default: all): older watches and
        ``continue`` tokens then get 410 Expired, as after an etcd compaction."""
        upto = self._rv if resource_version is None else resource_version
        for event in self._events:
            if event.rv > upto:
                break
            key = (event.obj["metadata"]["namespace"], event.obj["metadata"]["name"])
            if event.type == "DELETED":
                self._base.pop(key, None)
            else:
                self._base[key] = event.obj
        self._events = [e for e in self._events if e.rv > upto]
        self._base_rv = max(self._base_rv, upto)

    @property
    def watchers(self) -> int:
        """Open watches."""
        return len(self._watchers)

    async def wait_for_watchers(self, count: int = 1, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while len(self._watchers) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self._watchers)} watchers, wanted {count}")
            await asyncio.sleep(0.01)

    def send_bookmarks(self) -> None:
        """Send a BOOKMARK event to every watch that asked for them (allowWatchBookmarks)."""
        for watcher in self._watchers:
            if watcher.bookmarks:
                watcher.queue.put_nowait(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": "Pod",
                            "apiVersion": "v1",
                            "metadata": {"resourceVersion": str(self._rv)},
                        },
                    }
                )

    # -- store internals -------------------------------------------------------------------

    def _must_get(self, namespace: str, name: str) -> Obj:
        pod = self._objects.get((namespace, name))
        if pod is None:
            raise KeyError(f"no pod {namespace}/{name}")
        return pod

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _commit(self, type_: str, pod: Obj, prev: Obj | None) -> Obj:
        """Store ``pod`` with a new resourceVersion and tell the watchers."""
        rv = self._next_rv()
        pod["metadata"]["resourceVersion"] = str(rv)
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        self._objects[key] = pod
        self._record(_Event(rv, type_, copy.deepcopy(pod), prev))
        return copy.deepcopy(pod)

    def _remove(self, key: tuple[str, str]) -> Obj:
        pod = self._objects.pop(key)
        rv = self._next_rv()
        pod["metadata"]["resourceVersion"] = str(rv)
        self._record(_Event(rv, "DELETED", copy.deepcopy(pod), None))
        return copy.deepcopy(pod)

    def _record(self, event: _Event) -> None:
        self._events.append(event)
        for watcher in self._watchers:
            out = watcher.translate(event)
            if out is not None:
                watcher.queue.put_nowait(out)

    def _state_at(self, rv: int) -> dict[tuple[str, str], Obj]:
        state = dict(self._base)
        for event in self._events:
            if event.rv > rv:
                break
            key = (event.obj["metadata"]["namespace"], event.obj["metadata"]["name"])
            if event.type == "DELETED":
                state.pop(key, None)
            else:
                state[key] = event.obj
        return state

    def _bind(self, pod: Obj) -> None:
        """What the scheduler and then the kubelet's first status update do."""
        spec, status = pod["spec"], pod["status"]
        if spec.get("nodeName"):
            return
        spec["nodeName"] = self.node_name or "fake-node"
        now = _rfc3339(self.now())
        status.update(
            {
                "phase": status.get("phase", "Pending"),
                "hostIP": self.host_ip,
                "hostIPs": [{"ip": self.host_ip}],
                "startTime": now,
                "conditions": [
                    {
                        "type": "PodReadyToStartContainers",
                        "status": "False",
                        "lastProbeTime": None,
                        "lastTransitionTime": now,
                    },
                    {
                        "type": "Initialized",
                        "status": "True",
                        "lastProbeTime": None,
                        "lastTransitionTime": now,
                    },
                    {
                        "type": "Ready",
                        "status": "False",
                        "lastProbeTime": None,
                        "lastTransitionTime": now,
                        "reason": "ContainersNotReady",
                        "message": "containers with unready status: ["
                        + " ".join(c["name"] for c in spec.get("containers", []))
                        + "]",
                    },
                    {
                        "type": "ContainersReady",
                        "status": "False",
                        "lastProbeTime": None,
                        "lastTransitionTime": now,
                        "reason": "ContainersNotReady",
                        "message": "containers with unready status: ["
                        + " ".join(c["name"] for c in spec.get("containers", []))
                        + "]",
                    },
                    {
                        "type": "PodScheduled",
                        "status": "True",
                        "lastProbeTime": None,
                        "lastTransitionTime": now,
                    },
                ],
                "containerStatuses": [
                    {
                        "name": c["name"],
                        "image": c.get("image", ""),
                        "imageID": "",
                        "ready": False,
                        "started": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": "ContainerCreating"}},
                        "lastState": {},
                    }
                    for c in spec.get("containers", [])
                ],
            }
        )

    def _terminate(
        self, pod: Obj, phase: str, reason: str | None, message: str | None, exit_code: int
    ) -> None:
        now = _rfc3339(self.now())
        status = pod["status"]
        status["phase"] = phase
        for key, value in (("reason", reason), ("message", message)):
            if value is not None:
                status[key] = value
        for cond in status.get("conditions", []):
            if cond["type"] in ("Ready", "ContainersReady", "PodReadyToStartContainers"):
                cond.update(
                    status="False",
                    lastTransitionTime=now,
                    reason="PodCompleted" if phase == "Succeeded" else "PodFailed",
                )
                cond.pop("message", None)
        for cs in status.get("containerStatuses", []):
            started = (cs.get("state", {}).get("running") or {}).get("startedAt")
            cs["state"] = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": "Completed" if exit_code == 0 else "Error",
                    "startedAt": started,
                    "finishedAt": now,
                    "containerID": cs.get("containerID", ""),
                }
            }
            cs["ready"], cs["started"] = False, False

    # -- verbs -----------------------------------------------------------------------------

    def _check_namespace_exists(self, namespace: str) -> None:
        if namespace not in self._namespaces:
            raise not_found(namespace, "namespaces")

    def _create(self, namespace: str, raw: JSON, query: Mapping[str, str]) -> tuple[Obj, list[str]]:
        pod, warnings = decode_pod(raw, query.get("fieldValidation", "Warn"))
        meta = pod.setdefault("metadata", {})
        if meta.get("namespace") not in (None, "", namespace):
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        self._check_namespace_exists(namespace)
        if meta.get("resourceVersion"):
            raise internal_error("resourceVersion should not be set on objects to be created")
        meta["namespace"] = namespace
        generate = meta.get("generateName")
        if not meta.get("name") and generate:
            masked = (
                generate[:-1] + "a" if len(generate) > 1 and generate.endswith("-") else generate
            )
            prefix_errs = is_dns1123_subdomain(masked)
            if prefix_errs:
                raise invalid(
                    "", [_invalid("metadata.generateName", generate, m) for m in prefix_errs]
                )
            for _ in range(8):
                candidate = generate[:58] + "".join(
                    secrets.choice(_NAME_ALPHABET) for _ in range(5)
                )
                if (namespace, candidate) not in self._objects:
                    meta["name"] = candidate
                    break
        for key in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ):
            meta.pop(key, None)
        default_pod(pod)
        spec = pod["spec"]
        spec.setdefault("tolerations", [])
        for toleration in _DEFAULT_TOLERATIONS:
            if not any(t.get("key") == toleration["key"] for t in spec["tolerations"]):
                spec["tolerations"].append(dict(toleration))
        errs = validate_pod(pod)
        name = meta.get("name", "")
        if errs:
            raise invalid(name, errs)
        if (namespace, name) in self._objects:
            raise already_exists(name)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _rfc3339(self.now())
        pod["status"] = {"phase": "Pending", "qosClass": qos_class(pod)}
        if query.get("dryRun") == "All":
            meta["resourceVersion"] = ""
            return pod, warnings
        return self._commit("ADDED", pod, None), warnings

    def _update(
        self, namespace: str, name: str, new: Obj, old: Obj, query: Mapping[str, str]
    ) -> Obj:
        """The shared tail of PATCH and PUT: preconditions, validation, storage."""
        meta, old_meta = new.setdefault("metadata", {}), old["metadata"]
        if meta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the "
                f"URL ({name})"
            )
        if meta.get("namespace") not in (None, "", namespace):
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        if meta.get("uid") and meta["uid"] != old_meta["uid"]:
            raise conflict(
                name,
                f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: "
                f"{old_meta['uid']}",
            )
        if meta.get("resourceVersion") and meta["resourceVersion"] != old_meta["resourceVersion"]:
            raise conflict(
                name,
                "the object has been modified; please apply your changes to the latest version "
                "and try again",
            )
        meta["name"], meta["namespace"] = name, namespace
        for key in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generateName",
            "resourceVersion",
        ):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        new["status"] = copy.deepcopy(old["status"])  # status changes go through /status only
        default_pod(new)
        errs = validate_pod_update(new, old)
        if errs:
            raise invalid(name, errs)
        if new == old or query.get("dryRun") == "All":
            return copy.deepcopy(new)
        stored = self._commit("MODIFIED", new, copy.deepcopy(old))
        deleting = meta.get("deletionTimestamp")
        if deleting and not meta.get("finalizers") and self.now() >= _parse_rfc3339(deleting):
            return self._remove((namespace, name))
        return stored

    def _patch(self, namespace: str, name: str, req: _Request) -> tuple[Obj, list[str]]:
        content_type = req.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type not in _PATCH_TYPES:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {', '.join(_PATCH_TYPES)}",
            )
        old = self._objects.get((namespace, name))
        if old is None:
            raise not_found(name)
        try:
            patch = json.loads(req.body or b"null")
        except ValueError as exc:
            raise bad_request(f"error decoding patch: {exc}") from None
        current = copy.deepcopy(old)
        try:
            if content_type == "application/json-patch+json":
                patched = apply_json_patch(current, patch)
            elif not isinstance(patch, dict):
                raise PatchError(
                    f"json: cannot unmarshal {_json_type(patch)} into Go value of type "
                    "map[string]interface {}",
                    400,
                )
            elif content_type == "application/merge-patch+json":
                patched = apply_merge_patch(current, patch)
            else:
                patched = apply_strategic_merge_patch(current, patch)
        except PatchError as exc:
            if exc.code == 400:
                raise bad_request(str(exc)) from None
            raise ApiError(422, "Invalid", str(exc)) from None
        new, warnings = decode_pod(patched, req.query.get("fieldValidation", "Warn"))
        return self._update(namespace, name, new, copy.deepcopy(old), req.query), warnings

    def _replace(self, namespace: str, name: str, req: _Request) -> tuple[Obj, list[str]]:
        old = self._objects.get((namespace, name))
        body = self._json_body(req)
        new, warnings = decode_pod(body, req.query.get("fieldValidation", "Warn"))
        if old is None:
            raise not_found(name)
        return self._update(namespace, name, new, copy.deepcopy(old), req.query), warnings

    def _delete(self, namespace: str, name: str, options: Obj, query: Mapping[str, str]) -> Obj:
        pod = self._objects.get((namespace, name))
        if pod is None:
            raise not_found(name)
        meta = pod["metadata"]
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise conflict(
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, "
                f"UID in object meta: {meta['uid']}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise conflict(
                name,
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                f"ResourceVersion in object meta: {meta['resourceVersion']}",
            )
        grace = options.get("gracePeriodSeconds")
        if grace is None:
            grace = _parse_int("gracePeriodSeconds", query.get("gracePeriodSeconds"))
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        dry_run = query.get("dryRun") == "All" or options.get("dryRun") == ["All"]
        graceful = (
            self.graceful_deletion
            and grace > 0
            and pod["spec"].get("nodeName")
            and pod["status"].get("phase") not in ("Succeeded", "Failed")
        )
        if dry_run:
            return copy.deepcopy(pod)
        if graceful or meta.get("finalizers"):
            prev = copy.deepcopy(pod)
            when = self.now() + (grace if graceful else 0)
            existing = meta.get("deletionTimestamp")
            if existing is None or _parse_rfc3339(existing) > when:
                meta["deletionTimestamp"] = _rfc3339(when)
                meta["deletionGracePeriodSeconds"] = grace if graceful else 0
            if meta != prev["metadata"]:
                return self._commit("MODIFIED", pod, prev)
            return copy.deepcopy(pod)
        return self._remove((namespace, name))

    # -- HTTP ------------------------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            while True:
                try:
                    req = await self._read_request(reader)
                except _BadHttp as exc:
                    await self._write_json(
                        writer, 400, bad_request(str(exc)).status(), keep_alive=False
                    )
                    break
                if req is None:
                    break
                await self._handle(req, reader, writer)
                if not req.keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> _Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise _BadHttp("incomplete request") from None
            return None
        except asyncio.LimitOverrunError:
            raise _BadHttp("request headers too large") from None
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            raise _BadHttp(f"bad request line {lines[0]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadHttp(f"bad header line {line!r}")
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = bytearray()
            while True:
                size_line = await reader.readuntil(b"\r\n")
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _BadHttp("bad chunk size") from None
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    break
                body += await reader.readexactly(size)
                await reader.readexactly(2)
                if len(body) > MAX_BODY_BYTES:
                    raise _BadHttp("request body too large")
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                raise _BadHttp("bad content-length") from None
            if length > MAX_BODY_BYTES:
                raise _BadHttp("request body too large")
            body = bytearray(await reader.readexactly(length)) if length else bytearray()
        connection = headers.get("connection", "").lower()
        keep_alive = (
            "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
        )
        split = urlsplit(target)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        return _Request(
            method.upper(), target, unquote(split.path), query, headers, bytes(body), keep_alive
        )

    async def _write_json(
        self,
        writer: asyncio.StreamWriter,
        code: int,
        payload: JSON,
        *,
        keep_alive: bool = True,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        body = (
            payload
            if isinstance(payload, bytes)
            else json.dumps(payload, separators=(",", ":")).encode()
        )
        if content_type == "application/json" and not isinstance(payload, bytes):
            body += b"\n"
        head = [
            f"HTTP/1.1 {code} {http.HTTPStatus(code).phrase}",
            f"Audit-Id: {uuid.uuid4()}",
            "Cache-Control: no-cache, private",
            f"Content-Type: {content_type}",
            f"Date: {dt.datetime.now(dt.UTC).strftime('%a, %d %b %Y %H:%M:%S GMT')}",
            f"Content-Length: {len(body)}",
        ]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if not keep_alive:
            head.append("Connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    def _log(self, req: _Request, status: int) -> None:
        self.request_log.append(
            RequestRecord(
                req.method,
                req.path,
                dict(req.query),
                status,
                req.headers.get("content-type", ""),
                dict(req.headers),
                req.body,
            )
        )

    def _authenticate(self, req: _Request) -> None:
        auth = req.headers.get("authorization")
        if auth is None:
            if self.anonymous:
                if (req.path.rstrip("/") or "/") in _PUBLIC_PATHS:
                    return
                raise ApiError(
                    403,
                    "Forbidden",
                    f'{self._describe(req)} is forbidden: User "system:anonymous" cannot '
                    f'{self._verb(req)} resource "pods" in API group ""'
                    + (f' in the namespace "{ns}"' if (ns := self._namespace_of(req)) else ""),
                    {"kind": "pods"},
                )
            raise ApiError(401, "Unauthorized", "Unauthorized")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or token.strip() != self.token:
            raise ApiError(401, "Unauthorized", "Unauthorized")

    def _namespace_of(self, req: _Request) -> str | None:
        m = _PODS_RE.match(req.path)
        return m.group(1) if m else None

    def _describe(self, req: _Request) -> str:
        m = _PODS_RE.match(req.path)
        return f'pods "{m.group(2)}"' if m and m.group(2) else "pods"

    def _verb(self, req: _Request) -> str:
        m = _PODS_RE.match(req.path)
        named = bool(m and m.group(2))
        if req.method == "GET":
            return "get" if named else ("watch" if req.query.get("watch") else "list")
        return {
            "POST": "create",
            "PATCH": "patch",
            "PUT": "update",
            "DELETE": "delete" if named else "deletecollection",
        }.get(req.method, req.method.lower())

    async def _handle(
        self, req: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            self._authenticate(req)
            injection = self._match_injection(req)
            if injection is not None:
                if injection.delay:
                    await asyncio.sleep(injection.delay)
                if injection.status is not None:
                    raise injected_error(injection.status, injection.message)
            self.tick()
            await self._route(req, reader, writer)
        except ApiError as exc:
            self._log(req, exc.code)
            await self._write_json(
                writer, exc.code, exc.status(), keep_alive=req.keep_alive, headers=exc.headers
            )
        except Exception as exc:  # a bug in the fake: answer 500, keep the details
            self._log(req, 500)
            err = internal_error(f"fake API server bug: {type(exc).__name__}: {exc}")
            await self._write_json(writer, 500, err.status(), keep_alive=req.keep_alive)

    def _match_injection(self, req: _Request) -> _Injection | None:
        for inj in self._injections:
            if inj.times > 0 and inj.method in ("*", req.method) and inj.pattern.search(req.target):
                inj.times -= 1
                if inj.times == 0:
                    self._injections.remove(inj)
                return inj
        return None

    def _json_body(self, req: _Request) -> JSON:
        if not req.body.strip():
            raise bad_request("the request body is empty")  # a real server: EOF decoding
        try:
            return json.loads(req.body)
        except ValueError as exc:
            raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from None

    async def _ok(
        self,
        req: _Request,
        writer: asyncio.StreamWriter,
        code: int,
        payload: JSON,
        warnings: Sequence[str] = (),
        content_type: str = "application/json",
    ) -> None:
        self._log(req, code)
        headers = {}
        if warnings:
            self.warnings.extend(warnings)
            headers["Warning"] = ", ".join(f"299 - {json.dumps(w)}" for w in warnings)
        await self._write_json(
            writer,
            code,
            payload,
            keep_alive=req.keep_alive,
            headers=headers,
            content_type=content_type,
        )

    async def _route(
        self, req: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        path, method = req.path.rstrip("/") or "/", req.method
        if path in ("/healthz", "/livez", "/readyz"):
            await self._ok(req, writer, 200, b"ok", content_type="text/plain; charset=utf-8")
            return
        if path == "/version" and method == "GET":
            await self._ok(
                req,
                writer,
                200,
                {
                    **KUBE_VERSION,
                    "gitCommit": "0" * 40,
                    "gitTreeState": "clean",
                    "buildDate": "2025-04-23T13:00:00Z",
                    "goVersion": "go1.24.2",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                },
            )
            return
        if path == "/api" and method == "GET":
            await self._ok(
                req,
                writer,
                200,
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                    ],
                },
            )
            return
        if path == "/apis" and method == "GET":
            await self._ok(
                req, writer, 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
            )
            return
        if path == "/api/v1" and method == "GET":
            await self._ok(req, writer, 200, self._resource_list())
            return
        if path == "/api/v1/pods" and method == "GET":
            await self._list_or_watch(req, None, reader, writer)
            return
        m = _NAMESPACE_RE.match(path)
        if m:
            if method != "GET":
                raise ApiError(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )
            ns_name = m.group(1)
            if ns_name is None:
                items = [copy.deepcopy(v) for _, v in sorted(self._namespaces.items())]
                await self._ok(
                    req,
                    writer,
                    200,
                    {
                        "kind": "NamespaceList",
                        "apiVersion": "v1",
                        "metadata": {"resourceVersion": str(self._rv)},
                        "items": items,
                    },
                )
            else:
                ns_obj = self._namespaces.get(ns_name)
                if ns_obj is None:
                    raise not_found(ns_name, "namespaces")
                await self._ok(
                    req,
                    writer,
                    200,
                    {"kind": "Namespace", "apiVersion": "v1", **copy.deepcopy(ns_obj)},
                )
            return
        m = _PODS_RE.match(path)
        if m is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        namespace, name, status_sub = m.group(1), m.group(2), m.group(3)
        if status_sub:
            if method != "GET":
                raise ApiError(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )
            pod = self._objects.get((namespace, name))
            if pod is None:
                raise not_found(name)
            await self._ok(req, writer, 200, copy.deepcopy(pod))
            return
        if name is None:
            if method == "GET":
                await self._list_or_watch(req, namespace, reader, writer)
            elif method == "POST":
                created, warnings = self._create(namespace, self._json_body(req), req.query)
                await self._ok(req, writer, 201, created, warnings)
            elif method == "DELETE":
                await self._ok(req, writer, 200, self._delete_collection(namespace, req))
            else:
                raise ApiError(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )
            return
        if method == "GET":
            pod = self._objects.get((namespace, name))
            if pod is None:
                raise not_found(name)
            await self._ok(req, writer, 200, copy.deepcopy(pod))
        elif method == "PATCH":
            patched, warnings = self._patch(namespace, name, req)
            await self._ok(req, writer, 200, patched, warnings)
        elif method == "PUT":
            replaced, warnings = self._replace(namespace, name, req)
            await self._ok(req, writer, 200, replaced, warnings)
        elif method == "DELETE":
            await self._ok(
                req,
                writer,
                200,
                self._delete(namespace, name, self._delete_options(req), req.query),
            )
        else:
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )

    def _resource_list(self) -> Obj:
        return {
            "kind": "APIResourceList",
            "groupVersion": "v1",
            "resources": [
                {
                    "name": "namespaces",
                    "singularName": "namespace",
                    "namespaced": False,
                    "kind": "Namespace",
                    "verbs": ["get", "list"],
                    "shortNames": ["ns"],
                },
                {
                    "name": "pods",
                    "singularName": "pod",
                    "namespaced": True,
                    "kind": "Pod",
                    "verbs": [
                        "create",
                        "delete",
                        "deletecollection",
                        "get",
                        "list",
                        "patch",
                        "update",
                        "watch",
                    ],
                    "shortNames": ["po"],
                    "categories": ["all"],
                },
                {
                    "name": "pods/status",
                    "singularName": "",
                    "namespaced": True,
                    "kind": "Pod",
                    "verbs": ["get"],
                },
            ],
        }

    def _delete_options(self, req: _Request) -> Obj:
        if not req.body.strip():
            return {}
        body = self._json_body(req)
        if not isinstance(body, dict):
            raise bad_request("json: cannot unmarshal into Go value of type v1.DeleteOptions")
        return body

    def _selectors(self, query: Mapping[str, str]) -> tuple[list[Requirement], list[Requirement]]:
        try:
            return (
                parse_label_selector(query.get("labelSelector", "")),
                parse_field_selector(query.get("fieldSelector", "")),
            )
        except SelectorError as exc:
            raise bad_request(str(exc)) from None

    def _delete_collection(self, namespace: str, req: _Request) -> Obj:
        labels, fields = self._selectors(req.query)
        options = self._delete_options(req)
        deleted = []
        for (ns, name), pod in sorted(self._objects.items()):
            if ns != namespace:
                continue
            if labels_match(labels, pod["metadata"].get("labels")) and fields_match(fields, pod):
                deleted.append(_strip_list_item(self._delete(ns, name, options, req.query)))
        return {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": deleted,
        }

    async def _list_or_watch(
        self,
        req: _Request,
        namespace: str | None,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        labels, fields = self._selectors(req.query)
        if _parse_bool(req.query.get("watch")):
            await self._watch(req, namespace, labels, fields, reader, writer)
            return
        limit = _parse_int("limit", req.query.get("limit")) or 0
        token = req.query.get("continue", "")
        rv, start = self._rv, ""
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode() + b"==="))
                rv, start = int(decoded["rv"]), str(decoded["start"])
            except (ValueError, KeyError, TypeError):
                raise bad_request(
                    "continue key is not valid: incorrect encoded start resourceVersion "
                    "(version meta.k8s.io/v1)"
                ) from None
            if rv < self._base_rv:
                raise expired(
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter, or use the "
                    "continue token in this response to retrieve the remainder of the results. "
                    "Continuing with the provided token results in an inconsistent list - objects "
                    "that were created, modified, or deleted between the time the first chunk "
                    "was returned and now may show up in the list."
                )
        state = self._objects if not token else self._state_at(rv)
        items = [
            (f"{ns}/{name}", obj)
            for (ns, name), obj in sorted(state.items())
            if (namespace is None or ns == namespace)
            and f"{ns}/{name}" > start
            and labels_match(labels, obj["metadata"].get("labels"))
            and fields_match(fields, obj)
        ]
        meta: Obj = {"resourceVersion": str(rv)}
        if limit > 0 and len(items) > limit:
            last = items[limit - 1][0]
            meta["continue"] = (
                base64.urlsafe_b64encode(
                    json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": last}).encode()
                )
                .decode()
                .rstrip("=")
            )
            if not req.query.get("labelSelector") and not req.query.get("fieldSelector"):
                meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        await self._ok(
            req,
            writer,
            200,
            {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": meta,
                "items": [_strip_list_item(copy.deepcopy(obj)) for _, obj in items],
            },
        )

    async def _watch(
        self,
        req: _Request,
        namespace: str | None,
        labels: list[Requirement],
        fields: list[Requirement],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        timeout = _parse_int("timeoutSeconds", req.query.get("timeoutSeconds"))
        duration = float(timeout) if timeout is not None else self.watch_timeout
        rv_text = req.query.get("resourceVersion", "")
        watcher = _Watcher(
            namespace, labels, fields, _parse_bool(req.query.get("allowWatchBookmarks"))
        )
        initial: list[Obj] = []
        if rv_text in ("", "0"):
            initial = [
                {"type": "ADDED", "object": copy.deepcopy(obj)}
                for _, obj in sorted(self._objects.items())
                if watcher.selects(obj)
            ]
        else:
            if not re.fullmatch("[0-9]+", rv_text):
                raise bad_request(f'invalid resource version "{rv_text}"')  # a real one: 400 too
            since = int(rv_text)
            if since < self._base_rv:
                initial = [
                    {
                        "type": "ERROR",
                        "object": expired(
                            f"too old resource version: {since} ({self._base_rv + 1})"
                        ).status(),
                    }
                ]
                duration = 0.0
            else:
                for event in self._events:
                    if event.rv > since:
                        out = watcher.translate(event)
                        if out is not None:
                            initial.append(out)
        self._log(req, 200)
        writer.write(
            (
                "HTTP/1.1 200 OK\r\n"
                f"Audit-Id: {uuid.uuid4()}\r\n"
                "Cache-Control: no-cache, private\r\n"
                "Content-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )

        async def send(event: Obj) -> None:
            data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()

        self._watchers.append(watcher)
        eof = asyncio.ensure_future(reader.read(1))
        try:
            for first in initial:
                await send(first)
            deadline = time.monotonic() + duration
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                getter = asyncio.ensure_future(watcher.queue.get())
                done, _ = await asyncio.wait(
                    {getter, eof}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    if eof in done:  # the client went away
                        req.keep_alive = False
                        return
                    break
                item = getter.result()
                if item is None:  # stop()
                    req.keep_alive = False
                    break
                await send(item)
            with contextlib.suppress(ValueError):
                self._watchers.remove(watcher)
            if await self._stop_reading(eof):
                req.keep_alive = False
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            req.keep_alive = False
        finally:
            with contextlib.suppress(ValueError):
                self._watchers.remove(watcher)
            await self._stop_reading(eof)

    @staticmethod
    async def _stop_reading(eof: asyncio.Future[bytes]) -> bool:
        """Stop watching the connection for EOF; True if the client closed or sent bytes
        meanwhile (the connection cannot be kept alive then)."""
        if not eof.done():
            eof.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await eof
            return False
        return eof.cancelled() or True
