"""RelayEnd: how a relay finishes, whatever raised (a mixin of `Relay`).

Whatever raises (a provider, a sink, an observer, the relay's own code), a stream
always finishes: `end` is emitted, the final status written, the sinks closed. The final
record is written before the channels get `end`, so a page that hears `end` and resumes
reads the stream ended, never `streaming` with no `end` to follow (the caller's own
answer gets its `end` at once: it reads no record).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .errors import ProxyError, error_object
from .observability import get_logger
from .outcome import StreamOutcome, ToolCall, missing_call_id, unknown_usage
from .streams import StreamStatus
from .tools.messages import as_tool_calls, function_call_content

if TYPE_CHECKING:
    from .envelopes import EnvelopeSequencer
    from .events import PlannedCall
    from .gate import StartGate
    from .jobs import StreamJob
    from .observability import StreamStats
    from .outcome import Observer, Sink
    from .recorder import StreamRecorder
    from .relayclock import RelayClock
    from .turn import TurnState

# How long the channels' `end` waits for the final record: longer than the write with its
# retries takes on a table that answers (~3 s), so pages read the end they heard; a table
# that hangs (botocore's timeouts) lets `end` go first, and the write goes on behind it.
END_WAITS_FOR_RECORD_SECONDS = 5.0


class RelayEnd:
    """The finishing steps (each guarded: one failing never stops the next), on a Relay's
    state."""

    if TYPE_CHECKING:  # the Relay's (relay.py)
        job: StreamJob
        gate: StartGate
        stats: StreamStats
        _closing: Callable[[StreamOutcome], Awaitable[None]] | None
        _observers: list[Observer]
        _callers: list[Sink]
        _channels: list[Sink]
        _sinks: list[Sink]
        _recorder: StreamRecorder | None
        _seq: EnvelopeSequencer
        _outcome: StreamOutcome
        _turn: TurnState
        _published: list[str]
        _announced: bool
        _calls_left_over: tuple[PlannedCall, ...]
        _clock: RelayClock
        _last_upstream: float | None
        _silent: bool
        _unregistered: bool
        _superseded: bool
        _log_extra: dict[str, str]

        async def _registered(self) -> bool: ...
        async def _thread_info(self) -> None: ...
        async def _emit(self, type_: str, **fields: Any) -> None: ...
        def _numbered(self, type_: str, **fields: Any) -> dict[str, Any] | None: ...
        async def _send(self, envelope: dict[str, Any], sinks: Sequence[Sink]) -> None: ...
        def _fail(self, error: ProxyError) -> None: ...

    async def _finish(self) -> None:
        outcome = self._outcome
        if not outcome.started:
            await self._step("record", self._registered())
        try:
            self._sum_up(outcome)
        except Exception:
            get_logger().exception("summing up the stream failed", extra=self._log_extra)
            self._fail(ProxyError("internal error while streaming"))
            outcome.tool_calls = []
            outcome.usage = unknown_usage()
        try:
            self._count(outcome)
        except Exception:  # the numbers are worth less than the stream's end
            get_logger().exception("counting the stream failed", extra=self._log_extra)
        if not outcome.started:
            await self._step("early end", self._early_end(outcome))
        if outcome.tool_calls and not self._announced and self.job.kind != "chat":
            content = function_call_content(outcome.tool_calls)
            await self._step("function_call", self._emit("function_call", content=content))
        if outcome.error is not None:
            await self._step("error", self._emit("error", error=error_object(outcome.error)))
        if self._closing is not None:
            await self._step("closing", self._closing(outcome))
        await self._end(outcome)

    async def _end(self, outcome: StreamOutcome) -> None:
        """`end`, numbered once: to the caller at once, to the channels after the final
        record (bounded: END_WAITS_FOR_RECORD_SECONDS), so every reader sees one end."""
        end = self._numbered("end", finish_reason=outcome.finish_reason, usage=outcome.usage)
        if end is not None:
            await self._send(end, self._callers)
        for observer in self._observers:
            await self._step("observer", observer.on_finish(outcome))
        final = asyncio.ensure_future(self._step("final record", self._save_final_snapshot()))
        await asyncio.wait({final}, timeout=END_WAITS_FOR_RECORD_SECONDS)
        if end is not None:
            await self._send(end, self._channels)
        await final

    def _count(self, outcome: StreamOutcome) -> None:
        """The stream's numbers for its log line and metrics (observability.StreamStats)."""
        stats = self.stats
        stats.finish_reason = outcome.finish_reason
        stats.error = outcome.error.kind if outcome.error is not None else None
        stats.count_usage(outcome.usage)
        if outcome.started and self._last_upstream is not None:
            first = self._clock.started + (stats.time_to_first_token_ms or 0.0) / 1000
            generation = self._last_upstream - first - self._clock.tools_wait
            stats.generation_ms = round(max(0.0, generation) * 1000, 1)

    def _sum_up(self, outcome: StreamOutcome) -> None:
        """The outcome's text, reasoning, calls left and usage, from what the turns said."""
        outcome.text = self._turn.answer()
        outcome.thinking = self._turn.reasoning()
        outcome.tool_calls = self._calls_left()
        if outcome.tool_calls and outcome.finish_reason == "stop":
            outcome.finish_reason = "tool_calls"
        outcome.usage = self._turn.reported_usage(self.job.llm_request)

    def _calls_left(self) -> list[ToolCall]:
        """The calls the stream ends with, for the backend to run (none once all ran)."""
        if self._calls_left_over:
            return as_tool_calls(self._calls_left_over)
        if self._announced:
            return []
        return [
            call if call.id else replace(call, id=missing_call_id(self.job.stream_id, number))
            for number, call in enumerate(self._turn.tool_calls())
        ]

    async def _early_end(self, outcome: StreamOutcome) -> None:
        """A stream that ends before any provider event: who hears about it (gate.py)."""
        if outcome.error is not None and await self.gate.failed_early(outcome.error):
            self._silent = True  # the caller answers it; the browsers never heard of it
            return
        if self._unregistered:
            self._silent = True  # no record (no stop, no resume): no browser hears of it
            return
        await self.gate.opened()
        await self._thread_info()

    async def _step(self, name: str, step: Any) -> None:
        try:
            await step
        except Exception:
            get_logger().error(f"finishing step '{name}' failed", extra=self._log_extra)
            get_logger().debug("finishing step traceback", exc_info=True)

    async def _save_final_snapshot(self) -> None:
        if self._recorder is None or self._unregistered or self._superseded:
            return
        outcome = self._outcome
        status: StreamStatus = "done"
        if outcome.finish_reason == "cancelled":
            status = "cancelled"
        elif outcome.error is not None:
            status = "failed"
        text = "".join(self._published)
        await self._recorder.final(
            text, self._seq.last_seq, status, outcome.finish_reason, outcome.usage
        )
        self.stats.record_failed = self._recorder.final_failed

    async def _close_sinks(self) -> None:
        results = await asyncio.gather(
            *(sink.close() for sink in self._sinks), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                get_logger().error("closing a sink failed", extra=self._log_extra, exc_info=result)
