"""What a test sees of a cluster, fake or real: pods read through the Kubernetes API with the
real client (never from the fake's insides), and a namespace on a real cluster prepared as the
Helm chart would prepare it.

``RealCluster`` needs a kubeconfig with rights to create namespaces, service accounts, Roles,
RoleBindings and service-account tokens (``PAYGRESS_TEST_KUBECONFIG``). It makes a fresh
namespace labelled ``pod-security.kubernetes.io/enforce=restricted``, a service account bound
to the chart's Role there, and gives Paygress a kubeconfig holding only that account's token;
``stop()`` deletes the namespace with everything in it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import yaml
from kubernetes_asyncio import client, config

from .admission import RESTRICTED_LABELS
from .rbac import chart_role_rules

Obj = dict[str, Any]
PAYGRESS_SELECTOR = "app.kubernetes.io/managed-by=paygress"


class PodObserver:
    """Pods of one namespace as the API server shows them (plain JSON)."""

    def __init__(self, configuration: client.Configuration, namespace: str) -> None:
        self.api = client.ApiClient(configuration)
        self.core: Any = client.CoreV1Api(self.api)
        self.namespace = namespace

    async def aclose(self) -> None:
        await self.api.close()

    async def pod(self, name: str) -> Obj | None:
        """The pod as stored (None: there is none)."""
        response = await self.core.read_namespaced_pod(name, self.namespace, _preload_content=False)
        found: Obj = json.loads(await response.read())
        if response.status == 404:
            return None
        if response.status != 200:
            raise AssertionError(f"GET pod {name}: {response.status} {found}")
        return found

    async def pods(self, selector: str = PAYGRESS_SELECTOR) -> list[Obj]:
        """The pods that match a label selector (Paygress's by default)."""
        response = await self.core.list_namespaced_pod(
            self.namespace, label_selector=selector, _preload_content=False
        )
        found: Obj = json.loads(await response.read())
        if response.status != 200:
            raise AssertionError(f"LIST pods: {response.status} {found}")
        items: list[Obj] = found["items"]
        return items

    async def wait(
        self, name: str, what: str, until: Callable[[Obj | None], bool], within: float = 30.0
    ) -> Obj | None:
        """Polls the pod until ``until(pod)`` holds (``pod`` None: it does not exist)."""
        deadline = time.monotonic() + within
        while True:
            pod = await self.pod(name)
            if until(pod):
                return pod
            if time.monotonic() > deadline:
                raise AssertionError(f"pod {name}: not {what} within {within} s: {pod}")
            await asyncio.sleep(0.1)


class RealCluster:
    """A fresh namespace on a real cluster, with the chart's Role for Paygress (see above)."""

    account = "paygress"

    def __init__(self, kubeconfig: str | Path, namespace: str | None = None) -> None:
        self.kubeconfig = Path(kubeconfig).expanduser()
        self.namespace = namespace or f"paygress-e2e-{secrets.token_hex(3)}"
        self.configuration = client.Configuration()
        self.token = ""

    async def start(self) -> Self:
        await config.load_kube_config(
            config_file=str(self.kubeconfig), client_configuration=self.configuration
        )
        async with client.ApiClient(self.configuration) as api:
            core: Any = client.CoreV1Api(api)  # loosely typed: bodies are plain dicts
            rbac: Any = client.RbacAuthorizationV1Api(api)
            meta = {"name": self.namespace, "labels": dict(RESTRICTED_LABELS)}
            await core.create_namespace({"metadata": meta})
            ns = self.namespace
            await core.create_namespaced_service_account(ns, {"metadata": {"name": self.account}})
            role = {"metadata": {"name": "paygress"}, "rules": chart_role_rules()}
            await rbac.create_namespaced_role(ns, role)
            binding = {
                "metadata": {"name": "paygress"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "paygress",
                },
                "subjects": [{"kind": "ServiceAccount", "name": self.account, "namespace": ns}],
            }
            await rbac.create_namespaced_role_binding(ns, binding)
            request = {"spec": {"expirationSeconds": 3600}}
            token = await core.create_namespaced_service_account_token(self.account, ns, request)
            self.token = token.status.token
            await _until_exists(core, ns, "default")  # pods run as it: the SA controller makes it
        return self

    async def stop(self) -> None:
        async with client.ApiClient(self.configuration) as api:
            await client.CoreV1Api(api).delete_namespace(self.namespace)

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig for Paygress: the cluster of the admin's, the service account's token."""
        cfg = self.configuration
        cluster: Obj = {"server": cfg.host}
        if cfg.ssl_ca_cert:
            cluster["certificate-authority"] = cfg.ssl_ca_cert
        if not cfg.verify_ssl:
            cluster["insecure-skip-tls-verify"] = True
        context = {"cluster": "e2e", "user": "e2e", "namespace": self.namespace}
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": cluster}],
            "users": [{"name": "e2e", "user": {"token": self.token}}],
            "contexts": [{"name": "e2e", "context": context}],
            "current-context": "e2e",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        path.chmod(0o600)
        return path

    def observer(self) -> PodObserver:
        return PodObserver(self.configuration, self.namespace)


async def _until_exists(core: Any, namespace: str, account: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            await core.read_namespaced_service_account(account, namespace)
            return
        except client.ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)
