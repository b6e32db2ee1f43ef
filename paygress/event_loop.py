"""Which asyncio event loop the server runs on: uvloop when it is there, the stdlib's otherwise.

grpc.aio runs on any asyncio loop. On uvloop an ext_authz check costs about a sixth less CPU
than on the stdlib loop (bench/ext_authz.py measures both), so `auto` prefers it.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable

CHOICES = ("auto", "uvloop", "asyncio")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class EventLoopUnavailable(RuntimeError):
    """The configured event loop cannot be used here."""


def loop_factory(choice: str) -> tuple[str, LoopFactory | None]:
    """The loop's name and a factory for asyncio.Runner (None: the stdlib's default loop)."""
    if choice not in CHOICES:
        choices = ", ".join(CHOICES)
        raise EventLoopUnavailable(f"event_loop: unknown loop {choice!r} (one of {choices})")
    if choice == "asyncio":
        return "asyncio", None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError as exc:
        if choice == "uvloop":
            raise EventLoopUnavailable(
                "event_loop: uvloop is asked for but not installed (pip install uvloop)"
            ) from exc
        return "asyncio", None
    factory: LoopFactory = uvloop.new_event_loop
    return "uvloop", factory


def running_loop_name() -> str:
    """`uvloop` or `asyncio`: what the running loop is."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]
