"""Authentication by bearer token and RBAC authorization on namespaced Roles.

By default the fake knows two users: Paygress's service account, bound in each workload
namespace to the Role of the Helm chart (``deploy/helm/paygress/templates/role.yaml``, read
from the chart itself), and an admin (``system:masters``) for tests that observe the cluster.
While RBAC is "not ready" (an API server that has just started and not yet synced its
authorization caches) every user but the admin gets 403.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import yaml

from tests.deploy.gotemplate import strip_actions
from tests.deploy.paths import TEMPLATES

from .errors import ApiError, forbidden

PAYGRESS_USER: Final = "system:serviceaccount:paygress:paygress"
ADMIN_USER: Final = "kubernetes-admin"

Rule = Mapping[str, Sequence[str]]


def chart_role_rules() -> list[dict[str, list[str]]]:
    """The rules of the chart's Role, as the chart renders them."""
    text = strip_actions((TEMPLATES / "role.yaml").read_text(encoding="utf-8"))
    (role,) = [d for d in yaml.safe_load_all(text) if d]
    assert role["kind"] == "Role", "the chart's RBAC must be a namespaced Role"
    rules: list[dict[str, list[str]]] = role["rules"]
    return rules


def _allows(rule: Rule, verb: str, resource: str) -> bool:
    groups, resources, verbs = (rule.get(k) or () for k in ("apiGroups", "resources", "verbs"))
    return (
        ("" in groups or "*" in groups)
        and (resource in resources or "*" in resources)
        and (verb in verbs or "*" in verbs)
    )


@dataclass
class Rbac:
    """Tokens → users, and each user's Roles per namespace."""

    tokens: dict[str, str] = field(default_factory=dict)
    roles: dict[tuple[str, str], list[Rule]] = field(default_factory=dict)
    admins: set[str] = field(default_factory=lambda: {ADMIN_USER})
    ready: bool = True

    def add_user(self, user: str, token: str | None = None) -> str:
        """Registers a user; returns its bearer token."""
        token = token or secrets.token_urlsafe(24)
        self.tokens[token] = user
        return token

    def bind(self, user: str, namespace: str, rules: Sequence[Rule]) -> None:
        """A Role with ``rules`` in ``namespace`` and a RoleBinding of ``user`` to it."""
        self.roles.setdefault((user, namespace), []).extend(rules)

    def authenticate(self, authorization: str | None) -> str:
        """The user a request's Authorization header names; 401 as a real server gives it
        (anonymous authentication off)."""
        scheme, _, token = (authorization or "").partition(" ")
        user = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return user

    def authorize(self, user: str, verb: str, namespace: str, name: str | None) -> None:
        """403 unless one of the user's Roles in the namespace allows the verb on pods."""
        if user in self.admins:
            return
        rules: list[Any] = self.roles.get((user, namespace), []) if self.ready else []
        if any(_allows(rule, verb, "pods") for rule in rules):
            return
        raise forbidden(
            name,
            f'User "{user}" cannot {verb} resource "pods" in API group "" in the namespace '
            f'"{namespace}"',
        )
