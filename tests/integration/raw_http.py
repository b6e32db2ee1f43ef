"""HTTP requests sent byte for byte: HTTP clients would clean up exactly the spellings (paths,
hosts, HTTP/1.0 without Host) that the tests need to send."""

from __future__ import annotations

import asyncio
import contextlib

import httpx


async def fetch_raw(
    url: str | httpx.URL, request: bytes, *, source: str | None = None
) -> tuple[int, bytes]:
    """Sends `request` (which must ask to close the connection) to the host and port of `url`,
    from `source` (an address to bind on loopback); returns the answer's status and body."""
    url = httpx.URL(str(url))
    assert url.host and url.port
    local = (source, 0) if source else None
    reader, writer = await asyncio.open_connection(url.host, url.port, local_addr=local)
    try:
        writer.write(request)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def send_raw(url: str | httpx.URL, request: bytes, *, source: str | None = None) -> int:
    """The status of the answer to `request` (see fetch_raw)."""
    return (await fetch_raw(url, request, source=source))[0]


def get(target: str, host: str | None = "shop", *, version: str = "1.1", **headers: str) -> bytes:
    """`GET <target>` with `host` (None: no Host header at all) and `headers`."""
    lines = [f"GET {target} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def case_id(value: object) -> str:
    """A readable pytest id for a raw request: its lines up to Connection, ' | ' between."""
    if isinstance(value, bytes):
        return value.decode("latin-1").split("\r\nConnection")[0].replace("\r\n", " | ")
    return str(value)
