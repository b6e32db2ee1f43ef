"""Refusals remembered: a token the mint (or our own checks) refused for good is refused again
from memory, so that replaying it costs no mint call.

Bounded in size (least recently used go first) and in time (entries expire, so that a token
refused for a reason that may change, e.g. an unknown keyset, is asked about again later).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

V = TypeVar("V")


class Refusals(Generic[V]):
    """Key → refusal, with expiry and a size bound."""

    def __init__(self, max_entries: int, ttl_seconds: float, clock: Callable[[], float]) -> None:
        self.max_entries = max_entries
        self.ttl = ttl_seconds
        self.clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def add(self, key: Hashable, value: V) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (self.clock() + self.ttl, value)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def any_of(self, keys: Iterable[Hashable]) -> V | None:
        """The refusal of the first of `keys` that has one."""
        for key in keys:
            value = self.get(key)
            if value is not None:
                return value
        return None
