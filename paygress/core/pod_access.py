"""The pod side of the decision: lifetimes bought, top-ups, routing to the payer's pod,
and the offers/status answers. Pure logic over the Pods and GrantStore ports.

Only a pod's payer may extend it: the answers for a paid pod carry its key
(HMAC-SHA256 of the pod's name under a key derived from the wallet seed, so every replica of one
seed agrees without shared state), and a top-up must present it before any mint call.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from paygress.core.model import Allow, Answer, Decision, Grant, Received
from paygress.core.ports import (
    GrantStore,
    PaymentRejected,
    PodRequest,
    Pods,
    PodsError,
    PodsRefused,
    PodState,
)
from paygress.core.pricing import Mode, RouteRule
from paygress.core.responses import JSON, deny
from paygress.core.session_access import SessionAccess
from paygress.core.tiers import Tier, pod_name

log = logging.getLogger("paygress.pods")

POD_HEADER = "x-paygress-pod"
KEY_HEADER = "x-paygress-pod-key"
IMAGE_HEADER = "x-paygress-image"
ORIGINAL_DST = "x-envoy-original-dst-host"
# A pod name as Kubernetes allows it (a DNS-1123 label): anything else cannot be one of ours.
POD_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


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
        *,
        owner_key: bytes,
        sessions: SessionAccess | None = None,
    ) -> None:
        self.pods = pods
        self.paths = paths
        self.unit = unit
        self.mints = mints
        self.tiers = tuple(tiers)
        self.clock = clock
        self.retry_after = str(retry_after_seconds)
        self._owner_mac = hmac.new(owner_key, digestmod=hashlib.sha256)
        self.sessions = sessions

    def key_of(self, pod: str) -> str:
        """The pod's key: what proves that a top-up comes from its payer."""
        mac = self._owner_mac.copy()
        mac.update(pod.encode())
        return mac.hexdigest()

    # -- answers without payment ---------------------------------------------------------

    def answers(self, path: str) -> bool:
        return path == self.paths.offers or path.startswith(self.paths.status)

    async def answer(self, path: str) -> Answer:
        """The offers list or a pod's status, as JSON (Envoy sends it as the response).
        Answered from memory only: anyone may ask, so asking must cost nothing."""
        path = path.split("?", 1)[0]
        if path == self.paths.offers:
            body = {
                "unit": self.unit,
                "mints": list(self.mints),
                "tiers": [t.offer(self.unit) for t in self.tiers],
            }
            return _json(200, "offers", body)
        name = path[len(self.paths.status) :].strip("/")
        if not name:
            return _json(404, "pod_not_found", {"error": "not_found", "pod": ""})
        if not POD_NAME.fullmatch(name):
            body = {"error": "bad_request", "message": "Not a pod name (a DNS-1123 label)."}
            return _json(400, "bad_pod_name", body)
        state = self.pods.state(name)  # the watch-fed view: no API call, whoever asks
        if state is None:
            return _json(404, "pod_not_found", {"error": "not_found", "pod": name})
        return _json(200, "pod_status", _status(state))

    # -- new payments -------------------------------------------------------------------------

    def precheck(self, rule: RouteRule, headers: Mapping[str, str]) -> Answer | None:
        """Checks of a tier request that need no network: the image asked for, and for a
        top-up (X-Paygress-Pod) the pod's key, so that only the payer extends a pod."""
        assert rule.tier is not None
        pod = headers.get(POD_HEADER)
        if pod is not None:
            return self._owner_check(pod, headers.get(KEY_HEADER))
        if rule.tier.image(headers.get(IMAGE_HEADER)) is None:
            return deny(
                400,
                "bad_request",
                "image_not_allowed",
                f"Image {headers.get(IMAGE_HEADER)!r} is not offered; choose one of "
                f"{list(rule.tier.images)}.",
            )
        return None

    def _owner_check(self, pod: str, key: str | None) -> Answer | None:
        if not key:
            return deny(
                403,
                "forbidden",
                "pod_key_required",
                f"A top-up of pod {pod[:63]!r} must carry the pod's key in X-Paygress-Pod-Key "
                "(its payer received it with the pod's answers).",
            )
        if not hmac.compare_digest(key.strip().encode(), self.key_of(pod).encode()):
            return deny(
                403,
                "forbidden",
                "pod_key_invalid",
                f"X-Paygress-Pod-Key is not the key of pod {pod[:63]!r}; only its payer may "
                "extend it.",
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
        """Routes a paid request to its pod, creating the pod first if needed. The payer's
        answers carry the pod's key (never sent upstream)."""
        tier = rule.tier
        assert tier is not None
        key = (KEY_HEADER, self.key_of(grant.pod))
        state = self.pods.state(grant.pod)
        if state is None:
            image = tier.image(headers.get(IMAGE_HEADER)) or tier.images[0]
            request = PodRequest(
                grant.pod, tier, image, grant.id, rule.name, grant.paid, grant.expires_at
            )
            try:
                state = await self.pods.ensure(request)
            except PodsError as exc:
                refused = isinstance(exc, PodsRefused)
                (log.error if refused else log.warning)("pod %s not created: %s", grant.pod, exc)
                reason = "kubernetes_refused" if refused else "kubernetes_unavailable"
                return self._unavailable(grant, reason, str(exc), key=key)
        if state.terminating:
            return self._unavailable(
                grant,
                "pod_terminating",
                f"Pod {grant.pod} is being deleted; while paid time is left it is made again: "
                "retry shortly.",
                state,
                key,
            )
        if not state.reachable:
            message = f"Pod {grant.pod} is {state.phase}; retry shortly."
            return self._unavailable(grant, "pod_starting", message, state, key)
        expires = ("x-paygress-expires", str(int(grant.expires_at)))
        pod = ("x-paygress-pod", grant.pod)
        destination = f"{state.ip}:{tier.port}"
        # The payer's session names the pod's address: the proxy routes it there by itself.
        session = self.sessions.issue(grant, destination) if self.sessions is not None else ()
        return Allow(
            reason="paid",
            upstream_headers=(
                (ORIGINAL_DST, destination),
                pod,
                expires,
                ("x-paygress-paid", str(grant.paid)),
                ("x-paygress-unit", grant.unit),
                ("x-paygress-route", grant.route),
            ),
            response_headers=(pod, expires, key, *session),
            remove_headers=_secrets(headers),
        )

    def still_at(self, pod: str, destination: str) -> bool:
        """Whether `pod` is reachable at `destination` (ip:port), as the watch last saw it."""
        state = self.pods.state(pod)
        if state is None or not state.reachable:
            return False
        return destination.rpartition(":")[0] == state.ip

    async def patch_expiry_annotation(self, pod: str, expires_at: float) -> None:
        """Sends the PATCH that moves the pod's expiry annotation to a paid end that is durable
        already (in the grant store). A failure is logged only: the Pods keeper compares the
        annotation with the durable paid end, PATCHes again until they match, and never
        reaps a pod before its durable paid end."""
        try:
            await self.pods.patch_expiry(pod, expires_at)
        except PodsError as exc:
            log.error("pod %s: expiry annotation not updated yet (will retry): %s", pod, exc)

    def _unavailable(
        self,
        grant: Grant,
        reason: str,
        message: str,
        state: PodState | None = None,
        key: tuple[str, str] | None = None,
    ) -> Answer:
        """503 + Retry-After for the payer of a pod that cannot take requests yet (with its
        key: the payer may top up before the pod runs)."""
        body = {
            "error": "pod_not_ready",
            "reason": reason,
            "message": message,
            "pod": grant.pod,
            "phase": state.phase if state else "Unknown",
            "expires_at": int(grant.expires_at),
        }
        headers = (JSON, ("retry-after", self.retry_after), ("x-paygress-pod", grant.pod))
        return Answer(
            status=503,
            reason=reason,
            headers=(*headers, key) if key else headers,
            body=json.dumps(body, separators=(",", ":")).encode(),
        )


class DurablePaidEnds:
    """The paid end of each pod as the grant store holds it: the latest end among the grants
    that reach the pod. A top-up's grant is stored with the proofs it paid with, before its
    PATCH, so this is where a pod's paid end is durable; the expiry annotation follows it."""

    def __init__(self, store: GrantStore) -> None:
        self.store = store

    async def __call__(self, pod: str) -> float:
        return max((g.expires_at for g in await self.store.grants_of_pod(pod)), default=0.0)


def _secrets(headers: Mapping[str, str]) -> tuple[str, ...]:
    """What must not reach the pod: the token (X-Cashu or Authorization) and the pod's key."""
    remove = tuple(h for h in ("x-cashu", KEY_HEADER) if h in headers)
    scheme, _, rest = headers.get("authorization", "").strip().partition(" ")
    scheme, rest = scheme.lower(), rest.strip()
    if (scheme == "cashu" and rest) or (scheme == "bearer" and rest.startswith("cashu")):
        remove += ("authorization",)
    return remove


def _status(state: PodState) -> dict[str, object]:
    return {
        "pod": state.name,
        "phase": state.phase,
        "ready": state.reachable and state.ready,
        "terminating": state.terminating,
        "expires_at": int(state.expires_at),
    }


def _json(status: int, reason: str, body: Mapping[str, object]) -> Answer:
    return Answer(
        status=status,
        reason=reason,
        headers=(JSON,),
        body=json.dumps(body, separators=(",", ":")).encode(),
    )
