"""A scheduler and kubelet in miniature: they bind new pods to a node, report what tests tell
them (Running with an IP, Succeeded, Failed), fail pods past ``activeDeadlineSeconds``, and
finish graceful deletions.

A DELETE of a bound, running pod only sets ``deletionTimestamp`` (now + grace period), as on a
real server; the kubelet stops the containers (``stop_seconds`` after the DELETE, at most the
grace period) and then removes the pod, which watches see as DELETED.
"""

from __future__ import annotations

import copy
import datetime as dt
import secrets
import time
from collections.abc import Callable

from .errors import Obj
from .store import PodStore

PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")


def rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(int(ts), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


class Clock:
    """Wall-clock seconds, plus what tests advanced the fake's clock by."""

    def __init__(self, base: Callable[[], float] = time.time) -> None:
        self.base = base
        self.offset = 0.0

    def __call__(self) -> float:
        return self.base() + self.offset


def _condition(kind: str, ok: bool, now: str, reason: str | None = None) -> Obj:
    out: Obj = {"type": kind, "status": "True" if ok else "False"}
    out.update(lastProbeTime=None, lastTransitionTime=now)
    if reason:
        out["reason"] = reason
    return out


class Kubelet:
    """Moves pods through their lives on the fake's clock."""

    def __init__(
        self,
        store: PodStore,
        now: Callable[[], float],
        *,
        node_name: str | None = "fake-node",
        host_ip: str = "10.0.0.1",
        stop_seconds: float = 1.0,
    ) -> None:
        self.store = store
        self.now = now
        self.node_name = node_name
        self.host_ip = host_ip
        self.stop_seconds = stop_seconds
        self._stops: dict[tuple[str, str], float] = {}  # when a terminating pod's containers end

    def _must_get(self, namespace: str, name: str) -> Obj:
        pod = self.store.get(namespace, name)
        if pod is None:
            raise KeyError(f"no pod {namespace}/{name}")
        return pod

    def bind(self, pod: Obj) -> None:
        """What the scheduler and then the kubelet's first status update do."""
        spec, status = pod["spec"], pod["status"]
        if spec.get("nodeName"):
            return
        spec["nodeName"] = self.node_name or "fake-node"
        now = rfc3339(self.now())
        names = " ".join(c["name"] for c in spec.get("containers", []))
        status.update(
            hostIP=self.host_ip,
            hostIPs=[{"ip": self.host_ip}],
            startTime=now,
            conditions=[
                _condition("Initialized", True, now),
                _condition("Ready", False, now, "ContainersNotReady"),
                _condition("ContainersReady", False, now, "ContainersNotReady"),
                _condition("PodScheduled", True, now),
            ],
            containerStatuses=[
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
        )
        status["conditions"][1]["message"] = f"containers with unready status: [{names}]"

    def set_running(self, namespace: str, name: str, ip: str = "10.0.0.5") -> Obj:
        """What the kubelet reports once all containers run: phase Running, podIP, Ready."""
        pod = self._must_get(namespace, name)
        prev = copy.deepcopy(pod)
        self.bind(pod)
        now = rfc3339(self.now())
        status = pod["status"]
        status.update(phase="Running", podIP=ip, podIPs=[{"ip": ip}])
        kinds = ("Initialized", "Ready", "ContainersReady", "PodScheduled")
        status["conditions"] = [_condition(k, True, now) for k in kinds]
        for cs in status["containerStatuses"]:
            cs.update(ready=True, started=True, state={"running": {"startedAt": now}})
            cs["containerID"] = f"containerd://{secrets.token_hex(32)}"
        return self.store.commit("MODIFIED", pod, prev)

    def set_phase(self, namespace: str, name: str, phase: str, reason: str | None = None) -> Obj:
        """Sets ``status.phase`` as a kubelet would, containers and conditions included."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        if phase == "Running":
            ip = self._must_get(namespace, name)["status"].get("podIP") or "10.0.0.5"
            return self.set_running(namespace, name, ip)
        pod = self._must_get(namespace, name)
        prev = copy.deepcopy(pod)
        if phase in ("Succeeded", "Failed"):
            self._terminate(pod, phase, reason, None, exit_code=0 if phase == "Succeeded" else 1)
        else:
            pod["status"]["phase"] = phase
        return self.store.commit("MODIFIED", pod, prev)

    def _terminate(
        self, pod: Obj, phase: str, reason: str | None, message: str | None, exit_code: int
    ) -> None:
        now = rfc3339(self.now())
        status = pod["status"]
        status["phase"] = phase
        status.update({k: v for k, v in (("reason", reason), ("message", message)) if v})
        for cond in status.get("conditions", []):
            if cond["type"] in ("Ready", "ContainersReady"):
                why = "PodCompleted" if phase == "Succeeded" else "PodFailed"
                cond.update(status="False", lastTransitionTime=now, reason=why)
                cond.pop("message", None)
        for cs in status.get("containerStatuses", []):
            started = (cs.get("state", {}).get("running") or {}).get("startedAt")
            ended = "Completed" if exit_code == 0 else "Error"
            terminated = {"exitCode": exit_code, "reason": ended, "startedAt": started}
            cs["state"] = {"terminated": {**terminated, "finishedAt": now}}
            cs["ready"], cs["started"] = False, False

    def delete(self, pod: Obj, grace: int) -> Obj:
        """A DELETE: graceful for a bound pod that still runs, else at once."""
        meta, namespace, name = (
            pod["metadata"],
            pod["metadata"]["namespace"],
            pod["metadata"]["name"],
        )
        running = pod["spec"].get("nodeName") and pod["status"].get("phase") not in (
            "Succeeded",
            "Failed",
        )
        if grace <= 0 or not running:
            return self.store.remove(namespace, name)
        when = self.now() + grace
        existing = meta.get("deletionTimestamp")
        if existing is not None and parse_rfc3339(existing) <= when:
            return copy.deepcopy(pod)  # deleting already, no sooner: nothing changes
        prev = copy.deepcopy(pod)
        meta["deletionTimestamp"] = rfc3339(when)
        meta["deletionGracePeriodSeconds"] = grace
        self._stops[(namespace, name)] = self.now() + min(grace, self.stop_seconds)
        return self.store.commit("MODIFIED", pod, prev)

    def tick(self) -> None:
        """Binds new pods, fails pods past their deadline, removes terminated pods that were
        being deleted. Runs before every request and a few times a second."""
        now = self.now()
        for (namespace, name), stop in list(self._stops.items()):
            if now >= stop:
                del self._stops[(namespace, name)]
                if self.store.get(namespace, name) is not None:
                    self.store.remove(namespace, name)
        for pod in list(self.store.objects.values()):
            spec, status = pod["spec"], pod["status"]
            if pod["metadata"].get("deletionTimestamp"):
                continue
            if self.node_name is not None and not spec.get("nodeName"):
                prev = copy.deepcopy(pod)
                self.bind(pod)
                self.store.commit("MODIFIED", pod, prev)
            deadline, start = spec.get("activeDeadlineSeconds"), status.get("startTime")
            if (
                deadline is not None
                and start is not None
                and status.get("phase") in ("Pending", "Running")
                and now >= parse_rfc3339(start) + deadline
            ):
                prev = copy.deepcopy(pod)
                message = "Pod was active on the node longer than the specified deadline"
                self._terminate(pod, "Failed", "DeadlineExceeded", message, exit_code=137)
                self.store.commit("MODIFIED", pod, prev)
