"""HTTP/1.1 as the fake speaks it: requests with keep-alive and a Content-Length body, JSON
answers, and the chunked stream of a watch."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import http
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

MAX_BODY_BYTES: Final = 3 * 1024 * 1024
MAX_HEADER_BYTES: Final = 64 * 1024


class BadHttp(Exception):
    """A request the fake cannot read: answered 400, then the connection is closed."""


@dataclass
class Request:
    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on a connection; None when the client closed it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadHttp("incomplete request") from None
        return None
    except asyncio.LimitOverrunError:
        raise BadHttp("request headers too large") from None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError:
        raise BadHttp(f"bad request line {lines[0]!r}") from None
    headers: dict[str, str] = {}
    for line in filter(None, lines[1:]):
        name, sep, value = line.partition(":")
        if not sep:
            raise BadHttp(f"bad header line {line!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise BadHttp("the fake API server reads only Content-Length bodies")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise BadHttp("bad content-length") from None
    if length > MAX_BODY_BYTES:
        raise BadHttp("request body too large")
    body = await reader.readexactly(length) if length else b""
    connection = headers.get("connection", "").lower()
    keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    split = urlsplit(target)
    query = dict(parse_qsl(split.query, keep_blank_values=True))
    return Request(method.upper(), target, unquote(split.path), query, headers, body, keep_alive)


def _head(code: int, headers: Mapping[str, str]) -> bytes:
    lines = [
        f"HTTP/1.1 {code} {http.HTTPStatus(code).phrase}",
        f"Audit-Id: {uuid.uuid4()}",
        "Cache-Control: no-cache, private",
        "Content-Type: application/json",
        f"Date: {dt.datetime.now(dt.UTC).strftime('%a, %d %b %Y %H:%M:%S GMT')}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def write_json(
    writer: asyncio.StreamWriter,
    code: int,
    payload: Any,
    *,
    keep_alive: bool = True,
    headers: Mapping[str, str] | None = None,
) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
    extra = {**(headers or {}), "Content-Length": str(len(body))}
    if not keep_alive:
        extra["Connection"] = "close"
    writer.write(_head(code, extra) + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()


class ChunkedJson:
    """A 200 whose body is newline-delimited JSON in chunks (a watch)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        writer.write(_head(200, {"Transfer-Encoding": "chunked"}))

    async def send(self, item: Any) -> None:
        data = json.dumps(item, separators=(",", ":")).encode() + b"\n"
        self.writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await self.writer.drain()

    async def end(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()
