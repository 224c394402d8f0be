"""StreamRecorder: one relay's writes to its `STREAM#` record, kept off the hot path."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from .blocking import BlockingCalls
from .observability import get_logger
from .streams import Poll, StreamStatus, StreamStore

# Backoff between attempts of the final write: it is the record resume and stop rely on.
FINAL_RETRY_BASE_SECONDS = 0.2
FINAL_RETRY_MAX_SECONDS = 2.0


class StreamRecorder:
    """Status, start failure, cancel flag and snapshots of one stream.

    Writes run on the DynamoDB pool. A periodic snapshot is skipped while the previous one
    is still in flight, so a slow table never queues writes behind the stream; the final
    write waits for every earlier write (their order is also enforced by the store's
    conditional writes) and is retried, because a missing final record would leave the
    stream `streaming` with partial text for a day.

    Each write sends only the text added since the last one that landed (`_stored`
    characters are in segments already, snapshots.py), so a write's size is bounded by
    what one snapshot interval adds, not by the answer's length.
    """

    def __init__(
        self,
        streams: StreamStore,
        stream_id: str,
        db: BlockingCalls,
        *,
        final_attempts: int = 5,
        heartbeat_seconds: float | None = None,
    ) -> None:
        self._streams = streams
        self._stream_id = stream_id
        self._db = db
        self._final_attempts = max(1, final_attempts)
        # A claimed (detached) relay's heartbeat interval; None: it keeps none.
        self.heartbeat_seconds = heartbeat_seconds
        self._snapshot: asyncio.Task[None] | None = None
        self._snapshot_seq = -1
        self._stored = 0  # characters of text known to be in segments
        self._background: set[asyncio.Task[Any]] = set()
        self._log_extra = {"stream_id": stream_id}
        self.final_written = False
        # Every try of the final write failed: resume and stop may find the record
        # unfinished, so the stream reports it (StreamStats.record_failed).
        self.final_failed = False

    async def poll(self) -> Poll:
        return await self._db(self._streams.poll, self._stream_id)

    async def keep_alive(self) -> None:
        """Beat every `heartbeat_seconds` until cancelled (the relay's end, before its final
        write), or until a beat finds the stream final: which end that was (a dead letter's,
        or a failed start's) the relay's record poll tells. A failed beat is logged and the
        next one tried: a few lost beats are not a death."""
        every = self.heartbeat_seconds
        if every is None:
            return
        while True:
            await asyncio.sleep(every)
            try:
                alive = await self._db(self._streams.beat, self._stream_id)
            except Exception:
                get_logger().warning("heartbeat not written", extra=self._log_extra, exc_info=True)
                continue
            if not alive:
                return

    def started(self) -> None:
        """Mark the stream `streaming` (in the background: the first token must not wait)."""
        task = asyncio.ensure_future(self._quietly(self._streams.mark_started, self._stream_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def snapshot_soon(self, text: str, last_seq: int) -> None:
        """Write the text published up to `last_seq`, unless nothing changed or a write runs."""
        if last_seq == self._snapshot_seq or (self._snapshot and not self._snapshot.done()):
            return
        self._snapshot_seq = last_seq
        self._snapshot = asyncio.ensure_future(self._progress(text, last_seq))

    async def _progress(self, text: str, last_seq: int) -> None:
        try:
            saved = await self._db(
                self._streams.save_progress, self._stream_id, text, last_seq, stored=self._stored
            )
        except Exception:
            get_logger().warning("stream record write failed", extra=self._log_extra, exc_info=True)
            return
        if saved:
            self._stored = len(text)

    async def final(
        self,
        text: str,
        last_seq: int,
        status: StreamStatus,
        finish_reason: str,
        usage: dict[str, Any],
    ) -> None:
        """Wait for every earlier write, then write the final record (retried, bounded)."""
        pending = [*self._background, *([self._snapshot] if self._snapshot else [])]
        await asyncio.gather(*pending, return_exceptions=True)
        for attempt in range(self._final_attempts):
            try:
                written = await self._db(
                    self._streams.save_final,
                    self._stream_id,
                    text,
                    last_seq,
                    status,
                    finish_reason=finish_reason,
                    usage=usage,
                    stored=self._stored,
                )
                if not written:  # another final status is recorded: it stands
                    get_logger().warning(
                        "stream record already final; this end not recorded",
                        extra={**self._log_extra, "status": status},
                    )
                self.final_written = written
                return
            except Exception:
                last = attempt == self._final_attempts - 1
                get_logger().warning(
                    "final stream record write failed" + ("" if not last else "; giving up"),
                    extra={**self._log_extra, "attempt": attempt + 1},
                    exc_info=last,
                )
                self.final_failed = last
                if not last:
                    ceiling = min(FINAL_RETRY_MAX_SECONDS, FINAL_RETRY_BASE_SECONDS * 2**attempt)
                    await asyncio.sleep(random.uniform(ceiling / 2, ceiling))  # noqa: S311

    async def _quietly(self, fn: Any, *args: Any) -> None:
        try:
            await self._db(fn, *args)
        except Exception:
            get_logger().warning("stream record write failed", extra=self._log_extra, exc_info=True)
