"""StreamRecorder: one relay's writes to its `STREAM#` record, kept off the hot path."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any

from .errors import ProxyError
from .observability import get_logger
from .streams import StartError, StreamStatus, StreamStore


class StreamRecorder:
    """Status, start failure, cancel flag and snapshots of one stream.

    Writes run in the executor; a periodic snapshot is skipped while the previous one is
    still in flight, so a slow table never queues writes behind the stream.
    """

    def __init__(self, streams: StreamStore, stream_id: str, executor: Executor) -> None:
        self._streams = streams
        self._stream_id = stream_id
        self._executor = executor
        self._snapshot: asyncio.Task[None] | None = None
        self._snapshot_seq = -1
        self._background: set[asyncio.Task[Any]] = set()
        self._log_extra = {"stream_id": stream_id}

    async def cancel_requested(self) -> bool:
        return bool(await self._call(self._streams.cancel_requested, self._stream_id))

    def started(self) -> None:
        """Mark the stream `streaming` (in the background: the first token must not wait)."""
        task = asyncio.ensure_future(self._guarded(self._streams.mark_started, self._stream_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def start_failed(self, error: ProxyError) -> None:
        failure = StartError(error.status, error.code, error.message)
        await self._guarded(self._streams.mark_start_failed, self._stream_id, failure)

    def snapshot_soon(self, text: str, last_seq: int) -> None:
        """Write the text published up to `last_seq`, unless nothing changed or a write runs."""
        if last_seq == self._snapshot_seq or (self._snapshot and not self._snapshot.done()):
            return
        self._snapshot_seq = last_seq
        self._snapshot = asyncio.ensure_future(self._save(text, last_seq, "streaming"))

    async def final(
        self,
        text: str,
        last_seq: int,
        status: StreamStatus,
        finish_reason: str,
        usage: dict[str, Any],
    ) -> None:
        """The last snapshot (after any in flight), then wait for every background write."""
        if self._snapshot is not None:
            await asyncio.gather(self._snapshot, return_exceptions=True)
        await self._save(text, last_seq, status, finish_reason, usage)
        await asyncio.gather(*self._background, return_exceptions=True)

    async def _save(
        self,
        text: str,
        last_seq: int,
        status: StreamStatus,
        finish_reason: str | None = None,
        usage: dict[str, Any] | None = None,
    ) -> None:
        def write() -> None:
            self._streams.save_snapshot(
                self._stream_id, text, last_seq, status, finish_reason=finish_reason, usage=usage
            )

        await self._guarded(write)

    async def _guarded(self, fn: Any, *args: Any) -> None:
        try:
            await self._call(fn, *args)
        except Exception:
            get_logger().warning("stream record write failed", extra=self._log_extra, exc_info=True)

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
