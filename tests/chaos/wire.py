"""HTTP/1.1 framing on asyncio streams: just enough to relay a message and cut it at a byte."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

CRLF = b"\r\n"
HEAD_END = b"\r\n\r\n"
CHUNKED_END = b"0\r\n\r\n"
# Largest piece read at once; an SSE upstream's writes arrive far smaller and go out as they are.
PIECE = 64 * 1024
# Interim answers a proxy that reads the whole request itself must not pass on (it sent its own
# 100 Continue); 101 is not one of them, but upgrades are not relayed at all.
INTERIM = range(100, 200)


class WireError(Exception):
    """A peer sent something that is not HTTP/1.1 as this proxy relays it."""


class Framing(enum.Enum):
    """How a message body is delimited (RFC 9112 section 6)."""

    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until-close"


@dataclass(frozen=True)
class Body:
    framing: Framing
    length: int = 0


@dataclass(frozen=True)
class Head:
    """A start line and its headers, kept byte for byte so they are relayed unchanged."""

    start: str
    headers: tuple[tuple[str, str], ...]
    raw: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def has_token(self, name: str, token: str) -> bool:
        """Whether a comma-separated header (Connection, Transfer-Encoding) lists `token`."""
        wanted = name.lower()
        values = (value for key, value in self.headers if key.lower() == wanted)
        return any(t.strip().lower() == token for v in values for t in v.split(","))


@dataclass(frozen=True)
class Request:
    head: Head
    method: str
    target: str
    version: str
    body: bytes
    body_framing: Framing

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def keep_alive(self) -> bool:
        if self.head.has_token("connection", "close"):
            return False
        return self.version != "HTTP/1.0" or self.head.has_token("connection", "keep-alive")

    def encoded(self) -> bytes:
        """The request as sent upstream: the head as received, the body in its own framing."""
        if self.body_framing is Framing.CHUNKED:
            chunk = encode_piece(Framing.CHUNKED, self.body) if self.body else b""
            return self.head.raw + chunk + CHUNKED_END
        return self.head.raw + self.body


async def read_head(reader: asyncio.StreamReader) -> Head | None:
    """The next message head, or None when the peer closed cleanly between messages."""
    try:
        raw = await reader.readuntil(HEAD_END)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise WireError("connection closed inside a message head") from e
    except asyncio.LimitOverrunError as e:
        raise WireError("message head too large") from e
    start, *lines = raw[: -len(HEAD_END)].decode("latin-1").split("\r\n")
    headers = []
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise WireError(f"malformed header line {line!r}")
        headers.append((name.strip(), value.strip()))
    return Head(start, tuple(headers), raw)


async def read_request(reader: asyncio.StreamReader, head: Head) -> Request:
    """Parse the request line and read the whole body (requests to these targets are small)."""
    parts = head.start.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise WireError(f"not an HTTP/1.x request line: {head.start!r}")
    body = request_body(head)
    data = b"".join([piece async for piece in iter_body(reader, body)])
    return Request(head, parts[0], parts[1], parts[2], data, body.framing)


async def read_response_head(reader: asyncio.StreamReader) -> tuple[Head, int] | None:
    """The final response head and its status, skipping interim (1xx) answers."""
    while True:
        head = await read_head(reader)
        if head is None:
            return None
        parts = head.start.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise WireError(f"not an HTTP status line: {head.start!r}")
        status = int(parts[1])
        if status not in INTERIM or status == 101:
            return head, status


def request_body(head: Head) -> Body:
    if head.has_token("transfer-encoding", "chunked"):
        return Body(Framing.CHUNKED)
    length = _content_length(head)
    return Body(Framing.LENGTH, length) if length else Body(Framing.NONE)


def response_body(head: Head, status: int, method: str) -> Body:
    if method == "HEAD" or status in INTERIM or status in (204, 304):
        return Body(Framing.NONE)
    if head.has_token("transfer-encoding", "chunked"):
        return Body(Framing.CHUNKED)
    length = _content_length(head)
    return Body(Framing.UNTIL_CLOSE) if length is None else Body(Framing.LENGTH, length)


def _content_length(head: Head) -> int | None:
    value = head.header("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise WireError(f"bad Content-Length {value!r}")
    return int(value)


async def iter_body(reader: asyncio.StreamReader, body: Body) -> AsyncGenerator[bytes, None]:
    """The body's payload, piece by piece as it arrives (never an empty piece)."""
    if body.framing is Framing.LENGTH:
        async for piece in _iter_exactly(reader, body.length):
            yield piece
    elif body.framing is Framing.CHUNKED:
        while size := await _chunk_size(reader):
            async for piece in _iter_exactly(reader, size):
                yield piece
            if await reader.readexactly(2) != CRLF:
                raise WireError("chunk data not followed by CRLF")
        # Trailers are read so the connection stays in step, and dropped: no target here sends any.
        while await reader.readuntil(CRLF) != CRLF:
            pass
    elif body.framing is Framing.UNTIL_CLOSE:
        while piece := await reader.read(PIECE):
            yield piece


async def _iter_exactly(reader: asyncio.StreamReader, length: int) -> AsyncIterator[bytes]:
    remaining = length
    while remaining:
        piece = await reader.read(min(remaining, PIECE))
        if not piece:
            raise asyncio.IncompleteReadError(b"", remaining)
        remaining -= len(piece)
        yield piece


async def _chunk_size(reader: asyncio.StreamReader) -> int:
    line = await reader.readuntil(CRLF)
    digits = line.split(b";", 1)[0].strip()
    try:
        return int(digits, 16)
    except ValueError as e:
        raise WireError(f"bad chunk size line {line!r}") from e


def encode_piece(framing: Framing, piece: bytes) -> bytes:
    """One payload piece in the given framing (its own chunk when chunked)."""
    if framing is Framing.CHUNKED:
        return b"%x\r\n%b\r\n" % (len(piece), piece)
    return piece


def encode_cut(framing: Framing, piece: bytes, keep: int) -> bytes:
    """The first `keep` bytes of a piece; a chunk header still announces the whole piece,
    as a server that died mid-write would have sent it."""
    if framing is Framing.CHUNKED:
        return b"%x\r\n%b" % (len(piece), piece[:keep])
    return piece[:keep]


def encode_end(framing: Framing) -> bytes:
    return CHUNKED_END if framing is Framing.CHUNKED else b""
