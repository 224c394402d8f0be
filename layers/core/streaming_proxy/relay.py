"""The relay: runs one stream from a provider to its sinks (SSE caller, channels).

Provider events arrive through a queue fed by a producer task, so the consumer can
wait with deadlines (coalescing window, idle timeout, total timeout) and a stop can
cancel the producer, which closes the upstream response, at any moment.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from .config import Settings
from .envelopes import EnvelopeSequencer, split_text
from .errors import ProxyError, UpstreamError, UpstreamTimeout
from .events import Finish, ProviderEvent, TextDelta, ThinkingDelta, ToolCallDelta, Usage
from .jobs import StreamJob
from .observability import StreamStats, get_logger
from .outcome import Observer, Sink, StreamOutcome, ToolCall, error_event_body
from .providers.base import Provider
from .recorder import StreamRecorder
from .streams import StreamStatus
from .tokens import estimate_prompt_tokens, estimate_text_tokens

__all__ = ["Observer", "Relay", "Sink", "StreamOutcome", "ToolCall", "cancel_local"]


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name


_DONE = _Marker("done")
_CANCEL = _Marker("cancel")

# Streams running in this process, so a local stop needs no wait for the next poll.
_running: dict[str, Relay] = {}


def cancel_local(stream_id: str) -> bool:
    """Stop a stream running in this process at once; False if it runs elsewhere."""
    relay = _running.get(stream_id)
    if relay is None:
        return False
    relay.cancel()
    return True


class Relay:
    """Runs one StreamJob: provider events -> coalesced, numbered envelopes -> every sink."""

    def __init__(
        self,
        job: StreamJob,
        provider: Provider,
        sinks: Sequence[Sink],
        *,
        settings: Settings,
        recorder: StreamRecorder | None = None,
        stats: StreamStats | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        self.job = job
        self._observers = list(observers)
        self._provider = provider
        self._sinks = list(sinks)
        self._settings = settings
        self._recorder = recorder
        self.stats = stats or StreamStats(provider=job.provider, kind=job.kind)
        self._seq = EnvelopeSequencer(job.stream_id, job.action_name)
        self._queue: asyncio.Queue[ProviderEvent | _Marker | BaseException] = asyncio.Queue()
        self._outcome = StreamOutcome()
        self._text: list[str] = []
        self._published: list[str] = []
        self._thinking: list[str] = []
        self._tools: dict[int, ToolCall] = {}
        self._usage = Usage()
        self._pending_kind: str | None = None
        self._pending: list[str] = []
        self._flush_at: float | None = None
        self._log_extra = {"stream_id": job.stream_id, "provider": job.provider}
        self.started: asyncio.Future[ProxyError | None] = asyncio.get_running_loop().create_future()

    def cancel(self) -> None:
        self._queue.put_nowait(_CANCEL)

    async def run(self) -> StreamOutcome:
        """Run the stream to its end; never raises for provider or delivery failures."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        _running[self.job.stream_id] = self
        # The upstream request goes out first; sinks (channel membership) load meanwhile.
        producer = asyncio.create_task(self._produce())
        watcher = asyncio.create_task(self._watch_cancel()) if self._recorder else None
        try:
            await self._start_sinks()
            if self._outcome.error is None:
                if self.job.kind != "chat":
                    await self._emit("threadInfo", content={"streamId": self.job.stream_id})
                await self._consume(started)
        finally:
            _running.pop(self.job.stream_id, None)
            for task in (producer, watcher):
                if task is not None:
                    task.cancel()
            await asyncio.gather(producer, *([watcher] if watcher else []), return_exceptions=True)
        await self._finish()
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
        except Exception:
            get_logger().error("could not start delivery", extra=self._log_extra, exc_info=True)
            self._fail(ProxyError("could not read the channels' subscribers"))

    # -- producing -----------------------------------------------------------------------

    async def _produce(self) -> None:
        try:
            async for event in _guarded(self._provider.stream(self.job.llm_request)):
                await self._queue.put(event)
            await self._queue.put(_DONE)
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            await self._queue.put(e)

    async def _watch_cancel(self) -> None:
        assert self._recorder is not None
        while True:
            await asyncio.sleep(self._settings.cancel_poll_seconds)
            try:
                flagged = await self._recorder.cancel_requested()
            except Exception:
                get_logger().warning("cancel poll failed", extra=self._log_extra, exc_info=True)
                continue
            if flagged:
                self.cancel()
                return

    # -- consuming -----------------------------------------------------------------------

    async def _consume(self, started: float) -> None:
        loop = asyncio.get_running_loop()
        settings = self._settings
        total_deadline = started + settings.total_timeout_seconds
        last_upstream = started
        next_snapshot = started + settings.snapshot_interval_seconds
        while True:
            now = loop.time()
            deadlines = [total_deadline, last_upstream + settings.idle_timeout_seconds]
            if self._flush_at is not None:
                deadlines.append(self._flush_at)
            if self._recorder is not None:
                deadlines.append(next_snapshot)
            try:
                item = await asyncio.wait_for(self._queue.get(), max(0.0, min(deadlines) - now))
            except TimeoutError:
                now = loop.time()
                if now >= total_deadline:
                    limit = settings.total_timeout_seconds
                    return self._fail(
                        UpstreamTimeout(f"stream exceeded its total time of {limit:g} s")
                    )
                if now >= last_upstream + settings.idle_timeout_seconds:
                    limit = settings.idle_timeout_seconds
                    return self._fail(UpstreamTimeout(f"no data from the provider for {limit:g} s"))
                if self._flush_at is not None and now >= self._flush_at:
                    await self._flush()
                if now >= next_snapshot and self._recorder is not None:
                    # Only text already sent counts: a snapshot's text must match its seq.
                    self._recorder.snapshot_soon("".join(self._published), self._seq.last_seq)
                    next_snapshot = now + settings.snapshot_interval_seconds
                continue
            if isinstance(item, _Marker):
                if item is _CANCEL:
                    self._outcome.finish_reason = "cancelled"
                return
            if isinstance(item, BaseException):
                return self._fail(_as_proxy_error(item))
            last_upstream = loop.time()
            if not self._outcome.started:
                self._on_first_event(last_upstream - started)
            await self._handle(item)

    def _on_first_event(self, elapsed: float) -> None:
        self._outcome.started = True
        _resolve(self.started, None)
        self.stats.time_to_first_token_ms = elapsed * 1000
        if self._recorder is not None:
            self._recorder.started()

    async def _handle(self, event: ProviderEvent) -> None:
        for observer in self._observers:
            await observer.on_event(event)
        if isinstance(event, TextDelta):
            self._text.append(event.text)
            await self._buffer("delta", event.text)
        elif isinstance(event, ThinkingDelta):
            self._thinking.append(event.text)
            await self._buffer("thinking", event.text)
        elif isinstance(event, ToolCallDelta):
            await self._flush()
            call = self._tools.setdefault(event.index, ToolCall(id="", name=""))
            call.id = event.id or call.id
            call.name = event.name or call.name
            call.arguments += event.arguments
        elif isinstance(event, Usage):
            self._usage = Usage(
                event.prompt_tokens
                if event.prompt_tokens is not None
                else self._usage.prompt_tokens,
                event.completion_tokens
                if event.completion_tokens is not None
                else self._usage.completion_tokens,
            )
        elif isinstance(event, Finish):
            self._outcome.finish_reason = event.reason

    def _fail(self, error: ProxyError) -> None:
        self._outcome.error = error
        self._outcome.finish_reason = "error"

    # -- coalescing and emitting ----------------------------------------------------------

    async def _buffer(self, kind: str, text: str) -> None:
        if not text:
            return
        if self._pending_kind not in (None, kind):
            await self._flush()
        window = self.job.flush_interval_ms / 1000
        first_text = kind == "delta" and len(self._text) == 1
        self._pending_kind = kind
        self._pending.append(text)
        if window == 0 or first_text:
            # The first token goes out at once: coalescing must not delay time to first token.
            await self._flush()
        elif self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().time() + window

    async def _flush(self) -> None:
        self._flush_at = None
        if not self._pending:
            return
        kind, text = self._pending_kind or "delta", "".join(self._pending)
        self._pending, self._pending_kind = [], None
        for piece in split_text(text):
            await self._emit(kind, content=piece)
            if kind == "delta":
                self._published.append(piece)

    async def _emit(self, type_: str, **fields: Any) -> None:
        envelope = self._seq.envelope(type_, **fields)
        self.stats.messages += 1
        for sink in self._sinks:
            try:
                await sink.send(envelope)
            except Exception:
                get_logger().warning("sink failed", extra=self._log_extra, exc_info=True)

    async def _finish(self) -> None:
        await self._flush()
        outcome = self._outcome
        outcome.text = "".join(self._text)
        outcome.thinking = "".join(self._thinking)
        outcome.tool_calls = [self._tools[i] for i in sorted(self._tools)]
        if outcome.tool_calls and outcome.finish_reason == "stop":
            outcome.finish_reason = "tool_calls"
        outcome.usage = self._final_usage()
        self.stats.finish_reason = outcome.finish_reason
        self.stats.output_tokens = outcome.usage["completion_tokens"]
        if outcome.error is not None and not outcome.started and self._recorder is not None:
            await self._recorder.start_failed(outcome.error)
        _resolve(self.started, outcome.error if not outcome.started else None)
        if outcome.tool_calls and self.job.kind != "chat":
            await self._emit("function_call", content={"functions": outcome.function_summaries()})
        if outcome.error is not None:
            await self._emit("error", error=error_event_body(outcome.error))
        await self._emit("end", finish_reason=outcome.finish_reason, usage=outcome.usage)
        for observer in self._observers:
            await observer.on_finish(outcome)
        await self._save_final_snapshot()

    async def _save_final_snapshot(self) -> None:
        if self._recorder is None:
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

    def _final_usage(self) -> dict[str, Any]:
        request = self.job.llm_request
        prompt, completion = self._usage.prompt_tokens, self._usage.completion_tokens
        estimated = prompt is None or completion is None
        if prompt is None:
            prompt = estimate_prompt_tokens(request.messages, request.tools)
        if completion is None:
            produced = "".join(self._text) + "".join(self._thinking)
            produced += "".join(c.name + c.arguments for c in self._tools.values())
            completion = estimate_text_tokens(produced)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "estimated": estimated,
        }

    async def _close_sinks(self) -> None:
        await asyncio.gather(*(sink.close() for sink in self._sinks), return_exceptions=True)


async def _guarded(events: AsyncIterator[ProviderEvent]) -> AsyncIterator[ProviderEvent]:
    """Map transport errors from any adapter onto the error tree; always close the adapter."""
    try:
        async for event in events:
            yield event
    except httpx.TimeoutException as e:
        raise UpstreamTimeout("the provider did not answer in time") from e
    except httpx.HTTPError as e:
        raise UpstreamError(f"could not reach the provider: {type(e).__name__}") from e
    finally:
        closer = getattr(events, "aclose", None)
        if closer is not None:
            await closer()


def _resolve(future: asyncio.Future[ProxyError | None], value: ProxyError | None) -> None:
    if not future.done():
        future.set_result(value)


def _as_proxy_error(error: BaseException) -> ProxyError:
    if isinstance(error, ProxyError):
        return error
    get_logger().error("unexpected error in a provider stream", exc_info=error)
    return ProxyError("internal error while streaming")
