"""Server-sent events answers: Klai envelopes or OpenAI chunks, with keep-alive comments."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..envelopes import encode
from ..errors import ProxyError
from ..gate import CallerGate
from ..observability import get_logger
from ..relay import Relay
from ..service import StreamService

_OPEN = b": stream open\n\n"
_KEEPALIVE = b": keep-alive\n\n"
# Where ProxyApp keeps the server's `send` in a request's scope.
SERVER_SEND = "streaming_proxy.server_send"

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "Connection": "keep-alive",
}


class FrameQueue:
    """Encoded SSE frames waiting for one HTTP response.

    A deque and one waiter rather than an `asyncio.Queue`: a frame is put for nearly every
    provider chunk, and frames that queued up while the answer was being written go out
    together, in one write. Made in the event loop that writes it (a request's): `put`
    reads the loop's clock without looking the loop up (on Linux, Python 3.11 looks it up
    with a `getpid` system call).
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._frames: deque[bytes | None] = deque()  # None: the end
        self._waiter: asyncio.Future[None] | None = None
        self._last_put = 0.0  # loop time of the last frame queued (keep-alives wait on it)
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._gone = False  # the caller hung up

    def put(self, frame: bytes) -> None:
        if self._gone:  # nobody writes it: the rest of a detached stream is not held
            return
        self._push(frame)
        self._last_put = self._loop.time()

    def end(self) -> None:
        """No frame follows: the answer ends once the ones queued are out."""
        self._push(None)

    def _push(self, frame: bytes | None) -> None:
        self._frames.append(frame)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def write(
        self,
        emit: Callable[[bytes], Awaitable[None]],
        keepalive_seconds: float,
        done: asyncio.Future[Any],
    ) -> None:
        """Write the frames with `emit`, plus a comment whenever nothing came for a while so
        proxies and API Gateway's idle timeout never see a silent connection.

        The writing ends once `done` (the whole relay, channel fan-out included) has, and
        not before: in Lambda the invocation freezes when the response ends. It ends then
        whether or not a sink or observer closed the queue (one that failed may not have).
        Once the caller hung up (`hang_up`) nothing more is written, and the end still
        waits for `done`: the channels may still be owed the rest of the stream.

        The answer opens with a `: stream open` comment, in the same write as the frames
        queued by then (the answer starts after the provider's first byte, so its first
        frame is usually there already): one system call per answer fewer."""
        done.add_done_callback(lambda _: self.end())
        loop = self._loop
        self._keepalive_timer = loop.call_later(
            keepalive_seconds, self._keep_alive, keepalive_seconds
        )
        self._frames.appendleft(_OPEN)
        try:
            while not self._gone:
                if not self._frames:
                    self._waiter = loop.create_future()
                    try:
                        await self._waiter
                    finally:
                        self._waiter = None
                ready, closed = self._ready()
                if ready and not self._gone:
                    await emit(ready)
                if closed:
                    break
            with contextlib.suppress(Exception):
                await asyncio.shield(done)
        finally:
            if self._keepalive_timer is not None:
                self._keepalive_timer.cancel()

    def hang_up(self) -> None:
        """The caller is gone: write nothing more and hold nothing for it (the relay runs
        on, detached: its frames and keep-alives are dropped, not queued)."""
        self._gone = True
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
        self._frames.clear()
        self._push(None)

    @property
    def gone(self) -> bool:
        return self._gone

    def _ready(self) -> tuple[bytes, bool]:
        """Every frame queued, as one write, and whether the end came after them."""
        frames = self._frames
        if len(frames) == 1:
            frame = frames.popleft()
            return (b"", True) if frame is None else (frame, False)
        ready: list[bytes] = []
        while frames:
            frame = frames.popleft()
            if frame is None:
                return b"".join(ready), True
            ready.append(frame)
        return b"".join(ready), False

    def _keep_alive(self, seconds: float) -> None:
        """Queue a keep-alive comment once nothing was queued for `seconds`: one timer that
        re-arms itself from the last frame's time, so frames never pay for a timeout each."""
        loop = self._loop
        if loop.time() >= self._last_put + seconds:
            self._push(_KEEPALIVE)
            self._last_put = loop.time()
        self._keepalive_timer = loop.call_at(self._last_put + seconds, self._keep_alive, seconds)


