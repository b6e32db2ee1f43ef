"""The pod side of the decision: lifetimes bought, top-ups, routing to the payer's pod,
and the offers/status answers. Pure logic over the Pods and GrantStore ports."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from paygress.core.model import Allow, Decision, Deny, Grant, Received
from paygress.core.ports import (
    PaymentRejected,
    PodRequest,
    Pods,
    PodState,
    PodsUnavailable,
)
from paygress.core.pricing import Mode, RouteRule
from paygress.core.responses import JSON, deny
from paygress.core.tiers import Tier, pod_name

log = logging.getLogger("paygress.pods")

POD_HEADER = "x-paygress-pod"
IMAGE_HEADER = "x-paygress-image"
ORIGINAL_DST = "x-envoy-original-dst-host"


@dataclass(frozen=True, slots=True)
class PodPaths:
    offers: str = "/.well-known/paygress/offers"
    status: str = "/.well-known/paygress/pods/"


@dataclass(frozen=True, slots=True)
class TopUp:
    """A payment that extends the life of an existing pod and the grants that reach it."""

    pod: str
    owners: tuple[Grant, ...]


class PodAccess:
    """Decides for tier routes. The gate hands it grants; it never touches money."""

    def __init__(
        self,
        pods: Pods,
        paths: PodPaths,
        unit: str,
        mints: tuple[str, ...],
        tiers: Sequence[Tier],
        clock: Callable[[], float],
        retry_after_seconds: int = 2,
    ) -> None:
        self.pods = pods
        self.paths = paths
        self.unit = unit
        self.mints = mints
        self.tiers = tuple(tiers)
        self.clock = clock
        self.retry_after = str(retry_after_seconds)

    # -- answers without payment ---------------------------------------------------------

    def answers(self, path: str) -> bool:
        return path == self.paths.offers or path.startswith(self.paths.status)

    async def answer(self, path: str) -> Deny:
        """The offers list or a pod's status, as JSON (Envoy sends it as the response)."""
        path = path.split("?", 1)[0]
        if path == self.paths.offers:
            body = {
                "unit": self.unit,
                "mints": list(self.mints),
                "tiers": [t.offer(self.unit) for t in self.tiers],
            }
            return _json(200, "offers", body)
        name = path[len(self.paths.status) :].strip("/")
        state = self.pods.state(name) or await self._refresh(name)
        if state is None:
            return _json(404, "pod_not_found", {"error": "not_found", "pod": name})
        return _json(200, "pod_status", _status(state))

    # -- new payments -------------------------------------------------------------------------

    def precheck(self, rule: RouteRule, headers: Mapping[str, str]) -> Deny | None:
        """Checks of a tier request that need no network (the image asked for)."""
        assert rule.tier is not None
        if POD_HEADER not in headers and rule.tier.image(headers.get(IMAGE_HEADER)) is None:
            return deny(
                400,
                "bad_request",
                "image_not_allowed",
                f"Image {headers.get(IMAGE_HEADER)!r} is not offered; choose one of "
                f"{list(rule.tier.images)}.",
            )
        return None

    def new_grant(
        self,
        fp: str,
        rule: RouteRule,
        mint: str,
        received: Received,
        top_up: TopUp | None,
    ) -> Grant:
        """The grant a payment buys on a tier route: a new pod's lifetime, or more time."""
        tier = rule.tier
        assert tier is not None
        # Whole seconds: the expiry annotation (RFC 3339) that reapers read is the same instant.
        now = float(int(self.clock()))
        credited = received.credited
        if top_up is None:
            lifetime = tier.lifetime_for(credited)
            if lifetime is None:
                raise PaymentRejected(
                    "insufficient",
                    f"A {tier.id} pod needs at least {tier.min_payment} {self.unit} "
                    f"({tier.min_seconds} s at {tier.rate_msat_per_second} msat/s).",
                )
            pod, expires_at = pod_name(tier.id, fp), now + lifetime
        else:
            current_end = max(now, *(g.expires_at for g in top_up.owners))
            born = min(g.created_at for g in top_up.owners)
            expires_at = min(current_end + tier.seconds_for(credited), born + tier.max_seconds)
            if expires_at <= current_end:
                raise PaymentRejected(
                    "max_lifetime",
                    f"Pod {top_up.pod} cannot live longer than {tier.max_seconds} s, or the "
                    "payment buys less than a second.",
                )
            pod = top_up.pod
        return Grant(
            id=fp,
            route=rule.name,
            mode=Mode.POD,
            unit=self.unit,
            mint=mint,
            paid=credited,
            created_at=now,
            expires_at=expires_at,
            pod=pod,
        )

    # -- using a grant ---------------------------------------------------------------------------

    async def use(self, grant: Grant, rule: RouteRule, headers: Mapping[str, str]) -> Decision:
        """Routes a paid request to its pod, creating the pod first if needed."""
        tier = rule.tier
        assert tier is not None
        state = self.pods.state(grant.pod)
        if state is None:
            image = tier.image(headers.get(IMAGE_HEADER)) or tier.images[0]
            request = PodRequest(
                grant.pod, tier, image, grant.id, rule.name, grant.paid, grant.expires_at
            )
            try:
                state = await self.pods.ensure(request)
            except PodsUnavailable as exc:
                log.warning("pod %s not created: %s", grant.pod, exc)
                return self._unavailable(grant, "kubernetes_unavailable", str(exc))
        if not state.reachable:
            state = await self._refresh(grant.pod) or state
        if not state.reachable:
            return self._unavailable(
                grant, "pod_starting", f"Pod {grant.pod} is {state.phase}; retry shortly.", state
            )
        expires = ("x-paygress-expires", str(int(grant.expires_at)))
        pod = ("x-paygress-pod", grant.pod)
        return Allow(
            reason="paid",
            upstream_headers=(
                (ORIGINAL_DST, f"{state.ip}:{tier.port}"),
                pod,
                expires,
                ("x-paygress-paid", str(grant.paid)),
                ("x-paygress-unit", grant.unit),
                ("x-paygress-route", grant.route),
            ),
            response_headers=(pod, expires),
            remove_headers=tuple(h for h in ("x-cashu",) if h in headers),
        )

    async def extended(self, pod: str, expires_at: float) -> None:
        """Moves the pod's expiry annotation; a failure is logged (the reaper trusts the
        grant store of this instance too) and retried by the next top-up or reconcile."""
        try:
            await self.pods.extend(pod, expires_at)
        except PodsUnavailable as exc:
            log.error("pod %s: expiry not updated in Kubernetes: %s", pod, exc)

    async def _refresh(self, name: str) -> PodState | None:
        try:
            return await self.pods.refresh(name)
        except PodsUnavailable:
            return None

    def _unavailable(
        self, grant: Grant, reason: str, message: str, state: PodState | None = None
    ) -> Deny:
        body = {
            "error": "pod_not_ready",
            "reason": reason,
            "message": message,
            "pod": grant.pod,
            "phase": state.phase if state else "Unknown",
            "expires_at": int(grant.expires_at),
        }
        return Deny(
            status=503,
            reason=reason,
            headers=(JSON, ("retry-after", self.retry_after), ("x-paygress-pod", grant.pod)),
            body=json.dumps(body, separators=(",", ":")).encode(),
        )


def _status(state: PodState) -> dict[str, object]:
    return {
        "pod": state.name,
        "phase": state.phase,
        "ready": state.reachable and state.ready,
        "expires_at": int(state.expires_at),
    }


def _json(status: int, reason: str, body: Mapping[str, object]) -> Deny:
    return Deny(
        status=status,
        reason=reason,
        headers=(JSON,),
        body=json.dumps(body, separators=(",", ":")).encode(),
    )
