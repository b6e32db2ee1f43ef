import asyncio
import sys

import pytest

from paygress.event_loop import EventLoopUnavailable, loop_factory, running_loop_name


def _without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import uvloop` raise ImportError, as if it were not installed.
    monkeypatch.setitem(sys.modules, "uvloop", None)


def test_auto_and_uvloop_run_on_uvloop() -> None:
    for choice in ("auto", "uvloop"):
        name, factory = loop_factory(choice)
        assert name == "uvloop" and factory is not None
        with asyncio.Runner(loop_factory=factory) as runner:
            assert runner.run(_name()) == "uvloop"


def test_asyncio_runs_on_the_stdlib_loop() -> None:
    name, factory = loop_factory("asyncio")
    assert (name, factory) == ("asyncio", None)
    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(_name()) == "asyncio"


def test_auto_falls_back_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_uvloop(monkeypatch)
    assert loop_factory("auto") == ("asyncio", None)


def test_uvloop_asked_for_but_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_uvloop(monkeypatch)
    with pytest.raises(EventLoopUnavailable, match="uvloop is asked for but not installed"):
        loop_factory("uvloop")


def test_unknown_choice_is_refused() -> None:
    with pytest.raises(EventLoopUnavailable, match="event_loop: unknown loop 'trio'"):
        loop_factory("trio")


async def _name() -> str:
    return running_loop_name()
