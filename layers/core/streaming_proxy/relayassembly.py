"""RelayAssembly: a stream's relay built from the process's dependencies (its channels'
publisher, record, token meter, tool loop and image inliner)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .channels.publisher import ChannelPublisher
from .dependencies import Dependencies
from .gate import RecordGate, StartGate
from .jobs import StreamJob
from .limits import TokenMeter
from .observability import PublishStats, StreamStats
from .outcome import Observer, Sink, StreamOutcome
from .providers.base import EventSource
from .providers.registry import INLINED_FOR
from .recorder import StreamRecorder
from .relay import Relay


class RelayAssembly(Dependencies):
    """Builds every relay the process runs (an SSE answer's, a detached one's, a
    self-invoke's), so each gets the same publisher, meters and sources."""

    def relay(
        self,
        job: StreamJob,
        sinks: Sequence[Sink] = (),
        observers: Sequence[Observer] = (),
        gate: StartGate | None = None,
        registration: Awaitable[None] | None = None,
        source: EventSource | None = None,
        *,
        claimed: bool = False,
    ) -> Relay:
        """A relay for `job`, publishing to its channels (if any) and to `sinks`;
        `registration`: the record's write still under way (`registration()`); `source`:
        what it reads instead of the job's provider (detached.Refused); `claimed`: a
        detached relay's claimed job, whose record it keeps a heartbeat on."""
        stats = StreamStats.for_job(job, self.settings.prices)
        observers = [*observers, *self._meters(job)]
        publisher = None
        if job.channels:
            publisher = self.publisher(
                job.app_id,
                job.channels,
                job.stream_id,
                stats.publish,
                window_seconds=job.flush_interval_ms / 1000,
            )
        # Streams with channels are registered (stop, resume); the others are not.
        recorder = (
            StreamRecorder(
                self.streams,
                job.stream_id,
                self.db,
                final_attempts=self.settings.final_write_attempts,
                heartbeat_seconds=self.settings.heartbeat_seconds if claimed else None,
            )
            if job.channels
            else None
        )
        # A run on a thread stores the tool loop's rounds and the answer before `end`.
        rounds: list[dict[str, Any]] | None = [] if job.thread is not None else None
        return Relay(
            job,
            source or self._source(job, rounds),
            sinks,
            settings=self.settings,
            channels=publisher,
            recorder=recorder,
            stats=stats,
            observers=observers,
            gate=gate,
            progress=publisher.sent_so_far if publisher else None,
            registration=registration,
            closing=self._run_closing(job, rounds),
        )

    def _run_closing(
        self, job: StreamJob, rounds: list[dict[str, Any]] | None
    ) -> Callable[[StreamOutcome], Awaitable[None]] | None:
        if job.thread is None or rounds is None:
            return None

        async def closing(outcome: StreamOutcome) -> None:
            await self.runs.finish(job, outcome, rounds)

        return closing

    def record_gated_relay(self, job: StreamJob, source: EventSource | None = None) -> Relay:
        """The relay of a Lambda self-invoke (its job claimed): its caller's ack polls the
        stream record, and the dead-letter handler its heartbeat."""
        gate = RecordGate(self.streams, job.stream_id, self.db)
        return self.relay(job, gate=gate, source=source, claimed=True)

    def publisher(
        self,
        app_id: str,
        channels: Sequence[str],
        stream_id: str,
        stats: PublishStats | None = None,
        *,
        window_seconds: float = 0.0,
    ) -> ChannelPublisher:
        """The fan-out of one stream (or one published message) to an app's channels;
        text is coalesced over `window_seconds`, widened under load up to the ceiling."""
        return ChannelPublisher(
            store=self.connections,
            poster=self.poster,
            db=self.db,
            app_id=app_id,
            channels=channels,
            stream_id=stream_id,
            refresh_seconds=self.settings.member_refresh_seconds,
            retry=self._retry,
            drain_seconds=self.settings.drain_timeout_seconds,
            stats=stats,
            slow=self._slow,
            window_seconds=window_seconds,
            max_window_seconds=self.settings.max_flush_interval_ms / 1000,
        )

    def _meters(self, job: StreamJob) -> list[Observer]:
        """The observer counting the stream's tokens when its app has a `tokenQuota` (here
        or in a Lambda self-invoke alike: every relay is built by `relay`)."""
        app = self.apps.get(job.app_id)
        if app is None or app.config.token_quota is None:
            return []

        async def add(tokens: int) -> None:
            await self.store(self.limits.add_tokens, job.app_id, tokens)

        return [TokenMeter(add)]

    def _source(self, job: StreamJob, rounds: list[dict[str, Any]] | None = None) -> EventSource:
        """The provider, wrapped in the tool loop when a Klai stream offers tools (the
        OpenAI face leaves tool calls to its caller, as OpenAI does), and in the image
        inliner for providers that take images only as bytes."""
        source = self._tool_source(job, rounds)
        if job.provider not in INLINED_FOR:
            return source
        from .providers.images import ImageInliner

        field = "messages" if job.kind == "openai" else "payload.messages"
        return ImageInliner(source, self.images, field)

    def _tool_source(self, job: StreamJob, rounds: list[dict[str, Any]] | None) -> EventSource:
        provider = self.providers.resolve(job.provider)
        if not job.runs_tools:
            return provider
        from .tools.frontend import FrontendTools
        from .tools.loop import ToolLoop, ToolRunner

        app = self.apps.get(job.app_id)
        runner = ToolRunner(
            job,
            FrontendTools(self.tool_calls, self.db, self.tool_answers),
            self.webhooks,
            app.config.tool_webhook if app else None,
            timeout_seconds=job.tool_timeout_seconds,
        )
        return ToolLoop(provider, runner, max_rounds=job.max_tool_rounds, transcript=rounds)
