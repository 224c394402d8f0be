"""The relay: runs one stream from a provider to its sinks (SSE caller, channels).

One reader task reads the provider's events and handles each as it arrives: no queue and
no second task between the provider and the sinks. A stop (cancel, deadline) between two
events cancels the reader where it waits for the provider, which closes the upstream
response at once; a stop that comes while an event is being handled waits for that
handling to end. Every piece of text is numbered and handed to the sinks as it comes (the
SSE caller never waits; the channel publisher coalesces its own copy). Deadlines (idle,
total, snapshot) are one timer, so the per-event path arms nothing.

Whatever raises (a provider, a sink, an observer, the relay's own code), a stream
always finishes: `end` is emitted, the final status written, the sinks closed. The final
record is written before the channels get `end`, so a page that hears `end` and resumes
reads the stream ended, never `streaming` with no `end` to follow (the caller's own
answer gets its `end` at once: it reads no record).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from . import redact, textguard
from .config import Settings
from .envelopes import EnvelopeSequencer, split_text
from .errors import DependencyUnavailable, ProxyError, StreamLost, error_object
from .events import (
    Finish,
    PlannedCall,
    RoundStarted,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallsReady,
    ToolsWaiting,
)
from .gate import AnsweredByOutcome, StartGate
from .jobs import StreamJob, thread_info
from .observability import StreamStats, get_logger
from .outcome import Observer, Sink, StreamOutcome, ToolCall, unknown_usage
from .providers.base import EventSource
from .recorder import StreamRecorder
from .relayclock import RelayClock
from .streams import StreamStatus
from .tools.messages import as_tool_calls, function_call_content, llm_tool_call_fields
from .turn import TurnState
from .upstream import as_proxy_error, close, valid

__all__ = ["Observer", "Relay", "Sink", "StreamOutcome", "ToolCall"]

# How long the channels' `end` waits for the final record: longer than the write with its
# retries takes on a table that answers (~3 s), so pages read the end they heard; a table
# that hangs (botocore's timeouts) lets `end` go first, and the write goes on behind it.
END_WAITS_FOR_RECORD_SECONDS = 5.0


class Relay:
    """Runs one StreamJob: provider events -> coalesced, numbered envelopes -> every sink."""

    def __init__(
        self,
        job: StreamJob,
        provider: EventSource,
        sinks: Sequence[Sink],
        *,
        settings: Settings,
        channels: Sink | None = None,
        recorder: StreamRecorder | None = None,
        stats: StreamStats | None = None,
        observers: Sequence[Observer] = (),
        gate: StartGate | None = None,
        progress: Callable[[], tuple[str, int]] | None = None,
        registration: Awaitable[None] | None = None,
        closing: Callable[[StreamOutcome], Awaitable[None]] | None = None,
    ) -> None:
        self.job = job
        # Runs with the outcome just before `end` (a thread run stores what was said).
        self._closing = closing
        self.gate: StartGate = gate or AnsweredByOutcome()
        self._observers = list(observers)
        self._provider = provider
        # The caller's sinks (an SSE answer) get `end` at once; the channels' publisher
        # once the final record is written (`_finish`).
        self._callers = list(sinks)
        self._channels = [channels] if channels is not None else []
        self._sinks = [*self._callers, *self._channels]
        self._settings = settings
        self._recorder = recorder
        # What a periodic snapshot says: the channels' text so far when they hold some back.
        self._progress = progress or self._published_so_far
        self.stats = stats or StreamStats.for_job(job, settings.prices)
        self._seq = EnvelopeSequencer(job.stream_id, job.action_name)
        # The reader (`_read`): whether it waits for the provider (a stop may cancel it
        # there), whether a stop or a timer waits for the event it handles to end.
        self._reader: asyncio.Task[None] | None = None
        self._sinks_started = asyncio.Event()
        self._between_events = False
        self._stopping = False
        self._cancel_requested = False
        self._timer_due = False
        self._outcome = StreamOutcome()
        self._turn = TurnState()
        self._published: list[str] = []
        # Known secrets out of the text as it streams (textguard.py): answer and reasoning.
        self._guards = textguard.guards(job.payload.api_key)
        # The tool loop's state: calls announced (function_call sent), calls the stream ends
        # with, and whether tools are running (the idle limit does not count that time).
        self._announced = False
        self._calls_left_over: tuple[PlannedCall, ...] = ()
        self._deadline_timer: asyncio.TimerHandle | None = None
        # Snapshots are for resuming a recorded stream; without a recorder, none.
        snapshots = settings.snapshot_interval_seconds if recorder is not None else None
        self._clock = RelayClock(
            settings.total_timeout_seconds, settings.idle_timeout_seconds, snapshots
        )
        # Set by the reader: when it sent the request, then when each event arrived.
        self._last_upstream: float | None = None
        self._silent = False  # an early failure answered to the caller: publish nothing
        # The stream record's write, running beside the provider request: nothing is
        # released (first event, early failure) before it landed; if it fails, nothing at all.
        self._record_write = asyncio.ensure_future(registration) if registration else None
        self._registration = self._record_write  # None once awaited
        self._unregistered = False
        # The record went final without this relay (`_ended_elsewhere`): it stands as is.
        self._superseded = False
        self._log_extra = {"stream_id": job.stream_id, "provider": job.provider}

    def cancel(self) -> None:
        """Stop the stream at once (it ends with `finish_reason: cancelled`)."""
        if not self._stopping:
            self._cancel_requested = True
            self._stop()

    async def run(self) -> StreamOutcome:
        """Run the stream to its end; never raises for provider, delivery or relay failures."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._clock.start(started)
        with redact.active(self.job.payload.api_key):
            tasks: list[asyncio.Task[None]] = []
            try:
                # The upstream request goes out first; sinks (channel membership) load meanwhile.
                self._reader = asyncio.create_task(self._read())
                tasks.append(self._reader)
                if self._recorder is not None:
                    tasks.append(asyncio.create_task(self._watch_record()))
                    tasks.append(asyncio.create_task(self._recorder.keep_alive()))
                await self._start_sinks()
                if self._outcome.error is None:
                    self._sinks_started.set()
                    self._arm_deadlines()
                    await self._reader
            except Exception:
                get_logger().exception("relay failed", extra=self._log_extra)
                self._fail(ProxyError("internal error while streaming"))
            finally:
                self._stopping = True  # no stop or timer acts any more
                if self._deadline_timer is not None:
                    self._deadline_timer.cancel()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                try:
                    await self._finish()
                finally:
                    await self._close_sinks()
        # After the lanes drained, so the post counts and the duration are final.
        self.stats.duration_ms = (loop.time() - started) * 1000
        get_logger().info(
            "stream finished", extra={**self._log_extra, **self.stats.as_log_fields()}
        )
        return self._outcome

    async def _start_sinks(self) -> None:
        try:
            await asyncio.gather(*(sink.start() for sink in self._sinks))
        except ProxyError as e:
            self._fail(e)
        except Exception:
            get_logger().error("could not start delivery", extra=self._log_extra, exc_info=True)
            self._fail(DependencyUnavailable("could not read the channels' subscribers"))

    # -- reading -------------------------------------------------------------------------

    async def _read(self) -> None:
        """Read the provider's events and handle each; a provider's failure fails the stream."""
        loop = asyncio.get_running_loop()
        # The idle clock starts with the upstream request, whatever the sinks are doing.
        self._last_upstream = self._clock.idle_since = loop.time()
        events = self._provider.stream(self.job.llm_request)
        try:
            while not self._stopping:
                self._between_events = True
                try:
                    event = valid(await anext(events))
                except StopAsyncIteration:
                    return await self._release_held()
                except Exception as e:  # the provider's failure (a stop is a CancelledError)
                    await self._release_held()
                    return self._fail(as_proxy_error(e))
                finally:
                    self._between_events = False
                self._last_upstream = loop.time()
                if not self._outcome.started and not await self._first(loop.time()):
                    return
                await self._handle(event)
                self._clock.idle_since = loop.time()
                if self._timer_due:
                    self._deadlines_due()
        except asyncio.CancelledError:
            if not self._stopping:
                raise  # the relay's own end, not a stop
        finally:
            self._stopped()
            await close(events)

    async def _first(self, arrived: float) -> bool:
        """Before the first event (arrived at loop time `arrived`): the sinks started, the
        stream record written (False when that failed, or when a stop came meanwhile)."""
        await self._sinks_started.wait()
        if self._stopping or not await self._registered():
            return False
        await self._on_first_event(arrived - self._clock.started)
        return True

    def _stop(self) -> None:
        """End the reading: at once when the reader waits for the provider, else once the
        event it handles was handled."""
        self._stopping = True
        if self._between_events and self._reader is not None:
            self._reader.cancel()

    def _stopped(self) -> None:
        self._stopping = True
        if self._cancel_requested and self._outcome.error is None:
            self._outcome.finish_reason = "cancelled"
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()

    async def _watch_record(self) -> None:
        """Poll the record for a stop, and for an end this relay did not write."""
        assert self._recorder is not None
        while True:
            await asyncio.sleep(self._settings.cancel_poll_seconds)
            try:
                poll = await self._recorder.poll()
            except Exception:
                get_logger().warning("cancel poll failed", extra=self._log_extra, exc_info=True)
                continue
            if poll.cancel:  # first: a stop (the ack's too) ends the stream `cancelled`
                self.cancel()
                return
            if poll.ended:
                return self._ended_elsewhere()

    def _ended_elsewhere(self) -> None:
        """The record went final without this relay: a dead letter took the stream for lost
        (its heartbeat stale) and told its pages `error` and `end`. Nothing more goes out
        after that `end`; the stream stops here, and leaves the record as the dead letter
        wrote it (its own `failed` would pass for a retry of that write and replace it)."""
        if self._stopping:
            return
        get_logger().error(
            "stream ended by a dead letter while its relay ran; the relay stops silently",
            extra=self._log_extra,
        )
        self._silent = self._superseded = True
        self._fail(StreamLost("the stream was taken for lost while it ran"))
        self._stop()

    # -- deadlines ------------------------------------------------------------------------

    def _arm_deadlines(self) -> None:
        """One timer at the nearest deadline. It acts between two events: a deadline is
        only ever judged after the event that arrived before it was handled."""
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._deadline_timer = asyncio.get_running_loop().call_at(
            self._clock.next_deadline(), self._on_timer
        )

    def _on_timer(self) -> None:
        """The timer: acts now between two events, else once the event being handled was."""
        self._deadline_timer = None
        if self._between_events:
            self._deadlines_due()
        else:
            self._timer_due = True

    def _deadlines_due(self) -> None:
        self._timer_due = False
        if self._stopping:
            return
        now = asyncio.get_running_loop().time()
        expired = self._clock.expired(now)
        if expired is not None:
            self._fail(expired)
            return self._stop()
        if self._clock.snapshot_due(now) and self._recorder is not None:
            # Only text already sent counts: a snapshot's text must match its seq.
            self._recorder.snapshot_soon(*self._progress())
        self._arm_deadlines()

    def _published_so_far(self) -> tuple[str, int]:
        return "".join(self._published), self._seq.last_seq

    async def record_written(self) -> None:
        """Return once the stream record's write ended, landed or failed (at once when there
        is none): a caller waiting for the first byte starts its clock from there, so a slow
        write that then fails is still its answer (a 503), not a silent stream."""
        if self._record_write is not None:
            await asyncio.wait({self._record_write})

    async def _registered(self) -> bool:
        """Wait for the stream record's write (once); False when it failed, and then that
        failure (a 503) is the stream's error."""
        registration, self._registration = self._registration, None
        if registration is not None:
            try:
                await registration
            except ProxyError as e:  # the store's own 503 (service.store)
                self._unregistered = True
                self._fail(e)
            except Exception:
                get_logger().warning("stream record not written", extra=self._log_extra)
                self._unregistered = True
                self._fail(DependencyUnavailable("the stream store (DynamoDB) is unavailable"))
        return not self._unregistered

    async def _on_first_event(self, elapsed: float) -> None:
        self._outcome.started = True
        self.stats.time_to_first_token_ms = elapsed * 1000
        await self.gate.opened()
        if self._recorder is not None:
            self._recorder.started()
        await self._thread_info()

    async def _thread_info(self) -> None:
        if self.job.kind == "chat":
            return
        await self._emit("threadInfo", content=thread_info(self.job.stream_id, self.job.thread))

    async def _handle(self, event: StreamEvent) -> None:
        """One event, text guarded first: held text goes out before any other event."""
        guards = self._guards
        if guards is not None:
            if isinstance(event, TextDelta | ThinkingDelta):
                text = guards[isinstance(event, ThinkingDelta)].release(event.text)
                if not text:
                    return
                if text is not event.text:
                    event = type(event)(text)
            elif guards[0].holding or guards[1].holding:
                await self._release_held()
        await self._deliver(event)

    async def _release_held(self) -> None:
        """The text the guards held, now that no more text joins it."""
        if self._guards is None:
            return
        answer, reasoning = self._guards
        if answer.holding:
            await self._deliver(TextDelta(answer.rest()))
        if reasoning.holding:
            await self._deliver(ThinkingDelta(reasoning.rest()))

    async def _deliver(self, event: StreamEvent) -> None:
        if isinstance(event, ToolCallsReady | ToolsWaiting | RoundStarted):
            return await self._on_loop_event(event)
        for observer in self._observers:
            try:
                await observer.on_event(event)
            except Exception:
                get_logger().warning("observer failed", extra=self._log_extra, exc_info=True)
        self._turn.handle(event)
        if isinstance(event, TextDelta):
            await self._text("delta", event.text)
        elif isinstance(event, ThinkingDelta):
            await self._text("thinking", event.text)
        elif isinstance(event, Finish):
            self._outcome.finish_reason = event.reason

    async def _on_loop_event(self, event: ToolCallsReady | ToolsWaiting | RoundStarted) -> None:
        if isinstance(event, ToolsWaiting):
            self._clock.tools(event.waiting, asyncio.get_running_loop().time())
            if self._deadline_timer is not None:  # the idle deadline comes or goes
                self._arm_deadlines()
        elif isinstance(event, RoundStarted):
            self.stats.tool_rounds += 1
        else:
            await self._announce(event)

    async def _announce(self, ready: ToolCallsReady) -> None:
        """The model asked for tools: say which (function_call), and hand each frontend call
        to the pages (llmToolCall) when the loop is about to wait for them."""
        self._announced = True
        self.stats.tool_calls += len(ready.calls)
        await self._emit("function_call", content=function_call_content(ready.calls))
        if not ready.run:
            self._calls_left_over = ready.calls
            return
        for call in ready.calls:
            if call.frontend and not call.too_large:  # that one fails at once (tools/loop.py)
                await self._emit("llmToolCall", **llm_tool_call_fields(call))

    def _fail(self, error: ProxyError) -> None:
        self._outcome.error = error
        self._outcome.finish_reason = "error"

    # -- emitting ------------------------------------------------------------------------

    async def _text(self, kind: str, text: str) -> None:
        """Number and hand on one piece of text, cut to fit one WebSocket message each."""
        if not text:
            return
        for piece in split_text(text):
            await self._emit(kind, content=piece)
            if kind == "delta":
                self._published.append(piece)

    async def _emit(self, type_: str, **fields: Any) -> None:
        """Number one message and hand it to every sink; a failing sink never stops the rest."""
        envelope = self._numbered(type_, **fields)
        if envelope is not None:
            await self._send(envelope, self._sinks)

    def _numbered(self, type_: str, **fields: Any) -> dict[str, Any] | None:
        """The next numbered message; None when it goes nowhere (counted all the same)."""
        if self._silent:
            return None
        self.stats.messages += 1
        if not self._sinks:  # the /v1 face without channels reads observers' events only
            self._seq.skip()
            return None
        return self._seq.envelope(type_, **fields)

    async def _send(self, envelope: dict[str, Any], sinks: Sequence[Sink]) -> None:
        for sink in sinks:
            try:
                await sink.send(envelope)
            except Exception:
                get_logger().warning("sink failed", extra=self._log_extra, exc_info=True)

    # -- finishing (never raises) ---------------------------------------------------------

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
        return [] if self._announced else self._turn.tool_calls()

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
