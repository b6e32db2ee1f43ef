"""The fake's control hooks: what a test does to the fake that a real cluster does by itself
(the kubelet runs pods, time passes, RBAC syncs, etcd compacts) or that no test can do to a
real cluster (inject failures, count the requests that reached the API server).

Everything a test *observes* of pods goes through the Kubernetes API instead (the real
client, as Paygress does), so that the same test can run against a real cluster; these hooks
are what such a test does differently, or skips, there.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

from .errors import Obj, injected_error
from .http import Request
from .kubelet import Clock, Kubelet
from .rbac import Rbac
from .store import PodStore


@dataclass(frozen=True)
class RequestRecord:
    """One request as the fake saw it."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    user: str = ""
    content_type: str = ""
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def verb(self) -> str:
        """The Kubernetes verb (get, list, watch, create, patch, delete, ...)."""
        named = self.path.rstrip("/").count("/") >= 6  # /api/v1/namespaces/<ns>/pods/<name>
        if self.method == "GET":
            return "get" if named else ("watch" if _true(self.query.get("watch")) else "list")
        verbs = {"POST": "create", "PATCH": "patch", "PUT": "update"}
        if self.method == "DELETE":
            return "delete" if named else "deletecollection"
        return verbs.get(self.method, self.method.lower())


def _true(value: str | None) -> bool:
    return value in ("1", "t", "T", "TRUE", "true", "True")


@dataclass
class Injection:
    method: str
    pattern: re.Pattern[str]
    status: int | None
    times: int
    delay: float
    message: str | None


class Hooks:
    """Controls and instruments of one fake API server (``FakeKubeApi.hooks``)."""

    def __init__(self, store: PodStore, kubelet: Kubelet, rbac: Rbac, clock: Clock) -> None:
        self._store = store
        self._kubelet = kubelet
        self._rbac = rbac
        self._clock = clock
        self._injections: list[Injection] = []
        self.requests: list[RequestRecord] = []
        self.warnings: list[str] = []

    # -- the kubelet and the clock ------------------------------------------------------------

    def set_running(self, namespace: str, name: str, ip: str = "10.0.0.5") -> Obj:
        """What the kubelet reports once all containers run: phase Running, podIP, Ready."""
        return self._kubelet.set_running(namespace, name, ip)

    def set_phase(self, namespace: str, name: str, phase: str, reason: str | None = None) -> Obj:
        """Sets the phase as the kubelet would (Pending, Running, Succeeded, Failed)."""
        return self._kubelet.set_phase(namespace, name, phase, reason)

    def advance_time(self, seconds: float) -> None:
        """Moves the fake's clock forward (deadlines, graceful deletions), then ticks."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._clock.offset += seconds
        self._kubelet.tick()

    def now(self) -> float:
        """The fake's clock."""
        return self._clock()

    # -- the control plane ----------------------------------------------------------------------

    def set_rbac_ready(self, ready: bool) -> None:
        """False: every user but the admin gets 403, as from an API server whose RBAC caches
        have not synced yet."""
        self._rbac.ready = ready

    def compact(self, upto: int | None = None) -> None:
        """Forgets history up to ``upto`` (default: all): older watches get 410 Expired."""
        self._store.compact(upto)

    def send_bookmarks(self) -> None:
        """A BOOKMARK to every watch that allowed them."""
        for watcher in self._store.watchers:
            if watcher.bookmarks:
                watcher.queue.put_nowait(self._store.bookmark())

    def close_watches(self) -> None:
        """Ends every open watch (as an API server that restarts or rebalances does)."""
        self._store.close_watches()

    @property
    def watchers(self) -> int:
        return len(self._store.watchers)

    async def wait_for_watchers(self, count: int = 1, within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while len(self._store.watchers) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self._store.watchers)} watchers, wanted {count}")
            await asyncio.sleep(0.01)

    @property
    def resource_version(self) -> int:
        return self._store.rv

    # -- failures -------------------------------------------------------------------------------

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
        target (path and query) matches ``path_regex`` (``re.search``) with ``status``, after
        ``delay`` seconds; ``status=None``: only the delay (above the client's timeout, a
        timeout). Injected failures come after authentication, before authorization."""
        pattern = re.compile(path_regex)
        injection = Injection(method.upper(), pattern, status, times, delay, message)
        self._injections.append(injection)

    def clear_failures(self) -> None:
        self._injections.clear()

    async def inject(self, req: Request) -> None:
        """Applies the first matching injection to a request (raises its error)."""
        for inj in self._injections:
            if inj.times > 0 and inj.method in ("*", req.method) and inj.pattern.search(req.target):
                inj.times -= 1
                if inj.times == 0:
                    self._injections.remove(inj)
                if inj.delay:
                    await asyncio.sleep(inj.delay)
                if inj.status is not None:
                    raise injected_error(inj.status, inj.message)
                return

    # -- instruments ----------------------------------------------------------------------------

    def record(self, req: Request, status: int, user: str) -> None:
        self.requests.append(
            RequestRecord(
                req.method,
                req.path,
                dict(req.query),
                status,
                user,
                req.headers.get("content-type", ""),
                dict(req.headers),
            )
        )

    def count(self, verb: str | None = None, *, user: str | None = None) -> int:
        """Requests that reached the API server (of one verb, of one user)."""
        return sum(
            (verb is None or r.verb == verb) and (user is None or r.user == user)
            for r in self.requests
        )
