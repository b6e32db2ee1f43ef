"""What the API server does with a pod body before storing it: decode (JSON types and field
names from the client's generated models), default, validate on create, validate an update.

Messages follow k8s.io/apimachinery/pkg/util/validation and pkg/apis/core/validation for the
fields a pod of Paygress has; match on field and reason, not always on the whole text.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any, Final

from .errors import (
    FieldError,
    Obj,
    bad_request,
    decode_error,
    forbidden_field,
    invalid_value,
    required,
    unsupported,
)

MAX_INT32: Final = 2**31 - 1
TOTAL_ANNOTATION_SIZE_LIMIT: Final = 256 * 1024

# -- names (k8s.io/apimachinery/pkg/util/validation) ---------------------------------------------

_LABEL_FMT: Final = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN_FMT: Final = _LABEL_FMT + r"(\." + _LABEL_FMT + ")*"
_QUALIFIED_FMT: Final = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE_FMT: Final = "(" + _QUALIFIED_FMT + ")?"


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    shown = " or ".join(f"'{e}'" for e in examples)
    return f"{msg} (e.g. {shown}, regex used for validation is '{fmt}')"


def is_dns1123_label(value: str) -> list[str]:
    errs = ["must be no more than 63 characters"] if len(value) > 63 else []
    if not re.fullmatch(_LABEL_FMT, value):
        errs.append(
            _regex_error(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
                "or '-', and must start and end with an alphanumeric character",
                _LABEL_FMT,
                "my-name",
                "123-abc",
            )
        )
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    errs = ["must be no more than 253 characters"] if len(value) > 253 else []
    if not re.fullmatch(_SUBDOMAIN_FMT, value):
        errs.append(
            _regex_error(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character",
                _SUBDOMAIN_FMT,
                "example.com",
            )
        )
    return errs


def is_qualified_name(value: str) -> list[str]:
    """Label and annotation keys: ``[prefix/]name``."""
    prefix, slash, name = value.rpartition("/")
    if value.count("/") > 1:
        return ["a qualified name must have at most one '/'"]
    errs: list[str] = []
    if slash:
        if not prefix:
            errs.append("prefix part must be non-empty")
        errs += ["prefix part " + m for m in is_dns1123_subdomain(prefix)] if prefix else []
    if not name:
        return [*errs, "name part must be non-empty"]
    if len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if not re.fullmatch(_QUALIFIED_FMT, name):
        errs.append(
            "name part "
            + _regex_error(
                "must consist of alphanumeric characters, '-', '_' or '.', and must start and "
                "end with an alphanumeric character",
                _QUALIFIED_FMT,
                "MyName",
                "my.name",
                "123-abc",
            )
        )
    return errs


def is_valid_label_value(value: str) -> list[str]:
    errs = ["must be no more than 63 characters"] if len(value) > 63 else []
    if not re.fullmatch(_LABEL_VALUE_FMT, value):
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


# -- quantities (k8s.io/apimachinery/pkg/api/resource) ------------------------------------------

QUANTITY_ERROR: Final = (
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)
_QUANTITY: Final = re.compile(r"([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)")
_DECIMAL: Final = {"": 0, "n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15}
_BINARY: Final = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}


def parse_quantity(text: Any) -> Fraction:
    """The value of a quantity, refused as the API server refuses it (a decode error: 400).
    Finer than a nano rounds up. The fake stores the text as sent (a real server may store a
    canonical spelling, "0.5" as "500m")."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        text = str(text)
    match = _QUANTITY.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None or match.group(1).count(".") > 1 or match.group(1) in (".", "+.", "-."):
        raise decode_error(QUANTITY_ERROR)
    number, suffix = match.groups()
    if suffix in _DECIMAL:
        scale = Fraction(10) ** _DECIMAL[suffix]
    elif suffix == "E":
        scale = Fraction(10) ** 18
    elif suffix in _BINARY:
        scale = Fraction(2) ** _BINARY[suffix]
    elif re.fullmatch(r"[eE][+-]?[0-9]+", suffix):
        scale = Fraction(10) ** int(suffix[1:])
    else:
        raise decode_error("unable to parse quantity's suffix")
    value = Fraction(number) * scale
    return Fraction(math.ceil(value * 10**9), 10**9)


