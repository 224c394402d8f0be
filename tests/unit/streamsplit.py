"""Feeding provider byte streams to adapters split at awkward places (httpx.MockTransport)."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def fixture(provider: str, name: str) -> bytes:
    return (FIXTURES / provider / name).read_bytes()


class RecordingStream(httpx.AsyncByteStream):
    """A response body that yields the given chunks and records whether it was closed."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.yielded = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.yielded += 1
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def mid_utf8(data: bytes) -> list[bytes]:
    """Cut inside every multi-byte UTF-8 character (after its first byte)."""
    cuts = [i + 1 for i, byte in enumerate(data) if byte >= 0xC0]
    assert cuts, "fixture has no multi-byte characters"
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if a < b]


def several_per_read(data: bytes) -> list[bytes]:
    """Three events per read, the cut falling in the middle of the next event."""
    events = data.split(b"\n\n")
    chunks, buffer = [], b""
    for i, event in enumerate(events):
        buffer += event + (b"\n\n" if i < len(events) - 1 else b"")
        if i % 3 == 2:
            cut = len(buffer) - len(event) // 2
            chunks.append(buffer[:cut])
            buffer = buffer[cut:]
    return [c for c in [*chunks, buffer] if c]


def crlf(data: bytes) -> list[bytes]:
    return [data.replace(b"\n", b"\r\n")]


SPLITS: dict[str, Callable[[bytes], list[bytes]]] = {
    "whole": whole,
    "bytewise": bytewise,
    "mid_utf8": mid_utf8,
    "several_per_read": several_per_read,
    "crlf": crlf,
}


@dataclass
class Upstream:
    """A fake provider: answers every request with `status` and the chunks, records requests."""

    chunks: list[bytes]
    status: int = 200
    content_type: str = "text/event-stream"
    requests: list[httpx.Request] = field(default_factory=list)
    streams: list[RecordingStream] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        stream = RecordingStream(self.chunks)
        self.streams.append(stream)
        headers = {"content-type": self.content_type}
        return httpx.Response(self.status, headers=headers, stream=stream)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))

    @property
    def body(self) -> Any:
        return json.loads(self.requests[-1].content)

    @property
    def closed(self) -> bool:
        return all(s.closed for s in self.streams) and bool(self.streams)
