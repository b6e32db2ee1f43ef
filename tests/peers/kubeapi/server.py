"""The fake API server: the pods endpoints Paygress calls, over real HTTP/1.1.

``/api/v1/namespaces/{ns}/pods``: list (``labelSelector``), watch (``resourceVersion``,
``allowWatchBookmarks``, ``timeoutSeconds``), create. ``.../pods/{name}``: get, patch
(``application/merge-patch+json``), delete (``gracePeriodSeconds``). Each request is
authenticated (bearer token), then failures injected by a test apply, then RBAC, then the verb.
Anything else a real server would serve is answered 404, 405 or "not implemented" (400): a
new kind of call from Paygress fails loudly here instead of passing untested.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Self

import yaml

from ..lifecycle import Lifecycle
from ..procs import LOOPBACK, free_port
from .admission import RESTRICTED_LABELS, admit
from .control import Hooks
from .errors import (
    ApiError,
    Obj,
    already_exists,
    bad_request,
    conflict,
    internal_error,
    invalid,
    not_found,
    not_implemented,
)
from .http import MAX_HEADER_BYTES, BadHttp, ChunkedJson, Request, read_request, write_json
from .kubelet import Clock, Kubelet, rfc3339
from .rbac import ADMIN_USER, PAYGRESS_USER, Rbac, Rule, chart_role_rules
from .selectors import labels_match, parse_label_selector
from .store import PodStore, Watcher
from .validation import (
    DEFAULT_TOLERATIONS,
    decode_pod,
    default_pod,
    is_dns1123_label,
    qos_class,
    validate_pod,
    validate_update,
)

_PODS: Final = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?/?$")
_QUERY: Final = {  # the query parameters each verb understands here
    "list": {"labelSelector", "resourceVersion", "watch"},
    "watch": {"labelSelector", "resourceVersion", "watch", "allowWatchBookmarks", "timeoutSeconds"},
    "get": set(),
    "create": {"fieldValidation", "fieldManager"},
    "patch": {"fieldValidation", "fieldManager"},
    "delete": {"gracePeriodSeconds"},
}
_NO_METHOD: Final = ApiError(
    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
)
MERGE_PATCH: Final = "application/merge-patch+json"


class FakeKubeApi(Lifecycle):
    """A strict fake of the Kubernetes pods API for the real ``kubernetes_asyncio`` client.

    ``namespaces``: the namespaces that exist, each labelled to enforce Pod Security
    ``restricted`` (``pod_security=None``: no labels). ``role``: the rules Paygress's service
    account is bound to in each of them (the chart's Role by default). ``stop_seconds``: how
    long a deleted pod's containers take to stop (at most its grace period). ``clock``:
    wall-clock seconds; ``hooks.advance_time`` adds to it. ``watch_timeout``: the life of a
    watch without ``timeoutSeconds``.
    """

    def __init__(
        self,
        namespaces: Iterable[str] = ("default",),
        *,
        host: str = LOOPBACK,
        port: int | None = None,
        pod_security: str | None = "restricted",
        role: list[Rule] | None = None,
        node_name: str | None = "fake-node",
        stop_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
        watch_timeout: float = 1800.0,
        history: int = 10_000,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.watch_timeout = watch_timeout
        self.clock = Clock(clock)
        self.store = PodStore(history=history)
        self.kubelet = Kubelet(
            self.store, self.clock, node_name=node_name, stop_seconds=stop_seconds
        )
        self.rbac = Rbac()
        self.token = self.rbac.add_user(PAYGRESS_USER)
        self.admin_token = self.rbac.add_user(ADMIN_USER)
        self.hooks = Hooks(self.store, self.kubelet, self.rbac, self.clock)
        self.connections = 0  # TCP connections accepted (keep-alive reuses them)
        rules = chart_role_rules() if role is None else role
        labels = RESTRICTED_LABELS if pod_security == "restricted" else {}
        for name in namespaces:
            self.add_namespace(name, labels)
            self.rbac.bind(PAYGRESS_USER, name, rules)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None

    def add_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        if is_dns1123_label(name):
            raise ValueError(f"bad namespace name {name!r}")
        self.store.namespaces[name] = {"kubernetes.io/metadata.name": name, **(labels or {})}

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> Self:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, reuse_address=True, limit=MAX_HEADER_BYTES
        )
        self._ticker = asyncio.create_task(self._tick_forever())
        return self

    async def stop(self) -> None:
        self.store.close_watches()
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._server is None:
            return
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

    async def restart(self) -> None:
        """Stops and starts again on the same port, keeping the store and its history (as an
        API server restart does, etcd staying): open watches and connections are cut."""
        await self.stop()
        await self.start()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            self.kubelet.tick()

    # -- client configuration -------------------------------------------------------------------

    def kubeconfig(self, namespace: str = "default", *, admin: bool = False) -> Obj:
        """A kubeconfig (Paygress's service account, or the admin) as a dict."""
        token = self.admin_token if admin else self.token
        context = {"cluster": "fake", "user": "fake", "namespace": namespace}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": context}],
            "current-context": "fake",
        }

    def write_kubeconfig(
        self, path: str | Path, namespace: str = "default", *, admin: bool = False
    ) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(yaml.safe_dump(self.kubeconfig(namespace, admin=admin), sort_keys=False))
        out.chmod(0o600)
        return out

    def client_configuration(self, *, admin: bool = False, token: str | None = None) -> Any:
        """A ``kubernetes_asyncio`` Configuration for this server. Both ``api_key`` and
        ``api_key_prefix`` are set: with the key alone the client sends no ``Bearer``."""
        from kubernetes_asyncio.client import Configuration

        key = token or (self.admin_token if admin else self.token)
        return Configuration(
            host=self.url, api_key={"BearerToken": key}, api_key_prefix={"BearerToken": "Bearer"}
        )

    # -- HTTP -----------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            while True:
                try:
                    req = await read_request(reader)
                except BadHttp as exc:
                    await write_json(writer, 400, bad_request(str(exc)).status(), keep_alive=False)
                    break
                if req is None:
                    break
                await self._handle(req, reader, writer)
                if not req.keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle(
        self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        user = ""
        try:
            user = self.rbac.authenticate(req.headers.get("authorization"))
            await self.hooks.inject(req)
            self.kubelet.tick()
            m = _PODS.match(req.path)
            if m is None:
                raise ApiError(
                    404, "NotFound", "the server could not find the requested resource", {}
                )
            namespace, name = m.group(1), m.group(2)
            verb = self._verb(req, name)
            self.rbac.authorize(user, verb, namespace, name)
            unknown = set(req.query) - _QUERY.get(verb, set())
            if unknown:
                raise not_implemented(f"{', '.join(sorted(unknown))} on {verb}")
            if verb == "watch":
                self.hooks.record(req, 200, user)
                await self._watch(req, namespace, reader, writer)
                return
            code, body, warnings = self._dispatch(verb, req, namespace, name)
        except ApiError as exc:
            self.hooks.record(req, exc.code, user)
            await write_json(
                writer, exc.code, exc.status(), keep_alive=req.keep_alive, headers=exc.headers
            )
            return
        except Exception as exc:  # a bug in the fake: answer 500, keep the details
            self.hooks.record(req, 500, user)
            err = internal_error(f"fake API server bug: {type(exc).__name__}: {exc}")
            await write_json(writer, 500, err.status(), keep_alive=req.keep_alive)
            return
        self.hooks.record(req, code, user)
        headers = {}
        if warnings:
            self.hooks.warnings.extend(warnings)
            headers["Warning"] = ", ".join(f"299 - {json.dumps(w)}" for w in warnings)
        await write_json(writer, code, body, keep_alive=req.keep_alive, headers=headers)

    @staticmethod
    def _verb(req: Request, name: str | None) -> str:
        if req.method == "GET":
            return "get" if name else ("watch" if _parse_bool(req.query.get("watch")) else "list")
        verbs = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}
        verb = verbs.get(req.method)
        if verb == "delete" and not name:
            return "deletecollection"
        if verb is None or (verb == "create") == bool(name):
            raise _NO_METHOD
        return verb

    def _dispatch(
        self, verb: str, req: Request, namespace: str, name: str | None
    ) -> tuple[int, Obj, list[str]]:
        if verb == "list":
            labels = parse_label_selector(req.query.get("labelSelector", ""))
            items = [
                _list_item(pod)
                for pod in self.store.in_namespace(namespace)
                if labels_match(labels, pod["metadata"].get("labels"))
            ]
            meta = {"resourceVersion": str(self.store.rv)}
            return (
                200,
                {"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": items},
                [],
            )
        if verb == "create":
            return 201, *self._create(namespace, _json_body(req), req.query)
        if verb not in ("get", "patch", "delete") or name is None:
            raise not_implemented(verb)
        pod = self.store.get(namespace, name)
        if pod is None:
            raise not_found(name)
        if verb == "get":
            return 200, copy.deepcopy(pod), []
        if verb == "patch":
            return 200, *self._patch(pod, req)
        grace = _parse_int(req.query.get("gracePeriodSeconds"))
        options = _json_body(req) if req.body.strip() else {}
        if set(options) - {"kind", "apiVersion", "gracePeriodSeconds", "propagationPolicy"}:
            raise not_implemented(f"delete options {sorted(options)}")
        grace = options.get("gracePeriodSeconds", grace)
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        return 200, self.kubelet.delete(pod, grace), []

    # -- verbs ----------------------------------------------------------------------------------

    def _create(self, namespace: str, raw: Any, query: Mapping[str, str]) -> tuple[Obj, list[str]]:
        pod, warnings = decode_pod(raw, query.get("fieldValidation", "Warn"))
        meta = pod.setdefault("metadata", {})
        if meta.get("namespace") not in (None, "", namespace):
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        if namespace not in self.store.namespaces:
            raise not_found(namespace, "namespaces")
        if meta.get("resourceVersion"):
            raise internal_error("resourceVersion should not be set on objects to be created")
        if meta.get("generateName"):
            raise not_implemented("generateName")
        meta["namespace"] = namespace
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(key, None)
        default_pod(pod)
        tolerations = pod["spec"].setdefault("tolerations", [])
        for toleration in DEFAULT_TOLERATIONS:
            if not any(t.get("key") == toleration["key"] for t in tolerations):
                tolerations.append(dict(toleration))
        name = meta.get("name", "")
        errors = validate_pod(pod)
        if errors:
            raise invalid(name, errors)
        admit(pod, self.store.namespaces[namespace])
        if self.store.get(namespace, name) is not None:
            raise already_exists(name)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339(self.clock())
        pod["status"] = {"phase": "Pending", "qosClass": qos_class(pod)}
        return self.store.commit("ADDED", pod, None), warnings

    def _patch(self, old: Obj, req: Request) -> tuple[Obj, list[str]]:
        kind = req.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind in ("application/json-patch+json", "application/strategic-merge-patch+json"):
            raise not_implemented(f"{kind} (Paygress sends {MERGE_PATCH})")
        if kind != MERGE_PATCH:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types "
                f"include: application/json-patch+json, {MERGE_PATCH}, "
                "application/strategic-merge-patch+json, application/apply-patch+yaml",
            )
        patch = _json_body(req)
        if not isinstance(patch, dict):
            raise bad_request(
                "json: cannot unmarshal into Go value of type map[string]interface {}"
            )
        new, warnings = decode_pod(
            merge_patch(copy.deepcopy(old), patch), req.query.get("fieldValidation", "Warn")
        )
        meta, old_meta = new.setdefault("metadata", {}), old["metadata"]
        name = old_meta["name"]
        if (
            meta.get("name", name) != name
            or meta.get("namespace", old_meta["namespace"]) != old_meta["namespace"]
        ):
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the "
                f"URL ({name})"
            )
        if meta.get("resourceVersion") != old_meta["resourceVersion"]:
            raise conflict(
                name,
                "the object has been modified; please apply your changes to the latest version "
                "and try again",
            )
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        new["status"] = copy.deepcopy(old["status"])  # status changes go through /status only
        default_pod(new)
        errors = validate_update(new, old)
        if errors:
            raise invalid(name, errors)
        if new == old:
            return copy.deepcopy(old), warnings  # a no-op does not bump the resourceVersion
        return self.store.commit("MODIFIED", new, copy.deepcopy(old)), warnings

    async def _watch(
        self,
        req: Request,
        namespace: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        labels = parse_label_selector(req.query.get("labelSelector", ""))
        since = req.query.get("resourceVersion", "")
        if since and not since.isdigit():
            raise bad_request(f'invalid resource version "{since}"')
        timeout = _parse_int(req.query.get("timeoutSeconds"))
        duration = float(timeout) if timeout is not None else self.watch_timeout
        watcher = Watcher(namespace, labels, _parse_bool(req.query.get("allowWatchBookmarks")))
        initial, go_on = self.store.initial_events(watcher, since)
        stream = ChunkedJson(writer)
        self.store.watchers.append(watcher)
        eof = asyncio.ensure_future(reader.read(1))
        try:
            for event in initial:
                await stream.send(event)
            deadline = time.monotonic() + (duration if go_on else 0.0)
            while (remaining := deadline - time.monotonic()) > 0:
                getter = asyncio.ensure_future(watcher.queue.get())
                done, _ = await asyncio.wait(
                    {getter, eof}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    if eof in done:  # the client went away
                        req.keep_alive = False
                        return
                    if watcher.bookmarks:  # as the watch cache does before a timeout
                        await stream.send(self.store.bookmark())
                    break
                item = getter.result()
                if item is None:  # the server ends its watches
                    break
                await stream.send(item)
            await stream.end()
        except ConnectionError:
            req.keep_alive = False
        finally:
            with contextlib.suppress(ValueError):
                self.store.watchers.remove(watcher)
            if eof.done():
                req.keep_alive = False  # the client closed or sent bytes meanwhile
            else:
                eof.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await eof


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (null deletes, lists are replaced)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _list_item(pod: Obj) -> Obj:
    out = copy.deepcopy(pod)
    out.pop("kind", None)
    out.pop("apiVersion", None)
    return out


def _json_body(req: Request) -> Any:
    if not req.body.strip():
        raise bad_request("the request body is empty")
    try:
        return json.loads(req.body)
    except ValueError as exc:
        raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from None


def _parse_bool(value: str | None) -> bool:
    """strconv.ParseBool, as the API server parses ``watch=``."""
    if value in (None, "", "0", "f", "F", "FALSE", "false", "False"):
        return False
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    raise bad_request(f'strconv.ParseBool: parsing "{value}": invalid syntax')


def _parse_int(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not re.fullmatch(r"-?[0-9]+", value):
        raise bad_request(f'strconv.ParseInt: parsing "{value}": invalid syntax')
    return int(value)
