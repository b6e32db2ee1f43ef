"""Pod Security admission (k8s.io/pod-security-admission), the ``restricted`` level, as a
namespace labelled ``pod-security.kubernetes.io/enforce=restricted`` enforces it on create.

The checks of the baseline and restricted policies that concern pods like Paygress's; the
message is the API server's: ``pods "x" is forbidden: violates PodSecurity
"restricted:latest": <check> (<detail>), ...``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Final

from .errors import Obj, forbidden

ENFORCE_LABEL: Final = "pod-security.kubernetes.io/enforce"
RESTRICTED_LABELS: Final = {ENFORCE_LABEL: "restricted"}
ALLOWED_VOLUMES: Final = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)


def _containers(which: Iterable[str]) -> str:
    names = list(which)
    quoted = ", ".join(json.dumps(n) for n in names)
    return f"container {quoted}" if len(names) == 1 else f"containers {quoted}"


def restricted_violations(pod: Obj) -> list[str]:
    """The restricted policy's findings for a pod, in the API server's words and order."""
    spec = pod.get("spec", {})
    pod_sc = spec.get("securityContext") or {}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    found: list[str] = []

    def context(c: Obj) -> Obj:
        return c.get("securityContext") or {}

    def check(title: str, bad: list[str], detail: str, who: str = "") -> None:
        if bad:
            found.append(f"{title} ({who}{_containers(bad)} {detail})")

    host = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    if host:
        found.append(f"host namespaces ({', '.join(host)})")
    check(
        "privileged",
        [c["name"] for c in containers if context(c).get("privileged")],
        "must not set securityContext.privileged=true",
    )
    host_ports = [
        f"{json.dumps(c['name'])} uses hostPort {p['hostPort']}"
        for c in containers
        for p in c.get("ports") or []
        if p.get("hostPort")
    ]
    if host_ports:
        found.append(f"hostPort (container {', '.join(host_ports)})")
    volumes = [
        (v.get("name", ""), kind)
        for v in spec.get("volumes") or []
        for kind in v
        if kind != "name" and kind not in ALLOWED_VOLUMES
    ]
    if volumes:
        listed = ", ".join(
            f"volume {json.dumps(n)} uses restricted volume type {json.dumps(k)}"
            for n, k in volumes
        )
        found.append(f"restricted volume types ({listed})")
    check(
        "allowPrivilegeEscalation != false",
        [c["name"] for c in containers if context(c).get("allowPrivilegeEscalation") is not False],
        "must set securityContext.allowPrivilegeEscalation=false",
    )
    caps = {c["name"]: context(c).get("capabilities") or {} for c in containers}
    undropped = [n for n, cap in caps.items() if "ALL" not in (cap.get("drop") or [])]
    details = [f'{_containers(undropped)} must set securityContext.capabilities.drop=["ALL"]']
    details = details if undropped else []
    for name, cap in caps.items():
        added = [a for a in cap.get("add") or [] if a != "NET_BIND_SERVICE"]
        if added:
            quoted = ", ".join(json.dumps(a) for a in added)
            details.append(
                f"{_containers([name])} must not include {quoted} in "
                "securityContext.capabilities.add"
            )
    if details:
        found.append(f"unrestricted capabilities ({'; '.join(details)})")
    if pod_sc.get("runAsNonRoot") is False:
        found.append("runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false)")
    else:
        check(
            "runAsNonRoot != true",
            [
                c["name"]
                for c in containers
                if context(c).get("runAsNonRoot") is not True
                and not (pod_sc.get("runAsNonRoot") is True and "runAsNonRoot" not in context(c))
            ],
            "must set securityContext.runAsNonRoot=true",
            "pod or ",
        )
    if pod_sc.get("runAsUser") == 0:
        found.append("runAsUser=0 (pod must not set runAsUser=0)")
    check(
        "runAsUser=0",
        [c["name"] for c in containers if context(c).get("runAsUser") == 0],
        "must not set runAsUser=0",
    )
    good = ("RuntimeDefault", "Localhost")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    check(
        "seccompProfile",
        [
            c["name"]
            for c in containers
            if (context(c).get("seccompProfile") or {}).get("type", pod_seccomp) not in good
        ],
        'must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"',
        "pod or ",
    )
    return found


def admit(pod: Obj, namespace_labels: Mapping[str, str]) -> None:
    """Raises the 403 a namespace enforcing ``restricted`` gives a pod that violates it."""
    if namespace_labels.get(ENFORCE_LABEL) != "restricted":
        return
    violations = restricted_violations(pod)
    if violations:
        name = pod.get("metadata", {}).get("name", "")
        why = 'violates PodSecurity "restricted:latest": ' + ", ".join(violations)
        raise forbidden(name, why)
