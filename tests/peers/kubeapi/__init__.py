"""A strict, in-process fake of the Kubernetes pods API, for what Paygress calls, over real
HTTP/1.1; the real ``kubernetes_asyncio`` client talks to it through a kubeconfig.

It keeps the rules of a real API server (~v1.33) that Paygress must live with:

* **RBAC** (``rbac``): bearer tokens; Paygress's service account may do to pods only what the
  Helm chart's namespaced Role allows, in the namespaces it is bound in (403 otherwise, in the
  API server's words); an admin token for tests that observe. While RBAC is "not ready" (an
  API server starting), 403 for everyone but the admin.
* **Pod Security** (``admission``): namespaces enforce ``restricted`` by default.
* **Validation** (``validation``): JSON types and field names from the client's models
  (unknown fields: a warning, or 400 with ``fieldValidation=Strict``), defaults, 422 with the
  field paths a real server names; updates may only change what a live pod allows.
* **Watch semantics** (``store``): resourceVersions, resuming from one, 410 Expired for one
  older than the kept history, bookmarks, selection changes as ADDED/DELETED.
* **Graceful deletion** (``kubelet``): a DELETE of a running pod sets ``deletionTimestamp``;
  the pod goes away once its containers have stopped.

The verbs served (``server``): list, watch, create, get, merge-patch and delete of pods in a
namespace. Other calls are refused loudly (404, 405, or 400 "not implemented"), never answered
wrongly. What a test observes goes through the API (``cluster.PodObserver``, which works on a
real cluster too); what only a fake can do is in ``FakeKubeApi.hooks`` (``control``).

In-process::

    async with FakeKubeApi(namespaces=["paid"]) as kube:
        kubeconfig = kube.write_kubeconfig(tmp / "kubeconfig", namespace="paid")
        kube.hooks.set_running("paid", "pod-abc", ip="127.0.0.1")   # the kubelet's report
        kube.hooks.fail_next("PATCH", r"/pods/", status=503)         # an injected failure
        kube.hooks.count("list")                                     # requests that arrived

Deliberate differences from a real server: one resource (pods); no admission webhooks, quota,
managedFields or server-side apply; quantities are validated but stored as sent (a real server
may store a canonical spelling); the kubelet moves phases only when told (``set_running``) or
when a deadline passes; errors name the field paths and reasons a real server uses, but a few
long messages are close imitations: match on reason, field or prefix.
"""

from .cluster import PodObserver, RealCluster
from .control import Hooks, RequestRecord
from .errors import ApiError
from .rbac import ADMIN_USER, PAYGRESS_USER, chart_role_rules
from .server import FakeKubeApi

__all__ = [
    "ADMIN_USER",
    "PAYGRESS_USER",
    "ApiError",
    "FakeKubeApi",
    "Hooks",
    "PodObserver",
    "RealCluster",
    "RequestRecord",
    "chart_role_rules",
]
