"""Fake upstreams for provider tests: recorded byte streams fed in awkwardly split reads."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def fixture_bytes(relative: str) -> bytes:
    """A recorded stream under tests/fixtures (e.g. "openai/text.sse")."""
    return (FIXTURES / relative).read_bytes()


def _every(size: int) -> Callable[[bytes], list[bytes]]:
    return lambda data: [data[i : i + size] for i in range(0, len(data), size)]


def _mid_utf8(data: bytes) -> list[bytes]:
    """Cut right after the first byte of every multi-byte UTF-8 character.

    An ASCII fixture comes back whole; tests that need real cuts assert `not data.isascii()`.
    """
    cuts = [i for i in range(1, len(data)) if data[i] & 0xC0 == 0x80 and data[i - 1] >= 0xC0]
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def _between_cr_lf(data: bytes) -> list[bytes]:
    """CRLF line endings with every read ending on the CR, so the LF starts the next read."""
    crlf = data.replace(b"\n", b"\r\n")
    return [part + b"\r" for part in crlf.split(b"\r")[:-1]] + [crlf.split(b"\r")[-1]]


def _events_per_read(data: bytes) -> list[bytes]:
    """Three events and the first bytes of the next one per read."""
    ends = [i + 2 for i in range(len(data) - 1) if data[i : i + 2] == b"\n\n"]
    cuts = [min(end + 5, len(data)) for end in ends[2::3]]
    bounds = sorted({0, *cuts, len(data)})
    return [data[a:b] for a, b in pairwise(bounds)]


SPLITS: dict[str, Callable[[bytes], list[bytes]]] = {
    "whole": lambda data: [data],
    "byte_by_byte": _every(1),
    "every_7_bytes": _every(7),
    "every_64_bytes": _every(64),
    "mid_utf8": _mid_utf8,
    "three_events_per_read": _events_per_read,
    "crlf": lambda data: [data.replace(b"\n", b"\r\n")],
    "crlf_byte_by_byte": lambda data: _every(1)(data.replace(b"\n", b"\r\n")),
    "crlf_cut_between_cr_and_lf": _between_cr_lf,
}


class RecordedStream(httpx.AsyncByteStream):
    """A response body yielding `reads`; records whether the client closed it.

    With `hang=True` it waits forever after the last read, like an upstream that stalls.
    """

    def __init__(self, reads: list[bytes], *, hang: bool = False) -> None:
        self.reads = reads
        self.hang = hang
        self.sent = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for read in self.reads:
            self.sent += 1
            yield read
        if self.hang:
            await asyncio.Event().wait()

    async def aclose(self) -> None:
        self.closed = True


class FakeUpstream:
    """An httpx transport answering every request with one recorded response."""

    def __init__(
        self,
        reads: list[bytes],
        *,
        status: int = 200,
        content_type: str = "text/event-stream",
        hang: bool = False,
    ) -> None:
        self.body = RecordedStream(reads, hang=hang)
        self.status = status
        self.content_type = content_type
        self.requests: list[httpx.Request] = []

    @classmethod
    def error(cls, status: int, body: Any) -> FakeUpstream:
        """An HTTP error answer whose JSON body is `body`."""
        return cls([json.dumps(body).encode()], status=status, content_type="application/json")

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(
            self.status, headers={"content-type": self.content_type}, stream=self.body
        )

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))

    @property
    def request(self) -> httpx.Request:
        """The one request the adapter sent."""
        assert len(self.requests) == 1, self.requests
        return self.requests[0]

    def sent_json(self) -> Any:
        """The JSON body of the one request the adapter sent."""
        return json.loads(self.request.content)
