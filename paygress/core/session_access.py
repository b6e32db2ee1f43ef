"""Paid sessions in the decision. The allow of a time grant (a `per_second` route, a pod)
carries a signed session; a request that presents a valid session for its route is allowed
without a token. The proxy verifies sessions itself where it can (Envoy's jwt_authn), so most
of them never reach Paygress; those that do (forward-auth proxies, a session the proxy refused)
are judged here by the same rules: our signature, this route, before the paid end.

Pure: signing and reading tokens is the SessionTokens port's (paygress/sessions.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate

from paygress.core.model import Allow, Grant, Headers
from paygress.core.ports import SessionClaims, SessionTokens

SESSION_HEADER = "x-paygress-session"
# Ours are ~400 bytes; anything much larger is not ours, and is neither verified nor remembered
# (the read cache holds at most _CACHE_MAX * MAX_SESSION_BYTES of what clients send).
MAX_SESSION_BYTES = 2048
_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class SessionSettings:
    header: str = SESSION_HEADER
    cookie: str = ""  # also sent as this cookie (browsers); "" = header only
    # A pod's session ends at most this long after it is issued (before the paid end): an
    # address is in it, and a pod that is made again gets another one.
    pod_max_seconds: int = 300
    # `exp` is this much before the paid end. Envoy's jwt_authn accepts a session while
    # floor(now) <= exp + clock_skew_seconds, i.e. until exp + skew + 1: the margin is the
    # proxy's skew plus one (Envoy's least skew is 1 s; Istio's RequestAuthentication: 60 s).
    expiry_margin_seconds: int = 2


class SessionAccess:
    """Issues sessions for time grants and judges the sessions requests present."""

    def __init__(
        self,
        tokens: SessionTokens,
        settings: SessionSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tokens = tokens
        self.settings = settings
        self.clock = clock
        self._read: dict[str, SessionClaims | None] = {}
        self._allows: dict[tuple[SessionClaims, tuple[str, ...]], Allow] = {}
        self._issued: dict[tuple[str, float, str], tuple[int, Headers]] = {}

    # -- issuing -----------------------------------------------------------------------------

    def issue(self, grant: Grant, destination: str = "") -> Headers:
        """Response headers carrying a new session for `grant`, until its paid end less the
        proxy's clock skew (a pod's: at most `pod_max_seconds`); none when that is past. The
        same session is handed out again while it has at least half of a pod's session life
        left (a signature costs more than a check)."""
        now = int(self.clock())
        end = int(grant.expires_at) - self.settings.expiry_margin_seconds
        key = (grant.id, grant.expires_at, destination)
        issued = self._issued.get(key)
        if issued is not None and (
            issued[0] == end or issued[0] - now > self.settings.pod_max_seconds // 2
        ):
            return issued[1]
        if grant.pod:
            end = min(end, now + self.settings.pod_max_seconds)
        if end <= now:
            return ()
        claims = SessionClaims(
            grant.route, grant.id[:16], end, grant.paid, grant.unit, grant.pod, destination
        )
        token = self.tokens.sign(claims, now)
        headers: Headers = ((self.settings.header, token),)
        if self.settings.cookie:
            cookie = (
                f"{self.settings.cookie}={token}; Path=/; Expires={formatdate(end, usegmt=True)}; "
                "HttpOnly; Secure; SameSite=Lax"
            )
            headers += (("set-cookie", cookie),)
        if len(self._issued) >= _CACHE_MAX:
            self._issued.clear()
        self._issued[key] = (end, headers)
        return headers

    def with_session(self, allow: Allow, grant: Grant, destination: str = "") -> Allow:
        """`allow` plus a session for the client and the paid end as its cache lifetime."""
        return Allow(
            reason=allow.reason,
            upstream_headers=allow.upstream_headers,
            response_headers=allow.response_headers + self.issue(grant, destination),
            remove_headers=allow.remove_headers,
            cache_until=grant.expires_at,
        )

    # -- judging -----------------------------------------------------------------------------

    def presented(self, headers: Mapping[str, str]) -> str | None:
        """The session a request carries (header first, then cookie), if any."""
        value = headers.get(self.settings.header)
        if value:
            return value.strip()
        if self.settings.cookie:
            return _cookie(headers.get("cookie", ""), self.settings.cookie)
        return None

    def read(self, token: str) -> SessionClaims | None:
        """The claims of a session we signed, or None; remembered either way (bounded), so a
        replayed session, good or forged, costs no signature check. One too long to be ours is
        refused unread and not remembered."""
        if len(token) > MAX_SESSION_BYTES:
            return None
        try:
            return self._read[token]
        except KeyError:
            pass
        claims = self.tokens.read(token)
        if len(self._read) >= _CACHE_MAX:
            self._read.clear()
        self._read[token] = claims
        return claims

    def allow(self, claims: SessionClaims, spoofed: tuple[str, ...]) -> Allow:
        """The allow of a valid session: what it paid for goes upstream (forged copies of
        those headers are overwritten, others removed), and the session itself does not."""
        key = (claims, spoofed)
        allow = self._allows.get(key)
        if allow is None:
            upstream: Headers = (
                ("x-paygress-paid", str(claims.paid)),
                ("x-paygress-unit", claims.unit),
                ("x-paygress-grant", claims.grant),
                ("x-paygress-route", claims.route),
                ("x-paygress-expires", str(claims.expires_at)),
            )
            if claims.pod:
                upstream += (("x-paygress-pod", claims.pod),)
            names = {name for name, _ in upstream}
            remove = (self.settings.header, *(h for h in spoofed if h not in names))
            allow = Allow(
                reason="session",
                upstream_headers=upstream,
                remove_headers=remove,
                cache_until=float(claims.expires_at),
            )
            if len(self._allows) >= _CACHE_MAX:
                self._allows.clear()
            self._allows[key] = allow
        return allow


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name and value:
            return value
    return None
