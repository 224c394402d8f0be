"""A raw HTTP/1.1 server on 127.0.0.1 whose answers are scripted, one `Reply` per request.

It records what arrives on the wire (each request's head and body, connections opened,
most requests in flight at once), so tests see exactly what a client sent and how it used
its connections. Bytes are written as given: malformed, truncated or chunked answers too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def answer(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    """An answer framed by Content-Length."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = f"HTTP/1.1 {status} Reason\r\n{lines}Content-Length: {len(body)}\r\n\r\n"
    return head.encode("latin-1") + body


@dataclass
class Reply:
    """How to answer one request: wait `hold` seconds, write `data`, then `then`.

    `then`: keep the connection open, close it, reset it (RST), or `silent` (close without
    writing anything: `data` is ignored).
    """

    data: bytes = OK
    hold: float = 0.0
    then: Literal["keep", "close", "reset", "silent"] = "keep"


@dataclass
class Request:
    head: bytes
    body: bytes
    connection: int

    @property
    def request_line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Header lines in the order sent, names as sent."""
        lines = self.head.decode("latin-1").split("\r\n")[1:]
        return [(n, v.strip()) for n, _, v in (line.partition(":") for line in lines if line)]


@dataclass
class Loopback:
    replies: list[Reply] = field(default_factory=list)
    default: Reply = field(default_factory=Reply)
    tls: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @contextlib.asynccontextmanager
    async def serving(self, path: str = "/dev") -> AsyncIterator[str]:
        """Serve until the block ends; yields the endpoint URL (with `path`)."""
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        port = server.sockets[0].getsockname()[1]
        try:
            yield f"{'https' if self.tls else 'http'}://127.0.0.1:{port}{path}"
        finally:
            server.close()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close_idle_connections(self) -> None:
        """Hang up every open connection, as a server closing idle keep-alives does."""
        for writer in self.writers:
            writer.close()
        await asyncio.sleep(0.05)  # the FIN reaches the client's event loop

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        number = self.connections
        self.writers.append(writer)
        try:
            while not writer.is_closing():
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                )
                self.requests.append(Request(head, await reader.readexactly(length), number))
                reply = self.replies.pop(0) if self.replies else self.default
                if not await self._answer(reply, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            return
        finally:
            writer.close()

    async def _answer(self, reply: Reply, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is done."""
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(reply.hold)
            if reply.then == "silent":
                return False
            writer.write(reply.data)
            await writer.drain()
            if reply.then == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            return reply.then == "keep"
        finally:
            self.in_flight -= 1
