"""StartGate: who hears about a stream that fails before the provider's first byte.

A failure is reported once, to whoever already knows the stream exists. While the HTTP
caller still waits for its answer (the ack waits for the first byte, an SSE answer holds
its headers), the failure becomes that answer and nothing is published: the browsers
never learned the stream id. Once the caller has been answered, failures are published
to the channels (`threadInfo`, `error`, `end`) like any later failure.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from .blocking import BlockingCalls
from .errors import ProxyError
from .observability import get_logger
from .streams import StartError, StreamStore


class StartGate(Protocol):
    async def opened(self) -> None:
        """The provider sent its first event: the caller may be answered `started`."""

    async def failed_early(self, error: ProxyError) -> bool:
        """The stream failed before its first event. True when the caller will answer it
        (then nothing is published); False when the caller was already answered."""


class CallerGate:
    """The HTTP caller waits in this process (a detached task's ack, an SSE answer)."""

    def __init__(self) -> None:
        self._outcome: asyncio.Future[ProxyError | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._caller_answered = False

    async def wait(self, within: float) -> ProxyError | None:
        """The early failure, or None once the provider started or `within` s passed (from
        then on the caller counts as answered and failures are published)."""
        if within > 0 and not self._outcome.done():
            await asyncio.wait({self._outcome}, timeout=within)
        if self._outcome.done():
            return self._outcome.result()
        # No await between the check above and this line: the relay cannot slip in between.
        self._caller_answered = True
        return None

    @property
    def started(self) -> bool:
        """The provider's first event came (the stream did not fail before it)."""
        return self._outcome.done() and self._outcome.result() is None

    async def opened(self) -> None:
        if not self._outcome.done():
            self._outcome.set_result(None)

    async def failed_early(self, error: ProxyError) -> bool:
        if self._caller_answered or self._outcome.done():
            return False
        self._outcome.set_result(error)
        return True


class AnsweredByOutcome:
    """The caller reads the outcome itself (`stream:false`): it always hears the failure."""

    async def opened(self) -> None:
        return None

    async def failed_early(self, error: ProxyError) -> bool:
        return True


class RecordGate:
    """The caller waits in another invocation (Lambda mode): its ack polls the stream
    record, and the record's conditional writes decide who heard first."""

    def __init__(self, streams: StreamStore, stream_id: str, db: BlockingCalls) -> None:
        self._streams = streams
        self._stream_id = stream_id
        self._db = db

    async def opened(self) -> None:
        return None  # the recorder marks the record `streaming`; the ack poll sees that

    async def failed_early(self, error: ProxyError) -> bool:
        try:
            return await self._db(
                self._streams.mark_start_failed, self._stream_id, StartError.of(error)
            )
        except Exception:
            get_logger().warning(
                "start failure not recorded; publishing it",
                extra={"stream_id": self._stream_id},
                exc_info=True,
            )
            return False
