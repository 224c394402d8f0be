"""A lean SSE reader on asyncio streams that stamps each event with its wall-clock arrival.

The overhead benchmark reads up to 50 streams of 200 chunks a second at once in one
process; httpx's per-chunk layers would add their own lag to every stamp, so this reader
does only HTTP/1.1 (one request per connection, chunked or close-delimited answers) and
splits events, and it reads the direct upstream and the proxy the same way.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

READ_SIZE = 65536


class HttpError(RuntimeError):
    """The answer was not 200: the benchmark fails rather than measure an error."""


@dataclass
class SseEvent:
    arrived_ns: int  # time.time_ns() when the bytes completing this event were read
    event: str  # the `event:` field, "message" when absent
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class Dechunker:
    """Undoes HTTP/1.1 chunked transfer encoding incrementally."""

    def __init__(self) -> None:
        self._raw = b""
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self._raw += data
        out = bytearray()
        while not self.done:
            line_end = self._raw.find(b"\r\n")
            if line_end < 0:
                break
            size = int(self._raw[:line_end].split(b";")[0], 16)
            if size == 0:
                self.done = True
                break
            start = line_end + 2
            if len(self._raw) < start + size + 2:
                break
            out += self._raw[start : start + size]
            self._raw = self._raw[start + size + 2 :]
        return bytes(out)


def _parse_event(block: bytes, arrived_ns: int) -> SseEvent | None:
    event, data = "message", []
    for line in block.decode("utf-8").split("\n"):
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    return SseEvent(arrived_ns, event, "\n".join(data)) if data else None


async def _open(
    url: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, str]]:
    """Send the request; the reader is left at the start of a 200 answer's body."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    payload = json.dumps(body).encode()
    lines = [
        f"POST {parts.path} HTTP/1.1",
        f"host: {parts.netloc}",
        "content-type: application/json",
        "accept: text/event-stream",
        f"content-length: {len(payload)}",
        "connection: close",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    answer = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer[name.strip().lower()] = value.strip()
    if status_line.split(" ")[1] != "200":
        rest = await reader.read()
        writer.close()
        raise HttpError(f"{url}: {status_line}: {rest[:500]!r}")
    return reader, writer, answer


async def events(
    url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> AsyncIterator[SseEvent]:
    """POST `body` to `url` and yield its SSE events as they arrive, stamped."""
    reader, writer, answer = await _open(url, body, headers or {})
    chunked = answer.get("transfer-encoding", "").lower() == "chunked"
    dechunker = Dechunker()
    buffer = b""
    try:
        while not dechunker.done:
            data = await reader.read(READ_SIZE)
            arrived = time.time_ns()
            if not data:
                break
            buffer += dechunker.feed(data) if chunked else data
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                event = _parse_event(block, arrived)
                if event is not None:
                    yield event
    finally:
        writer.close()