# -- decoding: JSON types and field names from the client's models ------------------------------

_GO_TYPES: Final = {"str": "string", "int": "int64", "bool": "bool", "float": "float64"}
_QUANTITY_MAPS: Final = frozenset({"limits", "requests", "overhead"})


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "bool"), (int | float, "number"), (str, "string")):
        if isinstance(value, kind):
            return name
    return "array" if isinstance(value, list) else "object" if isinstance(value, dict) else "null"


def _model(name: str) -> Any:
    from kubernetes_asyncio.client import models

    return getattr(models, name, None)


class _Decoder:
    """Wrong JSON types are decode errors (400); unknown fields are dropped with a warning, or
    refused with ``fieldValidation=Strict``; quantities must parse."""

    def __init__(self) -> None:
        self.unknown: list[str] = []

    def decode(self, value: Any, type_name: str, path: str, struct: str, attr: str) -> Any:
        if value is None or type_name == "object":
            return value

        def mismatch(go_type: str) -> Exception:
            return decode_error(
                f"json: cannot unmarshal {_json_type(value)} into Go struct field "
                f"{struct}.{path} of type {go_type}"
            )

        if type_name in _GO_TYPES:
            if type_name == "int" and isinstance(value, float) and value.is_integer():
                return int(value)
            python = {"str": str, "int": int, "bool": bool, "float": int | float}[type_name]
            if not isinstance(value, python) or (isinstance(value, bool) and type_name != "bool"):
                raise mismatch(_GO_TYPES[type_name])
            return value
        if type_name == "datetime":
            if not isinstance(value, str):
                raise mismatch("string")
            return value
        if type_name.startswith("list["):
            if not isinstance(value, list):
                raise mismatch(f"[]{type_name[5:-1]}")
            return [self.decode(v, type_name[5:-1], path, struct, attr) for v in value]
        if type_name.startswith("dict("):
            inner = type_name[5:-1].split(",", 1)[1].strip()
            if not isinstance(value, dict):
                raise mismatch(f"map[string]{_GO_TYPES.get(inner, inner)}")
            if attr in _QUANTITY_MAPS:
                for quantity in value.values():
                    parse_quantity(quantity)
                return {k: str(v) for k, v in value.items()}
            return {k: self.decode(v, inner, path, struct, attr) for k, v in value.items()}
        model = _model(type_name)
        if model is None:
            return value
        if not isinstance(value, dict):
            raise mismatch(f"v1.{type_name.removeprefix('V1')}")
        by_json = {j: a for a, j in model.attribute_map.items()}
        out = {}
        for key, sub in value.items():
            sub_path = f"{path}.{key}" if path else key
            if key not in by_json:
                self.unknown.append(sub_path)
                continue
            kind = model.openapi_types[by_json[key]]
            decoded = self.decode(sub, kind, sub_path, type_name.removeprefix("V1"), key)
            if decoded is not None:
                out[key] = decoded
        return out


def decode_pod(raw: Any, field_validation: str) -> tuple[Obj, list[str]]:
    """(pod, warnings); raises ApiError 400 for undecodable bodies."""
    if not isinstance(raw, dict):
        raise bad_request(f"json: cannot unmarshal {_json_type(raw)} into Go value of type v1.Pod")
    kind, version = raw.get("kind", "Pod"), raw.get("apiVersion", "v1")
    if kind not in ("Pod", "") or version not in ("v1", ""):
        raise bad_request(f"the fake API server serves only v1 Pods, not {version} {kind}")
    decoder = _Decoder()
    pod = decoder.decode(raw, "V1Pod", "", "", "")
    pod["kind"], pod["apiVersion"] = "Pod", "v1"
    unknown = [f'unknown field "{p}"' for p in decoder.unknown]
    if unknown and field_validation == "Strict":
        raise decode_error("strict decoding error: " + ", ".join(unknown))
    return pod, ([] if field_validation == "Ignore" else unknown)


# -- defaulting (SetObjectDefaults_Pod, for the fields a Paygress pod has) -----------------------

