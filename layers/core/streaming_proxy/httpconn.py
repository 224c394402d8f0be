"""One keep-alive HTTP/1.1 client connection on an asyncio protocol: the socket half of nethttp.

Bytes are parsed as they arrive (`http1stream.AnswerParser`) in the protocol callback, so a
body piece costs one wake-up of the reading task and no stream or timer machinery: the
read timeout is one lazy timer per connection, re-armed only when it fires while a read
still waits. Failures are httpx's own exceptions, as any httpx transport raises them.
"""

from __future__ import annotations

import asyncio
from typing import cast

import httpx

from .http1stream import AnswerParser, ProtocolError, ResponseHead

__all__ = ["Connection"]

# Body bytes held for a slow reader before the socket stops being read.
_HIGH_WATER = 256 * 1024


class Connection(asyncio.Protocol):
    """A socket carrying one request at a time; `reusable` says it may carry the next."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser: AnswerParser | None = None  # None: idle, no answer expected
        self._error: httpx.TransportError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None  # set while writing is paused
        self._timer: asyncio.TimerHandle | None = None
        self._timeout: float | None = None
        self._waiting_since = 0.0
        self._paused = False
        self.closed = False
        self.idle_since = 0.0

    @property
    def reusable(self) -> bool:
        """Idle, sound, and its last answer allowed another request."""
        transport = self._transport
        return (
            not self.closed
            and self._error is None
            and transport is not None
            and not transport.is_closing()
            and (self._parser is None or (self._parser.done and self._parser.keep_alive))
        )

    # -- the request ------------------------------------------------------------------------

    def begin(self, *, head_request: bool) -> None:
        """A new request goes out: its answer is parsed from now on."""
        self._parser = AnswerParser(head_request=head_request)

    async def write(self, data: bytes, timeout: float | None) -> None:  # noqa: ASYNC109
        if self.closed or self._transport is None:
            raise httpx.WriteError("the connection closed before the request was sent")
        self._transport.write(data)
        drained = self._drained
        if drained is not None:  # the socket is full: wait for it to take the bytes
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(drained)
            except TimeoutError as e:
                self.abort()
                raise httpx.WriteTimeout("the request was not sent in time") from e
        if self._error is not None:
            raise self._error

    async def head(self, timeout: float | None) -> ResponseHead:  # noqa: ASYNC109
        """Wait for the answer's final head."""
        parser = self._parser
        assert parser is not None
        while parser.head is None:
            await self._wait(timeout)
        return parser.head

    def take(self) -> bytes:
        """Body bytes decoded so far (b"" if none); resumes a socket paused for a slow reader."""
        assert self._parser is not None
        data = self._parser.take()
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return data

    @property
    def body_done(self) -> bool:
        return self._parser is not None and self._parser.done

    def release(self) -> None:
        """The answer was read whole: the connection is idle again (if reusable)."""
        self._parser = None
        self.idle_since = self._loop.time()

    def abort(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.abort()

    # -- waiting, with one lazy timer for the read timeout ------------------------------------

    async def _wait(self, timeout: float | None) -> None:  # noqa: ASYNC109
        if self._error is not None:
            raise self._error
        if self._parser is not None and (self._parser.done or self._parser.buffered):
            return
        waiter = self._waiter = self._loop.create_future()
        self._timeout = timeout
        if timeout is not None:
            self._waiting_since = self._loop.time()
            due, timer = self._waiting_since + timeout, self._timer
            if timer is None or timer.when() > due:  # none yet, or one for a longer limit
                if timer is not None:
                    timer.cancel()
                self._timer = self._loop.call_at(due, self._check)
        try:
            await waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    # Waiting until more of the body was decoded, the body ended, or it failed (raises):
    # the same wait, with no coroutine around it (a body reads once per chunk).
    more = _wait

    def _check(self) -> None:
        """The timer fired: fail the read that waits too long, else re-arm for the one that
        waits now (or lapse until a read waits again)."""
        self._timer = None
        waiter, timeout = self._waiter, self._timeout
        if waiter is None or waiter.done() or timeout is None:
            return
        due = self._waiting_since + timeout
        if self._loop.time() >= due:
            self._fail(httpx.ReadTimeout(f"no data from the server for {timeout:g} s"))
            self.abort()
        else:
            self._timer = self._loop.call_at(due, self._check)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: httpx.TransportError) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    # -- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream socket's transport (uvloop's does not subclass asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # bytes nobody asked for: this connection's framing is lost
            self.abort()
            return
        try:
            parser.feed(data)
        except ProtocolError as e:
            self._fail(httpx.RemoteProtocolError(str(e)))
            self.abort()
            return
        if parser.buffered > _HIGH_WATER and self._transport is not None and not self._paused:
            self._paused = True
            self._transport.pause_reading()
        if parser.head is not None:
            self._wake()

    def eof_received(self) -> bool:
        if self._parser is not None:
            try:
                self._parser.end()
            except ProtocolError as e:
                self._fail(httpx.RemoteProtocolError(str(e)))
            self._wake()
        return False  # close the socket

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._parser is not None and not self._parser.done:
            what = f"{type(exc).__name__}: {exc}" if exc else "the server closed the connection"
            self._fail(httpx.ReadError(what) if exc else httpx.RemoteProtocolError(what))
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)
            self._error = self._error or httpx.WriteError("the connection closed while writing")
        self._wake()

    def pause_writing(self) -> None:
        self._drained = self._loop.create_future()

    def resume_writing(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)
