"""StreamService: accepts a request, runs its relay (here or detached), answers stops."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .channels.names import check_targets
from .errors import ValidationFailed
from .gate import CallerGate
from .jobs import StreamJob
from .observability import get_logger
from .outcome import StreamOutcome
from .policy import apply_policy
from .providers.registry import INLINED_FOR
from .relay import Relay
from .relayassembly import RelayAssembly
from .streams import StartError, StreamRecord, StreamStatus

if TYPE_CHECKING:
    from .lambda_detach import LambdaDetach


@dataclass
class StopResult:
    status: str  # "stopped" | "not_found"
    stream_id: str
    stream_status: str | None = None


@dataclass(frozen=True)
class Detached:
    """How a detached stream stood when its caller was answered: `pending` (no first byte
    yet), `streaming`, or already over; `error` when it failed before its first byte."""

    status: StreamStatus
    error: StartError | None = None


class StreamService(RelayAssembly):
    """The stream function's use cases, created once per process on its dependencies
    (dependencies.py) and the relays they build (relayassembly.py)."""

    @cached_property
    def _running(self) -> dict[str, Relay]:
        """The relays running in this process, by stream id: `stop` cancels them at once."""
        return {}

    @cached_property
    def _detached(self) -> set[asyncio.Task[StreamOutcome]]:
        """The relays `start` runs in the background: `aclose` lets them finish."""
        return set()

    @cached_property
    def lambda_detach(self) -> LambdaDetach:
        """DETACH_MODE=lambda's ack and invoked relay; imported by Lambda mode only."""
        from .lambda_detach import LambdaDetach

        return LambdaDetach(self)

    async def aclose(self) -> None:
        """Let detached relays finish (bounded), then release clients and threads."""
        if self._detached:
            await asyncio.wait(self._detached, timeout=self.settings.drain_timeout_seconds)
        await super().aclose()

    # -- use cases ---------------------------------------------------------------------------

    def check(self, job: StreamJob) -> None:
        """Everything that can be refused before anything is published (400/401/403)."""
        check_targets(job.channels, self.settings.max_channels_per_request)
        app = self.apps.get(job.app_id)
        if app is not None:
            apply_policy(app.app_id, app.config, job)  # may pin the model: before llm_request
        frontend = job.frontend_tools if job.runs_tools else []
        if frontend and (not job.payload.stream or not job.channels):
            raise ValidationFailed(
                "payload.tools: frontend tools (ui_...) are answered by a browser on the "
                "stream's channels, so they cannot run with stream:false or without channels",
                fields=[{"field": "payload.tools", "message": "frontend: " + ", ".join(frontend)}],
            )
        request = job.llm_request
        if job.provider in INLINED_FOR:
            from .providers.images import awaiting_fetch

            request = awaiting_fetch(request)  # the relay fetches them before the provider
        self.providers.resolve(job.provider).prepare(request)

    async def admit(self, job: StreamJob) -> None:
        """Count the request against its app's limits (limits.py): 429 when the day's tokens
        reached `tokenQuota` or the minute's requests `rateLimit`. Call after `check`, so a
        refused request is never counted; a store failure refuses it (503), never admits."""
        app = self.apps.get(job.app_id)
        if app is None:
            return
        if app.config.token_quota is not None:
            await self.store(self.limits.check_quota, job.app_id, app.config.token_quota)
        if app.config.rate_limit is not None:
            await self.store(self.limits.count_request, job.app_id, app.config.rate_limit)

    async def register(self, job: StreamJob) -> None:
        """Write the stream's record (stop and resume need it); 503 if the table is down."""
        record = StreamRecord(job.stream_id, job.app_id, job.action_name, job.channels)
        # Nobody will wait for the first byte: failures go to the channels from the start.
        acked = self.settings.detach_mode == "lambda" and self.settings.ack_wait_seconds <= 0
        await self.store(self.streams.create, record, acked=acked)

    def registration(self, job: StreamJob) -> asyncio.Task[None]:
        """`register`, started now beside the provider request: give it to `relay`, which
        releases nothing before it landed (and nothing at all when it failed: a 503)."""
        return asyncio.ensure_future(self.register(job))

    async def answer_tool(
        self,
        app_id: str,
        call_id: str,
        answer: dict[str, Any],
        *,
        channels: frozenset[str] | None,
        by: str,
    ) -> None:
        """Record a frontend tool's answer (first wins) and hand it to the stream at once
        when that stream runs in this process."""
        from .tools.answers import accept_answer

        await self.store(
            accept_answer,
            self.tool_calls,
            app_id,
            call_id,
            answer,
            channels=channels,
            by=by,
            max_bytes=self.settings.tool_answer_max_bytes,
        )
        self.tool_answers.deliver(app_id, call_id, answer)

    async def run(self, relay: Relay) -> StreamOutcome:
        """Run a relay to its end and report its metrics."""
        self._running[relay.job.stream_id] = relay
        try:
            outcome = await relay.run()
        finally:
            self._running.pop(relay.job.stream_id, None)
        try:
            relay.stats.emit()
        except Exception:
            get_logger().warning("metrics flush failed", exc_info=True)
        return outcome

    def start(self, relay: Relay) -> asyncio.Task[StreamOutcome]:
        """Run a relay in the background of this process; a caller hanging up cannot stop it."""
        task = asyncio.create_task(self.run(relay))
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)
        return task

    async def detach(self, job: StreamJob) -> Detached:
        """Run `job` without the caller: locally as a task, in Lambda as an async self-invoke.

        Writes the stream's record first (DynamoDB down raises the 503). Waits up to
        ACK_WAIT_SECONDS for the provider's first byte, so a request that fails at once
        (bad provider key, unknown model) still gets its error as the HTTP answer (and then
        nothing is published: gate.py); otherwise says how the stream stands.
        """
        if self.settings.detach_mode == "lambda":
            return await self.lambda_detach.detach(job)
        wait = self.settings.ack_wait_seconds
        loop = asyncio.get_running_loop()
        started = loop.time()
        gate = CallerGate()
        registration = self.registration(job)
        self.start(self.relay(job, gate=gate, registration=registration))
        await registration  # the provider request is under way meanwhile
        error = await gate.wait(max(0.0, wait - (loop.time() - started)))
        if error is not None:
            return Detached("failed", StartError.of(error))
        return Detached("streaming" if gate.started else "pending")

    async def stop(
        self, stream_id: str, app_id: str, channels: frozenset[str] | None = None
    ) -> StopResult:
        """Set the cancel flag of an app's stream (the relay notices within a poll). With
        `channels` (a page's token) only a stream publishing to one of them is found."""
        record = await self.store(self.streams.get, stream_id)
        if record is None or record.app_id != app_id:
            return StopResult("not_found", stream_id)
        if channels is not None and channels.isdisjoint(record.channels):
            return StopResult("not_found", stream_id)
        if not record.finished:
            await self.store(self.streams.request_cancel, stream_id)
            running = self._running.get(stream_id)
            if running is not None:  # in this process: no need to wait for the next poll
                running.cancel()
        return StopResult("stopped", stream_id, record.status)
