"""Keep-alive HTTP/1.1 connections to one origin, on asyncio: one request in flight on each.

What a poster needs and nothing more: requests arrive as finished bytes, answers are read
by `http1.ResponseParser`, at most `size` connections are open, and a connection is used
again only if it is known to be sound. A request that got no answer is never sent a second
time here (it may have been delivered); only a pooled connection found closed *before*
anything was written on it is replaced. Failures are `OSError`s: `ConnectTimeout`,
`ReadTimeout`, refused or reset connections, TLS errors (`ssl.SSLError`), DNS failures and
`http1.ProtocolError` for a truncated or malformed answer.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from typing import NamedTuple, cast

from .http1 import Answer, ProtocolError, ResponseParser

__all__ = ["ConnectTimeout", "KeepAlivePool", "Origin", "ReadTimeout", "tls_context"]

# Bytes asked of the socket per read: an answer from the management API fits many times.
_READ_BYTES = 16 * 1024


class ConnectTimeout(TimeoutError):
    """No connection (TCP and TLS) within the connect timeout."""


class ReadTimeout(TimeoutError):
    """No whole answer within the read timeout after the request was handed to the socket."""


class Origin(NamedTuple):
    """Where connections go: `tls` for https; `host` is also the name TLS checks (SNI)."""

    host: str
    port: int
    tls: bool


def tls_context() -> ssl.SSLContext:
    """Certificates verified, host names checked; `AWS_CA_BUNDLE` trusted as botocore does."""
    context = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or None)
    context.set_alpn_protocols(["http/1.1"])
    return context


class _Connection(asyncio.BufferedProtocol):
    """One socket: writes a request, parses its answer, reads into one reused buffer."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        read_timeout: float,
        on_lost: Callable[[_Connection], None],
    ) -> None:
        self._loop = loop
        self._read_timeout = read_timeout
        self._on_lost = on_lost
        self._view = memoryview(bytearray(_READ_BYTES))
        self._parser = ResponseParser()
        self._waiter: asyncio.Future[Answer] | None = None
        self._transport: asyncio.Transport | None = None
        self.closed = False

    @property
    def reusable(self) -> bool:
        transport = self._transport
        return (
            not self.closed
            and transport is not None
            and not transport.is_closing()
            and self._parser.keep_alive
            and self._parser.idle
        )

    async def exchange(self, request: bytes) -> Answer:
        """Send `request`, wait for its answer; on any failure the connection is closed."""
        assert self._transport is not None and self._waiter is None
        if self.closed:  # closed before a byte of this request was sent
            raise ConnectionResetError("the connection closed before the request was sent")
        waiter: asyncio.Future[Answer] = self._loop.create_future()
        self._waiter = waiter
        timer = self._loop.call_later(self._read_timeout, self._time_out)
        try:
            self._transport.write(request)
            return await waiter
        except BaseException:  # failed, timed out or cancelled: its answer may still come
            self.abort()
            raise
        finally:
            timer.cancel()
            self._waiter = None

    def abort(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    # -- asyncio callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream socket's transport (uvloop's does not subclass asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.abort()  # bytes nobody asked for: this connection's framing is lost
            return
        try:
            answer = self._parser.feed(bytes(self._view[:nbytes]))
        except ProtocolError as e:
            waiter.set_exception(e)
            return
        if answer is not None:
            waiter.set_result(answer)

    def eof_received(self) -> bool:
        return False  # close: connection_lost settles any answer still awaited

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_lost(self)
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            waiter.set_result(self._parser.end())  # a body that runs to the close
        except ProtocolError as e:
            if exc is not None:
                waiter.set_exception(exc)
            else:
                waiter.set_exception(e)

    def _time_out(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ReadTimeout(f"no answer within {self._read_timeout:g} s"))


class KeepAlivePool:
    """Up to `size` persistent connections to `origin`; `request` waits for a free one.

    `connect_timeout` bounds opening a connection (TCP and TLS), `read_timeout` the wait
    for a whole answer once the request is written.
    """

    def __init__(
        self,
        origin: Origin,
        *,
        size: int,
        connect_timeout: float,
        read_timeout: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._origin = origin
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._tls = tls
        self._free = asyncio.Semaphore(size)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._closed = False

    @property
    def connections(self) -> int:
        """Connections open now (idle or carrying a request)."""
        return len(self._open)

    async def request(self, data: bytes) -> Answer:
        """Send one whole request (head and body); return its answer. Raises `OSError`s."""
        async with self._free:
            connection = self._idle_connection() or await self._connect()
            try:
                answer = await connection.exchange(data)
            finally:
                if connection.reusable and not self._closed:
                    self._idle.append(connection)
                else:
                    self._forget(connection)
            return answer

    async def aclose(self) -> None:
        """Close every connection; later requests fail."""
        self._closed = True
        for connection in list(self._open):
            connection.abort()
            self._forget(connection)
        await asyncio.sleep(0)  # let the transports finish closing their sockets

    def _idle_connection(self) -> _Connection | None:
        # Most recently used first: the least likely to have been closed for idling.
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable:
                return connection
            self._forget(connection)  # closed while idle: nothing was sent on it
        return None

    async def _connect(self) -> _Connection:
        if self._closed:
            raise ConnectionAbortedError("the connection pool is closed")
        loop = asyncio.get_running_loop()
        host, port, tls = self._origin
        if tls and self._tls is None:
            self._tls = tls_context()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, self._read_timeout, self._forget),
                    host,
                    port,
                    ssl=self._tls if tls else None,
                    server_hostname=host if tls else None,
                )
        except TimeoutError as e:
            raise ConnectTimeout(f"no connection within {self._connect_timeout:g} s") from e
        if self._closed:  # closed while this one was connecting
            connection.abort()
            raise ConnectionAbortedError("the connection pool is closed")
        if not connection.closed:  # else `exchange` refuses it before sending
            self._open.add(connection)
        return connection

    def _forget(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)
