"""The in-memory side of the redeem cache: live grants by token hash and by id."""

from __future__ import annotations

from collections.abc import Callable

from paygress.core.model import Grant


class GrantBook:
    """Live grants. Per_request usage is counted by the leases (paygress/core/leases.py); the
    ends of time grants moved by top-ups are written behind to the store (`take_dirty`)."""

    def __init__(self) -> None:
        self._by_token: dict[bytes, Grant] = {}
        self._by_id: dict[str, Grant] = {}
        self._keys: dict[str, list[bytes]] = {}
        self._dirty: dict[str, Grant] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def by_token(self, key: bytes) -> Grant | None:
        return self._by_token.get(key)

    def by_id(self, grant_id: str) -> Grant | None:
        return self._by_id.get(grant_id)

    def add(self, grant: Grant, key: bytes | None = None) -> Grant:
        """Remembers a grant (the one already held wins) and a token hash that leads to it."""
        grant = self._by_id.setdefault(grant.id, grant)
        if key is not None and key not in self._by_token:
            self._by_token[key] = grant
            self._keys.setdefault(grant.id, []).append(key)
        return grant

    def mark_dirty(self, grant: Grant) -> None:
        """A time grant's end moved (a top-up): it is written at the next flush."""
        self._dirty[grant.id] = grant

    def take_dirty(self) -> list[Grant]:
        dirty = list(self._dirty.values())
        self._dirty.clear()
        return dirty

    def evict_unusable(self, now: float, keep: Callable[[str], bool]) -> list[str]:
        """Forgets grants that are used up (the store still has them) unless `keep(id)`;
        returns their ids."""
        gone = [
            g
            for g in self._by_id.values()
            if not g.usable(now) and g.id not in self._dirty and not keep(g.id)
        ]
        for grant in gone:
            del self._by_id[grant.id]
            for key in self._keys.pop(grant.id, ()):
                self._by_token.pop(key, None)
        return [g.id for g in gone]