class KlaiSseSink(FrameQueue):
    """A relay sink writing each envelope as `event: <type>` / `data: <envelope>`."""

    async def start(self) -> None:
        return None

    async def send(self, envelope: dict[str, Any]) -> None:
        self.put(f"event: {envelope['type']}\ndata: ".encode() + encode(envelope) + b"\n\n")

    async def close(self) -> None:
        return None  # the answer ends with the relay (frames)


async def sse_answer(
    service: StreamService,
    relay: Relay,
    gate: CallerGate,
    frames: FrameQueue,
    on_error: Callable[[ProxyError], Response],
) -> Response:
    """Start `relay` (built with `gate`) detached from this request; answer with its frames.

    The headers wait for the stream record's write, then for the provider's first byte
    (bounded by the keep-alive interval), so a request that fails at once (the record's
    write included: 503) is still answered with its real status via `on_error`, and then
    nothing is published to its channels.
    """
    task = service.start(relay)
    keepalive = service.settings.keepalive_seconds
    await relay.record_written()  # bounded by botocore's timeouts and tries
    error = await gate.wait(keepalive)
    if error is not None:
        return on_error(error)
    job = relay.job
    headers = {**SSE_HEADERS, "X-Stream-Id": job.stream_id}
    if job.channels or job.thread is not None:
        return SseResponse(frames, keepalive, task, headers)  # the stream goes on without it

    def stop_unheard() -> None:
        # Nobody else receives this stream and nothing keeps its answer: the rest would go
        # nowhere, and the provider would still bill it.
        if task.done():
            return
        get_logger().info(
            "caller hung up on a stream nobody else receives: stopped",
            extra={"stream_id": job.stream_id, "provider": job.provider},
        )
        relay.cancel()

    return SseResponse(frames, keepalive, task, headers, on_hang_up=stop_unheard)


class SseResponse(Response):
    """A `text/event-stream` answer: a FrameQueue written straight to the ASGI `send`.

    Starlette's StreamingResponse would add a task group per answer and a generator step
    per frame; here the queue's writer task calls `send` itself. A caller hanging up is seen
    as Starlette sees it, by a `receive()` that returns `http.disconnect`: the writing stops
    (the answer still ends only with its relay, decision 6), and `on_hang_up` is called once.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        frames: FrameQueue,
        keepalive_seconds: float,
        done: asyncio.Future[Any],
        headers: Mapping[str, str],
        on_hang_up: Callable[[], None] | None = None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self._frames = frames
        self._keepalive = keepalive_seconds
        self._done = done
        self._on_hang_up = on_hang_up
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        # Starlette's wrappers of `send` only watch for the start, which went through them:
        # the body goes to the server's own `send`, two coroutine calls fewer per frame.
        body_send: Send = scope.get(SERVER_SEND, send)

        async def emit(data: bytes) -> None:
            await body_send({"type": "http.response.body", "body": data, "more_body": True})

        # The writer is a task of its own: a frame then resumes it alone, not the whole
        # chain of the server's and Starlette's coroutines this call runs under.
        writer = asyncio.ensure_future(self._frames.write(emit, self._keepalive, self._done))
        listener = asyncio.ensure_future(_disconnect(receive))
        listener.add_done_callback(self._heard)
        try:
            await writer
        except OSError:  # how an ASGI 2.4 server says the caller is gone
            self._hung_up()
            with contextlib.suppress(Exception):
                await asyncio.shield(self._done)
        finally:
            listener.cancel()
        if not self._frames.gone:
            with contextlib.suppress(OSError):  # the caller left after the last frame
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _heard(self, listener: asyncio.Future[None]) -> None:
        """The caller hung up (or the server could not say): stop writing."""
        if not listener.cancelled():
            listener.exception()  # retrieved: a server's failure here is only a hang-up
            self._hung_up()

    def _hung_up(self) -> None:
        if self._frames.gone:
            return
        self._frames.hang_up()
        if self._on_hang_up is not None:
            self._on_hang_up()


async def _disconnect(receive: Receive) -> None:
    """Return when the caller disconnected (a request body still arriving is read past)."""
    while (await receive())["type"] != "http.disconnect":
        pass
