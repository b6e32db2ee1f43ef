"""A tiny HTTP/1.1 echo server: the "paid service" behind Envoy.

Every request is answered ``200`` with a JSON body
``{"method": ..., "path": ..., "headers": {lowercased name: value}}`` so tests can see exactly
what Envoy forwarded upstream (and what Paygress added or removed). Keep-alive, pipelining,
``Content-Length`` and chunked request bodies are supported; stdlib only.

In-process::

    async with EchoUpstream() as upstream:
        upstream.url, upstream.port, upstream.count, upstream.requests[-1]

Standalone (for the benchmark)::

    python -m tests.peers.upstream --port 8080
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections import deque
from typing import Any, Self

from .lifecycle import Lifecycle
from .procs import LOOPBACK, free_port

MAX_HEADER_BYTES = 64 * 1024


class _BadRequest(Exception):
    pass


class _EchoProtocol(asyncio.Protocol):
    def __init__(self, server: EchoUpstream) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections += 1
        self.server._transports.add(transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            while self.transport is not None and self._handle_one():
                pass
        except _BadRequest as exc:
            self._reply(400, {"error": str(exc)}, keep_alive=False)

    def _handle_one(self) -> bool:
        """Parse and answer one complete request from the buffer; False if incomplete."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEADER_BYTES:
                raise _BadRequest("headers too large")
            return False
        head = bytes(self.buffer[:end]).decode("latin-1")
        lines = head.split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError as exc:
            raise _BadRequest(f"bad request line {lines[0]!r}") from exc
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest(f"bad header line {line!r}")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        body_start = end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parsed = _parse_chunked(self.buffer, body_start)
            if parsed is None:
                return False
            body, consumed = parsed
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError as exc:
                raise _BadRequest("bad content-length") from exc
            if len(self.buffer) < body_start + length:
                return False
            body = bytes(self.buffer[body_start : body_start + length])
            consumed = body_start + length
        del self.buffer[:consumed]

        connection = headers.get("connection", "").lower()
        keep_alive = (
            "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
        )
        record = {"method": method, "path": target, "headers": headers}
        self.server._record(record, len(body))
        self._reply(200, record, keep_alive=keep_alive, head_only=method == "HEAD")
        return keep_alive

    def _reply(
        self, status: int, payload: dict[str, Any], *, keep_alive: bool, head_only: bool = False
    ) -> None:
        if self.transport is None:
            return
        body = json.dumps(payload).encode()
        reason = {200: "OK", 400: "Bad Request"}.get(status, "")
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        ).encode()
        self.transport.write(head if head_only else head + body)
        if not keep_alive:
            self.transport.close()
            self.server._transports.discard(self.transport)
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.server._transports.discard(self.transport)
        self.transport = None


def _parse_chunked(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at ``start``; None if not complete yet."""
    body = bytearray()
    pos = start
    while True:
        line_end = buffer.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size_text = bytes(buffer[pos:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as exc:
            raise _BadRequest("bad chunk size") from exc
        pos = line_end + 2
        if size == 0:
            # trailers, then an empty line
            while True:
                line_end = buffer.find(b"\r\n", pos)
                if line_end < 0:
                    return None
                if line_end == pos:
                    return bytes(body), line_end + 2
                pos = line_end + 2
        if len(buffer) < pos + size + 2:
            return None
        body += buffer[pos : pos + size]
        pos += size + 2


class EchoUpstream(Lifecycle):
    """In-process echo server on ``127.0.0.1:<free port>``.

    ``count`` is the number of requests served, ``connections`` the number of TCP connections
    accepted, ``requests`` the most recent ``keep`` request records (``method``, ``path``,
    ``headers``, ``body_length``).
    """

    def __init__(self, port: int | None = None, *, host: str = LOOPBACK, keep: int = 1000) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.count = 0
        self.connections = 0
        self.requests: deque[dict[str, Any]] = deque(maxlen=keep)
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.Transport] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def _record(self, record: dict[str, Any], body_length: int) -> None:
        self.count += 1
        self.requests.append({**record, "body_length": body_length})

    def reset(self) -> None:
        self.count = 0
        self.connections = 0
        self.requests.clear()

    async def start(self) -> Self:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _EchoProtocol(self), self.host, self.port, reuse_address=True, backlog=1024
        )
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            # Idle keep-alive connections would keep wait_closed() waiting (3.12+).
            for transport in list(self._transports):
                transport.close()
            self._transports.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2.0)
            self._server = None


async def _serve_forever(host: str, port: int) -> None:
    upstream = EchoUpstream(port, host=host)
    await upstream.start()
    print(f"echo upstream listening on {upstream.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await upstream.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="HTTP/1.1 echo upstream for Paygress tests")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(_serve_forever(args.host, args.port))


if __name__ == "__main__":
    main()
