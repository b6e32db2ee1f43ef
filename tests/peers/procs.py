"""Process plumbing for the test peers: free ports, readiness waits, managed child processes.

Every peer runs on loopback, on a port picked at random, with its files in a directory of its own.
A :class:`ManagedProcess` runs in a process group of its own (so stopping it also stops anything it
forked), writes stdout and stderr to ``<workdir>/<name>.log``, and raises :class:`StartupError`
with the tail of that log when it does not come up. Children are also killed when the Python
process that started them exits (``atexit``) or dies (``PR_SET_PDEATHSIG`` on Linux), so a
crashed test run leaves nothing running.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Self

import httpx

from .lifecycle import Lifecycle

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV = REPO_ROOT / ".venv"
VENV_MINT = REPO_ROOT / ".venv-mint"

LOOPBACK = "127.0.0.1"


class PeerError(RuntimeError):
    """A test peer could not be started, reached or stopped."""


class StartupError(PeerError):
    """A peer did not become ready; the message ends with the tail of its log."""


class ProcessExitedError(PeerError):
    """A peer's process exited while we were waiting for it."""


# ---------------------------------------------------------------------------------------------
# ports and logs


_handed_out: set[int] = set()


def free_port(host: str = LOOPBACK, *, run: int = 1) -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it, close); with `run`, the
    first of that many consecutive free ports (e.g. one per worker process).

    Ports already handed out by this process are never handed out twice, so peers started
    side by side do not race each other for the same number.
    """
    for _ in range(100):
        with contextlib.ExitStack() as held:
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
            ports = range(port, port + run)
            try:
                for more in ports[1:]:
                    held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)).bind(
                        (host, more)
                    )
            except OSError:
                continue
        if not _handed_out.intersection(ports):
            _handed_out.update(ports)
            return port
    raise PeerError("could not find a free port")


def log_tail(path: Path, lines: int = 60, max_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def base_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment for a child process.

    Deliberately not a copy of ``os.environ``: nutshell's settings read *any* environment
    variable named like one of its fields (case-insensitively: ``HTTP_PROXY``, ``DEBUG``,
    ``TOR``, ``MINT_*`` ...) and httpx honours proxy variables, so an inherited variable could
    silently change a peer's behaviour or send loopback traffic elsewhere. ``HOME`` points into
    the peer's own directory so that nothing reads or writes the user's dotfiles.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(home),
        "TMPDIR": os.environ.get("TMPDIR", tempfile.gettempdir()),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if extra:
        env.update(extra)
    return env


# ---------------------------------------------------------------------------------------------
# cleanup of children when this process goes away

_live_groups: set[int] = set()


def register_group(pgid: int) -> None:
    """Remember a child process group so that it is killed if this interpreter exits."""
    _live_groups.add(pgid)


def unregister_group(pgid: int) -> None:
    _live_groups.discard(pgid)


@atexit.register
def _kill_live_groups() -> None:
    for pgid in list(_live_groups):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    _live_groups.clear()


_PR_SET_PDEATHSIG = 1
# Resolved here, in the parent: after fork() the child may only do async-signal-safe things.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """preexec_fn: have the kernel SIGKILL the child when the thread that forked it dies.

    Linux only; a no-op elsewhere. The children are started from the event-loop thread, which
    lives as long as the test session / benchmark.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def child_preexec() -> Callable[[], None]:
    """The ``preexec_fn`` used for every child (also by the asyncio-spawned wallet server)."""
    return _die_with_parent


# ---------------------------------------------------------------------------------------------
# waiting


async def _wait_until(
    probe: Callable[[], Awaitable[bool]],
    *,
    what: str,
    timeout: float,  # noqa: ASYNC109
    interval: float,
    proc: ManagedProcess | None,
) -> None:
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if proc is not None:
            proc.check_alive()
        try:
            if await probe():
                return
        except (TimeoutError, OSError, httpx.HTTPError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        await asyncio.sleep(interval)


async def wait_for_port(
    host: str,
    port: int,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109
    interval: float = 0.05,
    proc: ManagedProcess | None = None,
) -> None:
    """Wait until a TCP connection to host:port succeeds."""

    async def probe() -> bool:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=1.0)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    await _wait_until(
        probe, what=f"tcp://{host}:{port}", timeout=timeout, interval=interval, proc=proc
    )


async def wait_for_http(
    url: str,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109
    interval: float = 0.05,
    status: int | None = 200,
    accept: Callable[[httpx.Response], bool] | None = None,
    proc: ManagedProcess | None = None,
) -> httpx.Response:
    """Wait until GET ``url`` answers ``status`` (any status if None) and ``accept(response)``.

    Returns the accepted response. Proxy variables are ignored (``trust_env=False``).
    """
    accepted: list[httpx.Response] = []
    async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:

        async def probe() -> bool:
            response = await client.get(url)
            if status is not None and response.status_code != status:
                return False
            if accept is not None and not accept(response):
                return False
            accepted.append(response)
            return True

        await _wait_until(probe, what=url, timeout=timeout, interval=interval, proc=proc)
    return accepted[-1]


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


