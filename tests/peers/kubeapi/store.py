"""The store behind the fake: pods by namespace and name, one resourceVersion counter, the
history of changes (which watches resume from), and the open watches.

Watch semantics as the real watch cache has them: a watch from ``resourceVersion`` N gets every
change after N; one from "" or "0" first gets the current pods as ADDED; a pod that enters or
leaves a watch's selection is ADDED or DELETED for it; N older than the kept history gets an
ERROR event with 410 Expired; bookmarks carry only a resourceVersion.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import Obj, expired
from .selectors import Requirement, labels_match


@dataclass
class Event:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj  # the object after the change (for DELETED: as it was deleted)
    prev: Obj | None  # the object before the change


@dataclass
class Watcher:
    namespace: str
    labels: list[Requirement]
    bookmarks: bool
    queue: asyncio.Queue[Obj | None] = field(default_factory=asyncio.Queue)

    def selects(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj["metadata"]
        return meta.get("namespace") == self.namespace and labels_match(
            self.labels, meta.get("labels")
        )

    def translate(self, event: Event) -> Obj | None:
        """The event as this watcher sees it, or None."""
        if event.type == "DELETED":
            return {"type": "DELETED", "object": event.obj} if self.selects(event.obj) else None
        now, before = self.selects(event.obj), self.selects(event.prev)
        if now:
            return {"type": event.type if before else "ADDED", "object": event.obj}
        return {"type": "DELETED", "object": event.obj} if before else None


class PodStore:
    """Pods, their resourceVersions and history, and the watches on them."""

    def __init__(self, first_resource_version: int = 1000, history: int = 10_000) -> None:
        self.rv = first_resource_version
        self.history = history
        self.namespaces: dict[str, dict[str, str]] = {}  # name -> labels
        self.objects: dict[tuple[str, str], Obj] = {}
        self.events: list[Event] = []
        self.oldest = self.rv  # a watch from below this is too old (410)
        self.watchers: list[Watcher] = []

    def get(self, namespace: str, name: str) -> Obj | None:
        return self.objects.get((namespace, name))

    def in_namespace(self, namespace: str) -> Iterator[Obj]:
        for (ns, _), obj in sorted(self.objects.items()):
            if ns == namespace:
                yield obj

    def commit(self, type_: str, pod: Obj, prev: Obj | None) -> Obj:
        """Stores ``pod`` with a new resourceVersion and tells the watchers; a copy back."""
        self.rv += 1
        pod["metadata"]["resourceVersion"] = str(self.rv)
        meta = pod["metadata"]
        self.objects[(meta["namespace"], meta["name"])] = pod
        self._record(Event(self.rv, type_, copy.deepcopy(pod), prev))
        return copy.deepcopy(pod)

    def remove(self, namespace: str, name: str) -> Obj:
        pod = self.objects.pop((namespace, name))
        self.rv += 1
        pod["metadata"]["resourceVersion"] = str(self.rv)
        self._record(Event(self.rv, "DELETED", copy.deepcopy(pod), None))
        return copy.deepcopy(pod)

    def _record(self, event: Event) -> None:
        self.events.append(event)
        if len(self.events) > self.history:
            self.compact(self.events[len(self.events) - self.history].rv - 1)
        for watcher in self.watchers:
            out = watcher.translate(event)
            if out is not None:
                watcher.queue.put_nowait(out)

    def compact(self, upto: int | None = None) -> None:
        """Forgets history up to ``upto`` (default: all), as an etcd compaction does: watches
        from before it get 410 Expired."""
        upto = self.rv if upto is None else upto
        self.events = [e for e in self.events if e.rv > upto]
        self.oldest = max(self.oldest, upto)

    def initial_events(self, watcher: Watcher, since: str) -> tuple[list[Obj], bool]:
        """What a new watch from ``since`` is sent first, and whether it may go on."""
        if since in ("", "0"):
            objects = [o for o in self.in_namespace(watcher.namespace) if watcher.selects(o)]
            return [{"type": "ADDED", "object": copy.deepcopy(o)} for o in objects], True
        rv = int(since)
        if rv < self.oldest:
            gone = expired(f"too old resource version: {rv} ({self.oldest + 1})")
            return [{"type": "ERROR", "object": gone.status()}], False
        found = (watcher.translate(e) for e in self.events if e.rv > rv)
        return [e for e in found if e is not None], True

    def bookmark(self) -> Obj:
        meta = {"resourceVersion": str(self.rv)}
        return {"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": meta}}

    def close_watches(self) -> None:
        for watcher in self.watchers:
            watcher.queue.put_nowait(None)
