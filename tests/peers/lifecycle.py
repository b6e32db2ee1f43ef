"""`async with peer:` for every peer: start on enter, close on exit."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Lifecycle:
    """Subclasses define `start()` and `stop()` (or `aclose()` when closing is more)."""

    async def start(self) -> Self:
        raise NotImplementedError

    async def stop(self) -> object:
        raise NotImplementedError

    async def aclose(self) -> None:
        await self.stop()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