async def wait_for_unix_socket(
    path: str | Path,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109
    interval: float = 0.05,
    connect: bool = True,
    proc: ManagedProcess | None = None,
) -> None:
    """Wait until ``path`` is a Unix socket (and, if ``connect``, accepts a connection).

    Connecting matters: a stale socket file left by a killed server exists but refuses.
    """
    sock_path = Path(path)

    async def probe() -> bool:
        if not _is_socket(sock_path):
            return False
        if connect:
            _, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(sock_path)), timeout=1.0
            )
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return True

    await _wait_until(
        probe, what=f"unix:{sock_path}", timeout=timeout, interval=interval, proc=proc
    )


# ---------------------------------------------------------------------------------------------
# managed processes


class ManagedProcess(Lifecycle):
    """A child process with its own process group, log file and working directory.

    Subclasses implement :meth:`command` and usually :meth:`environment` and
    :meth:`wait_ready`; :meth:`prepare` runs before every (re)start (e.g. to write a config).

    ``await p.start()`` / ``await p.stop()`` / ``await p.restart()``; or
    ``async with P(...) as p:`` which also removes the working directory afterwards if the
    object created it (a ``workdir`` passed in is left alone, logs included).
    """

    name: str = "process"
    startup_timeout: float = 30.0
    stop_timeout: float = 10.0

    def __init__(self, workdir: str | Path | None = None, *, name: str | None = None) -> None:
        if name is not None:
            self.name = name
        self._owns_workdir = workdir is None
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix=f"paygress-{self.name}-")
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.name}.log"
        self.starts = 0
        self._popen: subprocess.Popen[bytes] | None = None

    # -- hooks -------------------------------------------------------------------------------

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return base_env(self.workdir)

    def cwd(self) -> Path:
        return self.workdir

    def prepare(self) -> None:
        """Called before every spawn."""

    async def wait_ready(self) -> None:
        """Return once the process serves; raise (or time out) otherwise."""

    # -- state -------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode if self._popen is not None else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)

    def check_alive(self) -> None:
        """Raise :class:`ProcessExitedError` (with the log tail) if the process has exited."""
        if self._popen is None:
            raise ProcessExitedError(f"{self.name} was not started")
        code = self._popen.poll()
        if code is not None:
            self._forget()
            raise ProcessExitedError(
                f"{self.name} exited with code {code}\n"
                f"--- last lines of {self.log_path} ---\n{self.log_tail()}"
            )

    # -- lifecycle ---------------------------------------------------------------------------

    def spawn(self) -> None:
        """Start the process without waiting for readiness."""
        if self.running:
            raise PeerError(f"{self.name} is already running (pid {self.pid})")
        self.prepare()
        argv = self.command()
        self.starts += 1
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n=== {stamp} start #{self.starts}: {' '.join(argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                argv,
                cwd=self.cwd(),
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=child_preexec(),
            )
        register_group(self._popen.pid)

    async def start(self) -> Self:
        """Spawn the process and wait until it is ready (``startup_timeout``)."""
        self.spawn()
        try:
            await asyncio.wait_for(self.wait_ready(), timeout=self.startup_timeout)
        except asyncio.CancelledError:
            self.kill()
            raise
        except Exception as exc:
            code = self._popen.poll() if self._popen is not None else None
            self.kill()
            state = f"exited with code {code}" if code is not None else "killed"
            raise StartupError(
                f"{self.name} did not become ready ({state}): {exc}\n"
                f"command: {' '.join(self.command())}\n"
                f"--- last lines of {self.log_path} ---\n{self.log_tail()}"
            ) from exc
        return self

    def _signal_group(self, sig: int) -> None:
        if self._popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)

    def _leader_exited(self) -> bool:
        """True once the group leader has exited. Does not reap it, so its pid (the group id)
        cannot be reused while we still signal the group."""
        assert self._popen is not None
        if self._popen.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self._popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def _reap(self) -> int | None:
        assert self._popen is not None
        # Stragglers of the group (children the leader did not take down) go too.
        self._signal_group(signal.SIGKILL)
        code = self._popen.wait()
        self._forget()
        return code

    def _forget(self) -> None:
        if self._popen is not None:
            unregister_group(self._popen.pid)

    async def stop(self, timeout: float | None = None, sig: int = signal.SIGTERM) -> int | None:  # noqa: ASYNC109
        """Send ``sig`` (SIGTERM) to the process group, wait up to ``timeout``, then SIGKILL.

        Returns the exit code of the main process (negative signal number if killed), or None
        if it was never started.
        """
        if self._popen is None:
            return None
        if self._popen.returncode is not None:
            self._forget()
            return self._popen.returncode
        timeout = self.stop_timeout if timeout is None else timeout
        self._signal_group(sig)
        if not await self._wait_leader_exit(timeout):
            self._signal_group(signal.SIGKILL)
            await self._wait_leader_exit(10.0)
        return self._reap()

    async def _wait_leader_exit(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        # Polling: a child's exit offers nothing to await without reaping it.
        while not self._leader_exited() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        return self._leader_exited()

    def kill(self) -> int | None:
        """SIGKILL the process group and reap it, synchronously."""
        if self._popen is None:
            return None
        if self._popen.returncode is None:
            self._signal_group(signal.SIGKILL)
        return self._reap()

    async def restart(self) -> Self:
        await self.stop()
        return await self.start()

    def cleanup(self) -> None:
        """Remove the working directory if this object created it. Call after stop()."""
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def aclose(self) -> None:
        await self.stop()
        self.cleanup()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {self.name} {state} {self.workdir}>"
