"""Pods for payment through kubernetes_asyncio: create, extend, watch, reap, reconcile.

The cluster holds the truth: every pod Paygress makes carries its expiry in an annotation, so
any replica (or a restarted one) can rebuild its view with one list call and reap on time.
Deleting a pod that another replica already deleted (404) is fine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from paygress.config import KubernetesConfig
from paygress.core.ports import PodRequest, PodState, PodsUnavailable

log = logging.getLogger("paygress.pods")
T = TypeVar("T")

MANAGED_BY = "app.kubernetes.io/managed-by"
TIER_LABEL = "paygress.io/tier"
GRANT_LABEL = "paygress.io/grant"
ROUTE_LABEL = "paygress.io/route"
EXPIRES_ANNOTATION = "paygress.io/expires-at"
PAID_ANNOTATION = "paygress.io/paid"
SELECTOR = f"{MANAGED_BY}=paygress"
RETRYABLE = {408, 429, 500, 502, 503, 504}
MERGE_PATCH = "application/merge-patch+json"


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
            "terminationGracePeriodSeconds": 10,
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
    """A PodState from a V1Pod (as the client returns it) or the dict a watch may carry."""
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
    )


class KubePods:
    """The Pods port on a real API server (or anything that speaks its pods API)."""

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
    ) -> None:
        self.api_client = api
        self.core: Any = client.CoreV1Api(api)  # loosely typed: bodies are plain dicts
        self.namespace = namespace
        self.grace_seconds = grace_seconds
        self.reaper_interval = reaper_interval
        self.clock = clock
        self.attempts = attempts
        self.on_event = on_event or (lambda _name: None)
        self._cache: dict[str, PodState] = {}
        self._refreshed: dict[str, float] = {}
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
        """Rebuilds the view from the cluster, then watches and reaps in the background.

        An API server that does not answer yet is no reason not to serve: the watch keeps
        relisting, and a pod asked for in the meantime is created idempotently (409 → read).
        """
        try:
            await self.reconcile()
        except PodsUnavailable as exc:
            log.error("Kubernetes API not reachable at start (%s); will keep trying", exc)
        self._tasks = [
            asyncio.create_task(self._watch_forever()),
            asyncio.create_task(self._reap_forever()),
        ]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.api_client.close()

    async def reconcile(self) -> list[PodState]:
        """Lists our pods and replaces the in-memory view with what the cluster says."""
        pods = await self._call(
            lambda: self.core.list_namespaced_pod(self.namespace, label_selector=SELECTOR)
        )
        self._cache = {s.name: s for s in map(state_of, pods.items)}
        return list(self._cache.values())

    # -- the port ---------------------------------------------------------------------------

    def state(self, name: str) -> PodState | None:
        return self._cache.get(name)

    def count(self) -> float:
        return float(len(self._cache))

    async def ensure(self, request: PodRequest) -> PodState:
        manifest = pod_manifest(request, self.namespace, self.grace_seconds)
        try:
            pod = await self._call(
                lambda: self.core.create_namespaced_pod(self.namespace, manifest)
            )
            self.on_event("created")
            log.info("created pod %s (tier %s)", request.name, request.tier.id)
        except PodsUnavailable as exc:
            if getattr(exc.__cause__, "status", None) != 409:
                raise
            pod = await self._call(
                lambda: self.core.read_namespaced_pod(request.name, self.namespace)
            )
        state = state_of(pod)
        self._cache[state.name] = state
        return state

    async def refresh(self, name: str) -> PodState | None:
        """Reads the pod from the API at most once a second per pod."""
        now = time.monotonic()
        if now - self._refreshed.get(name, 0.0) < 1.0:
            return self._cache.get(name)
        self._refreshed[name] = now
        try:
            pod = await self._call(lambda: self.core.read_namespaced_pod(name, self.namespace))
        except PodsUnavailable as exc:
            if getattr(exc.__cause__, "status", None) == 404:
                self._cache.pop(name, None)
                return None
            raise
        state = state_of(pod)
        self._cache[name] = state
        return state

    async def extend(self, name: str, expires_at: float) -> None:
        patch = {"metadata": {"annotations": {EXPIRES_ANNOTATION: rfc3339(expires_at)}}}
        pod = await self._call(
            lambda: self.core.patch_namespaced_pod(
                name, self.namespace, patch, _content_type=MERGE_PATCH
            )
        )
        self._cache[name] = state_of(pod)

    # -- reaping ----------------------------------------------------------------------------

    async def reap_once(self) -> list[str]:
        """Deletes our pods whose paid time is over (per the cluster's annotations)."""
        now = self.clock()
        reaped = []
        for state in await self.reconcile():
            if state.expires_at and state.expires_at <= now:
                try:
                    await self._call(
                        lambda name=state.name: self.core.delete_namespaced_pod(  # type: ignore[misc]
                            name, self.namespace, grace_period_seconds=10
                        )
                    )
                except PodsUnavailable as exc:
                    if getattr(exc.__cause__, "status", None) != 404:
                        log.warning("could not reap %s: %s", state.name, exc)
                        continue
                self._cache.pop(state.name, None)
                reaped.append(state.name)
                self.on_event("reaped")
                log.info("reaped pod %s (paid until %s)", state.name, rfc3339(state.expires_at))
        return reaped

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reaper_interval)
            try:
                await self.reap_once()
            except PodsUnavailable as exc:
                log.warning("reaper: %s", exc)
            except Exception:
                log.exception("reaper failed; will retry")

    async def _watch_forever(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with watch.Watch() as w:
                    async for event in w.stream(
                        self.core.list_namespaced_pod,
                        self.namespace,
                        label_selector=SELECTOR,
                        timeout_seconds=60,
                    ):
                        pod = event["object"]
                        if event["type"] == "DELETED":
                            self._cache.pop(pod.metadata.name, None)
                        elif event["type"] in ("ADDED", "MODIFIED"):
                            state = state_of(pod)
                            self._cache[state.name] = state
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("pod watch interrupted (%s); relisting", type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                with contextlib.suppress(PodsUnavailable):
                    await self.reconcile()

    # -- calls ------------------------------------------------------------------------------

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Calls the API with retries on 429/5xx/timeouts; other errors at once."""
        delay = 0.2
        for attempt in range(1, self.attempts + 1):
            try:
                return await asyncio.wait_for(fn(), timeout=5.0)
            except ApiException as exc:
                self.on_event("api_error")
                if exc.status not in RETRYABLE or attempt == self.attempts:
                    raise PodsUnavailable(f"Kubernetes API: {exc.status} {exc.reason}") from exc
            except (TimeoutError, OSError) as exc:
                self.on_event("api_error")
                if attempt == self.attempts:
                    raise PodsUnavailable(f"Kubernetes API: {type(exc).__name__}") from exc
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")
