"""Pods for payment through kubernetes_asyncio: create, watch, keep the expiry, reap.

What runs is the cluster's; what was paid is the grant store's. Every pod carries its paid end
in an annotation, and the annotation follows the durable paid end (the grants that reach the
pod, written before any PATCH): a PATCH that fails is retried by the keeper loop until the
annotation matches, and no pod is reaped before its durable paid end.

The in-memory view is fed like client-go's informer: one LIST, then a WATCH that resumes from
the last resourceVersion it saw (with bookmarks), re-listing only after 410 Gone. Every failure
of LIST or WATCH (an API server that is down, or answers 403 while RBAC is not ready yet) is
retried with backoff. Reading the view costs no API call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from paygress.config import KubernetesConfig
from paygress.core.ports import (
    PodExists,
    PodNotFound,
    PodRequest,
    PodsError,
    PodsRefused,
    PodState,
    PodsUnavailable,
)

log = logging.getLogger("paygress.pods")
T = TypeVar("T")
PaidEnd = Callable[[str], Awaitable[float]]

MANAGED_BY = "app.kubernetes.io/managed-by"
TIER_LABEL = "paygress.io/tier"
GRANT_LABEL = "paygress.io/grant"
ROUTE_LABEL = "paygress.io/route"
EXPIRES_ANNOTATION = "paygress.io/expires-at"
PAID_ANNOTATION = "paygress.io/paid"
SELECTOR = f"{MANAGED_BY}=paygress"
RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})
MERGE_PATCH = "application/merge-patch+json"
DELETE_GRACE_SECONDS = 10
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 10.0


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        return None


def pod_manifest(req: PodRequest, namespace: str, grace_seconds: int) -> dict[str, Any]:
    """The pod for a grant: restricted security, no API token, labels for selection, the
    expiry annotation, and a hard deadline at the tier's maximum lifetime.

    `activeDeadlineSeconds` can be lowered but never raised on a live pod, so it is set to
    the longest life any top-up may reach (max_seconds): Kubernetes stops the pod by then even
    if no Paygress runs. The paid end, which top-ups move, is the annotation the reaper reads.
    """
    tier = req.tier
    resources = {"cpu": tier.cpu, "memory": tier.memory}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": req.name,
            "namespace": namespace,
            "labels": {
                MANAGED_BY: "paygress",
                TIER_LABEL: tier.id,
                GRANT_LABEL: req.grant_id[:32],
                ROUTE_LABEL: _label_value(req.route),
            },
            "annotations": {
                EXPIRES_ANNOTATION: rfc3339(req.expires_at),
                PAID_ANNOTATION: str(req.paid),
            },
        },
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "restartPolicy": "Always",
            "activeDeadlineSeconds": tier.max_seconds + grace_seconds,
            "terminationGracePeriodSeconds": DELETE_GRACE_SECONDS,
            "securityContext": {
                "runAsNonRoot": True,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "workload",
                    "image": req.image,
                    "ports": [{"name": "http", "containerPort": tier.port, "protocol": "TCP"}],
                    "resources": {"requests": resources, "limits": resources},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "privileged": False,
                        "runAsNonRoot": True,
                        "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                }
            ],
        },
    }


def _label_value(text: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:63]
    return safe.strip("-_.") or "route"


def state_of(pod: Any) -> PodState:
    """A PodState from a V1Pod as the client returns it. A pod with a deletionTimestamp is
    terminating: it may run for its grace period still, but is gone for routing."""
    meta, status = pod.metadata, pod.status
    annotations = (meta.annotations or {}) if meta else {}
    expires = parse_rfc3339(annotations.get(EXPIRES_ANNOTATION, "")) or 0.0
    phase = (status.phase if status else None) or "Pending"
    ready = any(
        c.type == "Ready" and c.status == "True"
        for c in ((status.conditions or []) if status else [])
    )
    return PodState(
        name=meta.name,
        phase=phase,
        ip=(status.pod_ip if status else None) or None,
        ready=ready,
        expires_at=expires,
        terminating=meta.deletion_timestamp is not None,
    )


@dataclass
class Kept:
    """What one pass of the keeper did."""

    reaped: list[str] = field(default_factory=list)
    patched: list[str] = field(default_factory=list)


class KubePods:
    """The Pods port on a real API server (or anything that speaks its pods API).

    `paid_end(name)` gives a pod's durable paid end (the grant store's; 0 when unknown): the
    keeper never reaps a pod before it and moves a lagging annotation up to it.
    """

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        *,
        grace_seconds: int = 30,
        reaper_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
        attempts: int = 3,
        on_event: Callable[[str], None] | None = None,
        paid_end: PaidEnd | None = None,
        watch_seconds: int = 300,
        call_timeout: float = 5.0,
        retry_delay: float = 0.2,
    ) -> None:
        self.api_client = api
        self.core: Any = client.CoreV1Api(api)  # loosely typed: bodies are plain dicts
        self.namespace = namespace
        self.grace_seconds = grace_seconds
        self.reaper_interval = reaper_interval
        self.clock = clock
        self.attempts = attempts
        self.on_event = on_event or (lambda _name: None)
        self.paid_end = paid_end
        self.watch_seconds = watch_seconds
        self.call_timeout = call_timeout
        self.retry_delay = retry_delay
        self.resource_version: str | None = None  # where the watch resumes; None: LIST first
        self._view: dict[str, PodState] = {}
        self._deleted: set[str] = set()  # DELETE sent and accepted: never again, until gone
        self._check: set[str] = set()  # the annotation may lag the durable paid end
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def connect(cls, kube: KubernetesConfig, **kwargs: Any) -> KubePods:
        """Client from a kubeconfig (path in the config or $KUBECONFIG), else in-cluster."""
        configuration = client.Configuration()
        if kube.kubeconfig:
            if not await asyncio.to_thread(Path(kube.kubeconfig).is_file):
                raise ValueError(f"kubernetes.kubeconfig {kube.kubeconfig}: no such file")
            await config.load_kube_config(
                config_file=kube.kubeconfig, client_configuration=configuration
            )
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except config.ConfigException as exc:
                raise ValueError(
                    "tier routes need Kubernetes: set kubernetes.kubeconfig (or "
                    f"PAYGRESS_KUBECONFIG), or run in a cluster ({exc})"
                ) from exc
        return cls(
            client.ApiClient(configuration),
            kube.namespace,
            grace_seconds=kube.grace_seconds,
            reaper_interval=kube.reaper_interval_seconds,
            **kwargs,
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Lists the pods once, then watches and keeps them in the background.

        An API server that does not answer yet is no reason not to serve: the watch keeps
        trying, and a pod asked for in the meantime is created idempotently (409 → read).
        """
        try:
            await self.relist()
        except PodsError as exc:
            log.error("Kubernetes API not reachable at start (%s); will keep trying", exc)
        self._tasks = [
            asyncio.create_task(self._inform_forever()),
            asyncio.create_task(self._keep_forever()),
        ]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.api_client.close()

    # -- the port ---------------------------------------------------------------------------

    def state(self, name: str) -> PodState | None:
        return self._view.get(name)

    def count(self) -> float:
        """Pods known and not being deleted."""
        return float(sum(not s.terminating for s in self._view.values()))

    async def ensure(self, request: PodRequest) -> PodState:
        manifest = pod_manifest(request, self.namespace, self.grace_seconds)
        try:
            pod = await self._call(
                lambda: self.core.create_namespaced_pod(self.namespace, manifest)
            )
            self._deleted.discard(request.name)
            self.on_event("created")
            log.info("created pod %s (tier %s)", request.name, request.tier.id)
        except PodExists:
            pod = await self._call(
                lambda: self.core.read_namespaced_pod(request.name, self.namespace)
            )
        return self._apply(pod)

    async def patch_expiry(self, name: str, expires_at: float) -> None:
        self._check.add(name)  # until the cluster says so
        patch = {"metadata": {"annotations": {EXPIRES_ANNOTATION: rfc3339(expires_at)}}}
        pod = await self._call(
            lambda: self.core.patch_namespaced_pod(
                name, self.namespace, patch, _content_type=MERGE_PATCH
            )
        )
        if int(self._apply(pod).expires_at) >= int(expires_at):
            self._check.discard(name)

    # -- the view ---------------------------------------------------------------------------

    async def relist(self) -> list[PodState]:
        """Lists our pods, replaces the view and remembers where a watch resumes. Every pod
        listed is checked once against its durable paid end by the next keeper pass."""
        pods = await self._call(
            lambda: self.core.list_namespaced_pod(self.namespace, label_selector=SELECTOR)
        )
        self._view = {}
        for pod in pods.items:
            self._apply(pod)
        self._deleted &= self._view.keys()
        self._check = set(self._view)
        self.resource_version = pods.metadata.resource_version
        return list(self._view.values())

    def _apply(self, pod: Any) -> PodState:
        state = state_of(pod)
        if state.name in self._deleted and not state.terminating:
            state = replace(state, terminating=True)
        self._view[state.name] = state
        return state

    def _forget(self, name: str) -> None:
        self._view.pop(name, None)
        self._deleted.discard(name)
        self._check.discard(name)

    async def _inform_forever(self) -> None:
        delay, gone = BACKOFF_FIRST, False
        while True:
            try:
                if self.resource_version is None:
                    await self.relist()
                await self._watch_once()
                delay, gone = BACKOFF_FIRST, False
                continue
            except asyncio.CancelledError:
                raise
            except (ApiException, PodsError) as exc:
                status = exc.status
                if status == 410:
                    log.info("pod watch expired (410 Gone); relisting")
                    self.resource_version = None
                    if not gone:  # at once; a second 410 in a row waits like any failure
                        gone = True
                        continue
                if status == 403:
                    log.warning(
                        "pod list/watch forbidden (403): RBAC not ready yet, or the Role lacks "
                        "list/watch on pods in %s; retrying",
                        self.namespace,
                    )
                else:
                    log.info("pod watch interrupted (%s); retrying", status)
            except Exception as exc:
                log.info("pod watch interrupted (%s); retrying", type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _watch_once(self) -> None:
        """One WATCH from the last resourceVersion, until the server ends it."""
        async with watch.Watch() as w:
            stream = w.stream(
                self.core.list_namespaced_pod,
                self.namespace,
                label_selector=SELECTOR,
                resource_version=self.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_seconds,
                _request_timeout=self.watch_seconds + 30,
            )
            async for event in stream:
                kind, raw = event["type"], event["raw_object"]
                meta = raw.get("metadata") or {}
                if kind == "DELETED":
                    self._forget(meta.get("name", ""))
                elif kind in ("ADDED", "MODIFIED"):
                    self._apply(event["object"])
                if meta.get("resourceVersion"):
                    self.resource_version = meta["resourceVersion"]

    # -- keeping ----------------------------------------------------------------------------

    async def keep_once(self) -> Kept:
        """Moves lagging expiry annotations up to the durable paid end, and deletes (once) the
        pods whose paid time is over by both. Reads the view; calls the API only to act."""
        now = self.clock()
        kept = Kept()
        self._check &= self._view.keys()
        for state in list(self._view.values()):
            if state.terminating or not (state.expires_at <= now or state.name in self._check):
                continue
            try:
                paid = await self.paid_end(state.name) if self.paid_end else 0.0
            except Exception:
                log.exception("paid end of pod %s unknown; not touching it now", state.name)
                continue
            end = max(paid, state.expires_at)
            if not end:
                self._check.discard(state.name)  # neither says: left to activeDeadlineSeconds
            elif end <= now:
                if await self._reap(state, end):
                    kept.reaped.append(state.name)
            elif int(paid) > int(state.expires_at):
                try:
                    await self.patch_expiry(state.name, paid)
                    kept.patched.append(state.name)
                    log.info("pod %s: expiry annotation moved to %s", state.name, rfc3339(paid))
                except PodsError as exc:
                    log.warning("pod %s: expiry annotation still behind: %s", state.name, exc)
            else:
                self._check.discard(state.name)
        return kept

    async def _reap(self, state: PodState, end: float) -> bool:
        name = state.name
        try:
            await self._call(
                lambda: self.core.delete_namespaced_pod(
                    name, self.namespace, grace_period_seconds=DELETE_GRACE_SECONDS
                )
            )
        except PodNotFound:
            self._forget(name)  # another replica (or an admin) was faster, and counted it
            return False
        except PodsError as exc:
            log.warning("could not reap %s: %s", name, exc)
            return False
        self._deleted.add(name)
        self._view[name] = replace(state, terminating=True)
        self.on_event("reaped")
        log.info("reaped pod %s (paid until %s)", name, rfc3339(end))
        return True

    async def _keep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reaper_interval)
            try:
                await self.keep_once()
            except Exception:
                log.exception("keeper failed; will retry")

    # -- calls ------------------------------------------------------------------------------

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Calls the API with retries on 429/5xx/timeouts; other errors at once."""
        delay = self.retry_delay
        for attempt in range(1, self.attempts + 1):
            try:
                return await asyncio.wait_for(fn(), timeout=self.call_timeout)
            except ApiException as exc:
                self.on_event("api_error")
                if exc.status not in RETRYABLE or attempt == self.attempts:
                    raise _error(exc) from exc
            except (TimeoutError, OSError) as exc:
                self.on_event("api_error")
                if attempt == self.attempts:
                    raise PodsUnavailable(f"Kubernetes API: {type(exc).__name__}") from exc
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")


def _error(exc: ApiException) -> PodsError:
    """The pods error for an API answer, with the API server's own words when it gave any."""
    status = exc.status
    message = f"Kubernetes API: {status} {exc.reason}"
    detail = _status_message(exc.body)
    if detail:
        message += f": {detail[:300]}"
    kind: type[PodsError] = PodsRefused
    if status == 404:
        kind = PodNotFound
    elif status == 409:
        kind = PodExists
    elif status is None or status in RETRYABLE:
        kind = PodsUnavailable
    return kind(message, status)


def _status_message(body: Any) -> str:
    try:
        found = json.loads(body)["message"]
    except (TypeError, ValueError, KeyError):
        return ""
    return found if isinstance(found, str) else ""
