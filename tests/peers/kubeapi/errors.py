"""Error answers as the API server gives them: a status code and a ``metav1.Status`` body
(k8s.io/apimachinery/pkg/api/errors), and the field errors of a 422 (.../util/validation/field)."""

from __future__ import annotations

import http
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

Obj = dict[str, Any]


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


def already_exists(name: str) -> ApiError:
    details = {"name": name, "kind": "pods"}
    return ApiError(409, "AlreadyExists", f'pods "{name}" already exists', details)


def conflict(name: str, why: str) -> ApiError:
    message = f'Operation cannot be fulfilled on pods "{name}": {why}'
    return ApiError(409, "Conflict", message, {"name": name, "kind": "pods"})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(name: str | None, message: str) -> ApiError:
    """403 as RBAC and admission plugins give it: ``pods "x" is forbidden: <why>``."""
    subject = f'pods "{name}"' if name else "pods"
    details: Obj = {"kind": "pods"} if not name else {"name": name, "kind": "pods"}
    return ApiError(403, "Forbidden", f"{subject} is forbidden: {message}", details)


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


def not_implemented(what: str) -> ApiError:
    """What a real server accepts but this fake does not: refused loudly (400), never
    answered wrongly, so that a new kind of call from Paygress shows up at once."""
    return bad_request(f"the fake API server does not implement {what}")


def injected_error(code: int, message: str | None = None) -> ApiError:
    """The error a real server (or something in front of it) sends with this status code."""
    if code == 500:
        return internal_error(message or "injected failure")
    if code == 429:
        return ApiError(
            429,
            "TooManyRequests",
            message or "Too many requests, please try again later.",
            {"retryAfterSeconds": 1},
            {"Retry-After": "1"},
        )
    reasons = {
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        409: "Conflict",
        503: "ServiceUnavailable",
        504: "Timeout",
    }
    return ApiError(code, reasons.get(code, "Unknown"), message or http.HTTPStatus(code).phrase)


# -- field errors (a 422's causes) -------------------------------------------------------------

_CAUSE_TYPES: Final = {
    "Required value": "FieldValueRequired",
    "Invalid value": "FieldValueInvalid",
    "Forbidden": "FieldValueForbidden",
    "Duplicate value": "FieldValueDuplicate",
    "Unsupported value": "FieldValueNotSupported",
    "Too long": "FieldValueTooLong",
}
_NO_VALUE_TYPES: Final = frozenset({"Required value", "Forbidden", "Too long"})


def go_value(value: Any) -> str:
    """How field.Error prints a bad value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class FieldError:
    """One ``field.Error``: ``spec.containers[0].image: Required value``."""

    type: str
    field: str
    value: Any = None
    detail: str = ""

    def body(self) -> str:
        text = self.type if self.type in _NO_VALUE_TYPES else f"{self.type}: {go_value(self.value)}"
        return f"{text}: {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"

    def cause(self) -> Obj:
        return {"reason": _CAUSE_TYPES[self.type], "message": self.body(), "field": self.field}


def required(path: str, detail: str = "") -> FieldError:
    return FieldError("Required value", path, None, detail)


def invalid_value(path: str, value: Any, detail: str) -> FieldError:
    return FieldError("Invalid value", path, value, detail)


def forbidden_field(path: str, detail: str) -> FieldError:
    return FieldError("Forbidden", path, None, detail)


def unsupported(path: str, value: Any, supported: Sequence[str]) -> FieldError:
    quoted = ", ".join(json.dumps(s) for s in sorted(supported))
    return FieldError("Unsupported value", path, value, f"supported values: {quoted}")


def invalid(name: str, errors: Sequence[FieldError]) -> ApiError:
    """422 Invalid with every field error (duplicates dropped, as errs.ToAggregate() does)."""
    messages: list[str] = []
    for err in errors:
        if str(err) not in messages:
            messages.append(str(err))
    agg = messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"
    return ApiError(
        422,
        "Invalid",
        f'Pod "{name}" is invalid: {agg}',
        {"name": name, "kind": "Pod", "causes": [e.cause() for e in errors]},
    )
