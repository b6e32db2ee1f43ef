"""A counting TCP relay: put it in front of a peer (usually the mint) to see who talks to it.

    async with CountingProxy.to_url(mint.url) as proxy:
        ...  # point Paygress at proxy.url
        assert proxy.requests["/v1/swap"] == 1
        assert other_proxy.connections == 0

Bytes are relayed untouched in both directions. The client->server stream is also parsed as
HTTP/1.1 (request line, headers, ``Content-Length`` / chunked bodies, keep-alive, pipelining)
to count requests per path; a request is counted *before* its bytes are forwarded, so once a
client has its response the count is already there. A stream that does not parse as HTTP/1.1
(HTTP/2, TLS, an upgrade) is still relayed but no longer counted.

``source`` binds the proxy's own connections to the target to a local address (e.g.
``127.0.0.2``: a mint's rate limiter that exempts 127.0.0.1 then sees a client it limits).

Faults, for the next request to a path (answers on a connection follow its requests):

    proxy.hold_request("/v1/swap")    # not forwarded until release(): never reaches the mint
    proxy.hold_response("/v1/swap")   # forwarded; the answer is kept back until release()
    proxy.trickle("/v1/swap", 0.5)    # the answer comes one byte per 0.5 s
    await proxy.wait_held()           # until a held request or answer is there
    proxy.release()                   # lets everything held through
    proxy.drop_held()                 # closes the held connections instead (answer lost)
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from typing import Self
from urllib.parse import urlsplit

from .lifecycle import Lifecycle
from .procs import LOOPBACK, free_port

_REQUEST_LINE = re.compile(rb"^([A-Z]+) (\S+) HTTP/1\.[01]$")
_MAX_HEAD = 64 * 1024


class _RequestSniffer:
    """Incremental HTTP/1.1 request parser that only reports request lines."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.state = "head"
        self.remaining = 0

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        if self.state == "opaque":
            return found
        self.buf += data
        while True:
            if self.state == "head":
                # tolerate stray CRLFs between requests
                while self.buf[:2] == b"\r\n":
                    del self.buf[:2]
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > _MAX_HEAD:
                        self._give_up()
                    return found
                head = bytes(self.buf[:end]).split(b"\r\n")
                del self.buf[: end + 4]
                match = _REQUEST_LINE.match(head[0])
                if match is None:
                    self._give_up()
                    return found
                method = match.group(1).decode()
                found.append((method, match.group(2).decode("latin-1")))
                headers: dict[bytes, bytes] = {}
                for line in head[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip().lower()
                if method == "CONNECT" or b"upgrade" in headers:
                    self._give_up()
                    return found
                if b"chunked" in headers.get(b"transfer-encoding", b""):
                    self.state = "chunk-size"
                else:
                    try:
                        self.remaining = int(headers.get(b"content-length", b"0"))
                    except ValueError:
                        self._give_up()
                        return found
                    self.state = "body" if self.remaining else "head"
            elif self.state in ("body", "chunk-data"):
                take = min(self.remaining, len(self.buf))
                del self.buf[:take]
                self.remaining -= take
                if self.remaining:
                    return found
                self.state = "head" if self.state == "body" else "chunk-size"
            elif self.state == "chunk-size":
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return found
                try:
                    size = int(bytes(self.buf[:end]).split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self._give_up()
                    return found
                del self.buf[: end + 2]
                if size == 0:
                    self.state = "trailers"
                else:
                    self.remaining = size + 2  # data + CRLF
                    self.state = "chunk-data"
            elif self.state == "trailers":
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return found
                del self.buf[: end + 2]
                if end == 0:
                    self.state = "head"
            else:  # opaque
                return found

    def _give_up(self) -> None:
        self.state = "opaque"
        self.buf.clear()


class CountingProxy(Lifecycle):
    """TCP relay on ``127.0.0.1:<free port>`` to ``target_host:target_port``.

    Counters: ``connections`` (accepted), ``active`` (open now), ``upstream_failures``
    (accepted but the target refused), ``requests`` (``Counter`` of request paths without the
    query string), ``request_log`` (``(method, target)`` in arrival order). :meth:`reset`
    zeroes them.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        port: int | None = None,
        host: str = LOOPBACK,
        source: str | None = None,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.source = source
        self._faults: dict[str, tuple[str, float]] = {}
        self._held = 0
        self._release = asyncio.Event()
        self._drop = asyncio.Event()
        self.port = port if port is not None else free_port(host)
        self.connections = 0
        self.active = 0
        self.upstream_failures = 0
        self.requests: Counter[str] = Counter()
        self.request_log: list[tuple[str, str]] = []
        self.request_times: list[float] = []  # time.monotonic() of each request in the log
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._changed = asyncio.Event()

    @classmethod
    def to_url(
        cls, url: str, *, port: int | None = None, source: str | None = None
    ) -> CountingProxy:
        """A proxy in front of the host:port of an ``http://`` URL."""
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"URL needs an explicit host and port: {url}")
        return cls(parts.hostname, parts.port, port=port, source=source)

    # -- faults ----------------------------------------------------------------------------

    def hold_request(self, path: str) -> None:
        self._faults[path] = ("hold_request", 0.0)

    def hold_response(self, path: str) -> None:
        self._faults[path] = ("hold_response", 0.0)

    def trickle(self, path: str, interval: float) -> None:
        self._faults[path] = ("trickle", interval)

    @property
    def held(self) -> int:
        return self._held

    async def wait_held(self, count: int = 1, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while self._held < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self._held} held, wanted {count}")
            await asyncio.sleep(0.01)

    def release(self) -> None:
        self._faults.clear()
        self._release.set()

    def drop_held(self) -> None:
        self._faults.clear()
        self._drop.set()

    async def _stall(self) -> bool:
        """Waits for release() (True) or drop_held() (False)."""
        self._held += 1
        try:
            release = asyncio.ensure_future(self._release.wait())
            drop = asyncio.ensure_future(self._drop.wait())
            done, pending = await asyncio.wait({release, drop}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            return release in done
        finally:
            self._held -= 1
            if self._held == 0:
                self._release.clear()
                self._drop.clear()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def requests_between(self, start: float, end: float) -> list[tuple[str, str]]:
        """The requests that arrived between two time.monotonic() readings."""
        return [
            entry
            for entry, at in zip(self.request_log, self.request_times, strict=True)
            if start <= at <= end
        ]

    def reset(self) -> None:
        self.connections = 0
        self.upstream_failures = 0
        self.requests.clear()
        self.request_log.clear()
        self.request_times.clear()

    async def wait_for_requests(self, path: str, count: int = 1, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until ``requests[path] >= count``."""
        deadline = time.monotonic() + timeout
        while self.requests[path] < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"{self.requests[path]} requests to {path} after {timeout}s, wanted {count}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=left)

    def _record(self, method: str, target: str) -> None:
        self.request_log.append((method, target))
        self.request_times.append(time.monotonic())
        self.requests[target.split("?", 1)[0]] += 1
        self._changed.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.active += 1
        self._writers.add(writer)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(
                    self.target_host,
                    self.target_port,
                    local_addr=(self.source, 0) if self.source else None,
                )
            except OSError:
                self.upstream_failures += 1
                return
            self._writers.add(upstream_writer)
            sniffer = _RequestSniffer()
            answer: list[tuple[str, float]] = [("", 0.0)]  # the fault of the current answer

            async def client_to_server() -> None:
                assert upstream_writer is not None
                while data := await reader.read(65536):
                    for method, target in sniffer.feed(data):
                        self._record(method, target)
                        fault = self._faults.pop(target.split("?", 1)[0], ("", 0.0))
                        answer[0] = fault
                        if fault[0] == "hold_request" and not await self._stall():
                            raise ConnectionResetError("dropped while held")
                    upstream_writer.write(data)
                    await upstream_writer.drain()
                if upstream_writer.can_write_eof():
                    upstream_writer.write_eof()

            async def server_to_client() -> None:
                while data := await upstream_reader.read(65536):
                    kind, interval = answer[0]
                    if kind == "hold_response":
                        if not await self._stall():
                            raise ConnectionResetError("answer dropped")
                        answer[0] = ("", 0.0)
                    if kind == "trickle":
                        for i in range(len(data)):
                            writer.write(data[i : i + 1])
                            await writer.drain()
                            await asyncio.sleep(interval)
                        continue
                    writer.write(data)
                    await writer.drain()
                if writer.can_write_eof():
                    writer.write_eof()

            tasks = [
                asyncio.ensure_future(client_to_server()),
                asyncio.ensure_future(server_to_client()),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                # One direction failed (reset): tear down both. Clean EOFs finish normally.
                if any(not t.cancelled() and t.exception() is not None for t in done):
                    for t in tasks:
                        t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                for t in tasks:
                    t.cancel()
        finally:
            self.active -= 1
            for w in (writer, upstream_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.close()
                    with contextlib.suppress(OSError, asyncio.CancelledError):
                        await w.wait_closed()

    async def start(self) -> Self:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, reuse_address=True, backlog=1024
        )
        return self

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for w in list(self._writers):
            w.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), timeout=2.0)
        self._server = None
