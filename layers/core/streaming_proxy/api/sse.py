"""Server-sent events for a caller that asked for `Accept: text/event-stream`."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any

_CLOSED = object()


class SseSink:
    """A relay sink that queues envelopes for one HTTP response."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue()

    async def start(self) -> None:
        return None

    async def send(self, envelope: dict[str, Any]) -> None:
        self._queue.put_nowait(envelope)

    async def close(self) -> None:
        self._queue.put_nowait(_CLOSED)

    async def frames(self, keepalive_seconds: float, done: Awaitable[Any]) -> AsyncIterator[bytes]:
        """`event: <type>` / `data: <envelope>` frames; a comment whenever nothing came for a
        while, so proxies and API Gateway's idle timeout never see a silent connection.

        The response ends only once `done` (the whole relay, channel fan-out included) has:
        in Lambda the invocation freezes when the response ends."""
        yield b": stream open\n\n"
        while True:
            try:
                item = await asyncio.wait_for(self._queue.get(), keepalive_seconds)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if item is _CLOSED:
                with contextlib.suppress(Exception):
                    await asyncio.shield(done)
                return
            assert isinstance(item, dict)
            data = json.dumps(item, ensure_ascii=False, separators=(",", ":"))
            yield f"event: {item['type']}\ndata: {data}\n\n".encode()


SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "Connection": "keep-alive",
}
