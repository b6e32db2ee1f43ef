"""Tiers: pods sold by the second. Pure math on what a payment buys; no Kubernetes here."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Tier:
    """A pod size for sale. `rate_msat_per_second` prices its lifetime."""

    id: str
    cpu: str
    memory: str
    images: tuple[str, ...]
    port: int
    rate_msat_per_second: int
    min_seconds: int
    max_seconds: int
    description: str = ""

    @property
    def min_payment(self) -> int:
        """Smallest payment (sat, rounded up) that buys `min_seconds`."""
        return -(-self.min_seconds * self.rate_msat_per_second // 1000)

    def seconds_for(self, amount: int) -> int:
        """Seconds `amount` (in the unit; the rate is in thousandths of it) buys, rounded down
        to whole seconds (no clamp)."""
        return amount * 1000 // self.rate_msat_per_second

    def lifetime_for(self, amount: int) -> int | None:
        """Seconds a new pod gets for `amount`: clamped to `max_seconds`; None below the
        minimum."""
        seconds = self.seconds_for(amount)
        if seconds < self.min_seconds:
            return None
        return min(seconds, self.max_seconds)

    def image(self, requested: str | None) -> str | None:
        """The image to run: the requested one if allowed (None if not), else the default."""
        if not requested:
            return self.images[0]
        return requested if requested in self.images else None

    def offer(self, unit: str) -> dict[str, object]:
        """The tier in plain JSON (for 402 bodies and the offers endpoint)."""
        return {
            "tier": self.id,
            "description": self.description,
            "cpu": self.cpu,
            "memory": self.memory,
            "images": list(self.images),
            "port": self.port,
            "rate_msat_per_second": self.rate_msat_per_second,
            "min_seconds": self.min_seconds,
            "max_seconds": self.max_seconds,
            "min_payment": self.min_payment,
            "unit": unit,
        }


def pod_name(tier_id: str, grant_id: str) -> str:
    """A DNS-1123 pod name, stable for a grant: `pg-<tier>-<16 hex of the grant>`."""
    safe = "".join(c if c.isalnum() else "-" for c in tier_id.lower()).strip("-")[:40] or "tier"
    digest = hashlib.sha256(grant_id.encode()).hexdigest()[:16]
    return f"pg-{safe}-{digest}"
