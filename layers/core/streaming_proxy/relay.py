"""The relay: runs one stream from a provider to its sinks (SSE caller, channels).

One reader task reads the provider's events and handles each as it arrives: no queue and
no second task between the provider and the sinks. A stop (cancel, deadline: relaystops.py)
between two events cancels the reader where it waits for the provider, which closes the
upstream response at once; a stop that comes while an event is being handled waits for
that handling to end. Every piece of text is numbered and handed to the sinks as it comes
(the SSE caller never waits; the channel publisher coalesces its own copy). Whatever
raises, a stream always finishes (relayend.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from . import redact, textguard
from .config import Settings
from .envelopes import EnvelopeSequencer, split_text
from .errors import ProxyError
from .events import (
    Finish,
    PlannedCall,
    RoundStarted,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallsReady,
    ToolsWaiting,
)
from .gate import AnsweredByOutcome, StartGate
from .jobs import StreamJob
from .observability import StreamStats, get_logger
from .outcome import Observer, Sink, StreamOutcome, ToolCall
from .providers.base import EventSource
from .recorder import StreamRecorder
from .relayclock import RelayClock
from .relayend import RelayEnd
from .relaystart import RelayStart
from .relaystops import RelayStops
from .tools.messages import function_call_content, llm_tool_call_fields
from .turn import TurnState
from .upstream import as_proxy_error, close, valid

__all__ = ["Observer", "Relay", "Sink", "StreamOutcome", "ToolCall"]


class Relay(RelayStart, RelayStops, RelayEnd):
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
        # And out of tool calls' arguments as they stream (the OpenAI face, no tool loop).
        self._call_guards = textguard.call_guards(job.payload.api_key)
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

    def _published_so_far(self) -> tuple[str, int]:
        return "".join(self._published), self._seq.last_seq

    async def _handle(self, event: StreamEvent) -> None:
        """One event, text and call arguments guarded first: what a guard held goes out
        before any other event (a call's, before any event but another call's fragment)."""
        guards, calls = self._guards, self._call_guards
        if guards is not None and calls is not None:
            if isinstance(event, TextDelta | ThinkingDelta):
                if calls.held:
                    await self._release_calls()
                text = guards[isinstance(event, ThinkingDelta)].release(event.text)
                if not text:
                    return
                if text is not event.text:
                    event = type(event)(text)
            elif isinstance(event, ToolCallDelta):
                # Another call's fragment is no break in this call's arguments: its held end
                # waits for its next fragment (calls are put together by index).
                await self._release_text()
                for fragment in calls.release(event):
                    await self._deliver(fragment)
                return
            elif guards[0].holding or guards[1].holding or calls.held:
                await self._release_held()
        await self._deliver(event)

    async def _release_held(self) -> None:
        """What the guards held, now that no more joins it."""
        await self._release_text()
        await self._release_calls()

    async def _release_text(self) -> None:
        if self._guards is None:
            return
        answer, reasoning = self._guards
        if answer.holding:
            await self._deliver(TextDelta(answer.rest()))
        if reasoning.holding:
            await self._deliver(ThinkingDelta(reasoning.rest()))

    async def _release_calls(self) -> None:
        if self._call_guards is not None:
            for rest in self._call_guards.rest():
                await self._deliver(rest)

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