DEFAULT_TOLERATIONS: Final = tuple(
    {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
)


def default_pod(pod: Obj) -> None:
    """The defaults the API server fills in; only missing fields."""
    spec = pod.setdefault("spec", {})
    for key, value in (
        ("restartPolicy", "Always"),
        ("terminationGracePeriodSeconds", 30),
        ("dnsPolicy", "ClusterFirst"),
        ("securityContext", {}),
        ("schedulerName", "default-scheduler"),
        ("enableServiceLinks", True),
        ("priority", 0),
    ):
        spec.setdefault(key, value)
    for container in spec.get("containers") or []:
        image = container.get("image") or ""
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        pull = "IfNotPresent" if "@" in image or tag not in ("", "latest") else "Always"
        container.setdefault("imagePullPolicy", pull)
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        resources = container.setdefault("resources", {})
        for name, value in (resources.get("limits") or {}).items():
            resources.setdefault("requests", {}).setdefault(name, value)
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")


def qos_class(pod: Obj) -> str:
    resources = [c.get("resources") or {} for c in pod["spec"].get("containers") or []]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    for r in resources:
        requests, limits = r.get("requests") or {}, r.get("limits") or {}
        for name in ("cpu", "memory"):
            if name not in limits or name not in requests:
                return "Burstable"
            if parse_quantity(requests[name]) != parse_quantity(limits[name]):
                return "Burstable"
    return "Guaranteed"


# -- validation ----------------------------------------------------------------------------------


def _labels(labels: Mapping[str, str], path: str) -> list[FieldError]:
    errs = [invalid_value(path, k, m) for k in labels for m in is_qualified_name(k)]
    return errs + [
        invalid_value(path, v, m) for v in labels.values() for m in is_valid_label_value(v)
    ]


def _metadata(meta: Obj) -> list[FieldError]:
    name = meta.get("name", "")
    errs = [invalid_value("metadata.name", name, m) for m in is_dns1123_subdomain(name)]
    if not name:
        errs = [required("metadata.name", "name or generateName is required")]
    errs += _labels(meta.get("labels") or {}, "metadata.labels")
    annotations: dict[str, str] = meta.get("annotations") or {}
    for key in annotations:
        errs += [invalid_value("metadata.annotations", key, m) for m in is_qualified_name(key)]
    if sum(len(k) + len(v) for k, v in annotations.items()) > TOTAL_ANNOTATION_SIZE_LIMIT:
        detail = f"may not be more than {TOTAL_ANNOTATION_SIZE_LIMIT} bytes"
        errs.append(FieldError("Too long", "metadata.annotations", None, detail))
    return errs


def _resources(resources: Obj, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    limits: dict[str, str] = resources.get("limits") or {}
    requests: dict[str, str] = resources.get("requests") or {}
    for kind, values in (("limits", limits), ("requests", requests)):
        for name, text in values.items():
            where = f"{path}.{kind}[{name}]"
            if name not in ("cpu", "memory", "ephemeral-storage") and "/" not in name:
                errs.append(
                    invalid_value(
                        where, name, "must be a standard resource type or fully qualified"
                    )
                )
            elif parse_quantity(text) < 0:
                errs.append(invalid_value(where, text, "must be greater than or equal to 0"))
    for name, text in requests.items():
        if name in limits and parse_quantity(text) > parse_quantity(limits[name]):
            detail = f"must be less than or equal to {name} limit of {limits[name]}"
            errs.append(invalid_value(f"{path}.requests", text, detail))
    return errs


def _container(c: Obj, path: str) -> list[FieldError]:
    name, image = c.get("name", ""), c.get("image", "")
    errs = [invalid_value(f"{path}.name", name, m) for m in is_dns1123_label(name)]
    if not name:
        errs = [required(f"{path}.name")]
    if not image:
        errs.append(required(f"{path}.image"))
    elif image != image.strip():
        detail = "must not have leading or trailing whitespace"
        errs.append(invalid_value(f"{path}.image", image, detail))
    pull = c.get("imagePullPolicy")
    if pull not in ("Always", "IfNotPresent", "Never"):
        errs.append(
            unsupported(f"{path}.imagePullPolicy", pull, ("Always", "IfNotPresent", "Never"))
        )
    for i, port in enumerate(c.get("ports") or []):
        where, number = f"{path}.ports[{i}]", port.get("containerPort", 0)
        if not number:
            errs.append(required(f"{where}.containerPort"))
        elif not 1 <= number <= 65535:
            detail = "must be between 1 and 65535, inclusive"
            errs.append(invalid_value(f"{where}.containerPort", number, detail))
        if port.get("protocol") not in ("TCP", "UDP", "SCTP"):
            errs.append(
                unsupported(f"{where}.protocol", port.get("protocol"), ("SCTP", "TCP", "UDP"))
            )
        port_name = port.get("name", "")
        if port_name and (
            len(port_name) > 15 or not re.fullmatch("[a-z0-9]([-a-z0-9]*[a-z0-9])?", port_name)
        ):
            detail = "must be no more than 15 characters and contain only a-z, 0-9 and '-'"
            errs.append(invalid_value(f"{where}.name", port_name, detail))
    return errs + _resources(c.get("resources") or {}, f"{path}.resources")


def validate_pod(pod: Obj) -> list[FieldError]:
    """ValidatePod (after defaulting), for the fields a pod of Paygress has."""
    errs = _metadata(pod.get("metadata", {}))
    spec = pod.get("spec", {})
    containers = spec.get("containers") or []
    if not containers:
        errs.append(required("spec.containers"))
    seen: set[str] = set()
    for i, container in enumerate(containers):
        errs += _container(container, f"spec.containers[{i}]")
        if container.get("name") in seen:
            errs.append(
                FieldError("Duplicate value", f"spec.containers[{i}].name", container["name"])
            )
        seen.add(container.get("name", ""))
    policies = ("Always", "OnFailure", "Never")
    if spec.get("restartPolicy") not in policies:
        errs.append(unsupported("spec.restartPolicy", spec.get("restartPolicy"), policies))
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and not 1 <= deadline <= MAX_INT32:
        detail = f"must be between 1 and {MAX_INT32}, inclusive"
        errs.append(invalid_value("spec.activeDeadlineSeconds", deadline, detail))
    return errs


UPDATE_FORBIDDEN: Final = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
    "(allow it to be set to 1 if it was previously negative)"
)


def validate_update(new: Obj, old: Obj) -> list[FieldError]:
    """ValidatePodUpdate: on a live pod, only images may change, activeDeadlineSeconds may be
    set or lowered (never raised or removed), tolerations may be added."""
    errs = validate_pod(new)
    new_spec, old_spec = new.get("spec", {}), old.get("spec", {})
    new_deadline, old_deadline = (
        new_spec.get("activeDeadlineSeconds"),
        old_spec.get("activeDeadlineSeconds"),
    )
    if old_deadline is not None and new_deadline is None:
        detail = "must not update from a positive integer to nil value"
        return [*errs, invalid_value("spec.activeDeadlineSeconds", None, detail)]
    if old_deadline is not None and new_deadline > old_deadline:
        detail = "must be less than or equal to previous value"
        return [*errs, invalid_value("spec.activeDeadlineSeconds", new_deadline, detail)]
    if len(new_spec.get("containers") or []) != len(old_spec.get("containers") or []):
        return [
            *errs,
            forbidden_field("spec.containers", "pod updates may not add or remove containers"),
        ]
    munged = copy.deepcopy(new_spec)
    for mine, theirs in zip(
        munged.get("containers") or [], old_spec.get("containers") or [], strict=True
    ):
        mine["image"] = theirs.get("image")
    munged["activeDeadlineSeconds"] = old_deadline
    if all(t in (munged.get("tolerations") or []) for t in old_spec.get("tolerations") or []):
        munged["tolerations"] = old_spec.get("tolerations")
    if {k: v for k, v in munged.items() if v is not None} != {
        k: v for k, v in old_spec.items() if v is not None
    }:
        errs.append(forbidden_field("spec", UPDATE_FORBIDDEN))
    return errs
