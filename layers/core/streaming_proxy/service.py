"""StreamService: accepts a request, runs its relay (here or detached), answers stops."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import httpx
from botocore.exceptions import BotoCoreError, ClientError

from . import aws, nethttp, redact
from .auth import AppRegistry
from .blocking import BlockingCalls, dependency_error
from .channels.names import check_targets
from .channels.poster import BotoPoster, Poster
from .channels.publisher import ChannelPublisher, RetryPolicy
from .channels.store import ConnectionStore
from .config import Settings
from .detached import event_relay, job_event
from .errors import DependencyUnavailable, PayloadTooLarge, ProxyError, ValidationFailed
from .gate import CallerGate, RecordGate, StartGate
from .jobs import StreamJob
from .limits import LimitStore, TokenMeter
from .observability import PublishStats, StreamStats, get_logger
from .outcome import Observer, Sink, StreamOutcome
from .policy import apply_policy
from .providers import ProviderRegistry
from .providers.base import EventSource
from .providers.registry import INLINED_FOR
from .recorder import StreamRecorder
from .relay import Relay
from .streams import StartError, StreamRecord, StreamStatus, StreamStore

if TYPE_CHECKING:
    from .assistants import AssistantStore
    from .providers.imagefetch import ImageFetcher
    from .runs import ThreadRuns
    from .threads import ThreadStore
    from .toolcalls import ToolCallStore
    from .tools.frontend import LocalAnswers
    from .tools.webhook import ToolWebhooks

P = ParamSpec("P")
T = TypeVar("T")

STORE = "the stream store (DynamoDB)"
# Longer than any wait (300 s at most) plus the stream around it.
TOOL_RECORD_TTL_SECONDS = 3600
# Lambda mode's steps that decide who hears what (the ack's answer, the relay's claim):
# tries of each, and the first pause between two.
STEP_ATTEMPTS = 3
STEP_PAUSE_SECONDS = 0.1


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


class StreamService:
    """The stream function's dependencies and use cases, created once per process."""

    def __init__(
        self,
        settings: Settings,
        *,
        http: httpx.AsyncClient | None = None,
        poster: Poster | None = None,
    ) -> None:
        self.settings = settings
        redact.remember(*settings.secret_values())
        self.apps = AppRegistry.from_settings(settings)
        self._client = client = aws.dynamodb(settings.aws_region, settings.dynamodb_endpoint_url)
        self.connections = ConnectionStore(
            client, settings.table_name, settings.connection_ttl_seconds
        )
        self.streams = StreamStore(client, settings.table_name, settings.stream_ttl_seconds)
        self.limits = LimitStore(client, settings.table_name)
        # DynamoDB work has a pool of its own: posts never queue behind it, nor it behind them.
        self.db = BlockingCalls(settings.db_concurrency, "dynamodb")
        # One trust store for the provider and image clients (each load costs ~17 ms).
        self._tls = tls = httpx.create_ssl_context()
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=settings.connect_timeout_seconds,
                read=settings.idle_timeout_seconds,
                write=30.0,
                pool=10.0,
            ),
            transport=nethttp.transport(
                httpx.Limits(max_connections=200, max_keepalive_connections=50), tls
            ),
            cookies=nethttp.cookieless(),  # the client is every app's
        )
        self.providers = ProviderRegistry(settings, self.http)
        self._poster = poster
        self._retry = RetryPolicy(
            max_retries=settings.post_max_retries,
            post_timeout_seconds=settings.post_timeout_seconds,
            slow_concurrency=max(1, settings.post_concurrency // 4),
        )
        # Shared by every stream of the process: slow connections never hold more than this.
        self._slow_gate = asyncio.Semaphore(self._retry.slow_concurrency)
        self._running: dict[str, Relay] = {}
        self._detached: set[asyncio.Task[StreamOutcome]] = set()

    # What only some requests use (threads, assistants, tools, image URLs) is made, and its
    # modules imported, on its first use: not by every cold start (decision 40).

    @cached_property
    def threads(self) -> ThreadStore:
        from .threads import ThreadStore

        return ThreadStore(self._client, self.settings.table_name)

    @cached_property
    def runs(self) -> ThreadRuns:
        from .runs import ThreadRuns

        return ThreadRuns(self.threads, self.store, self.settings)

    @cached_property
    def assistants(self) -> AssistantStore:
        from .assistants import AssistantStore

        return AssistantStore(self._client, self.settings.table_name)

    @cached_property
    def images(self) -> ImageFetcher:
        from .providers.imagefetch import ImageFetcher

        return ImageFetcher(
            timeout_seconds=self.settings.image_fetch_timeout_seconds,
            max_bytes=self.settings.image_max_bytes,
            allow_private=self.settings.allow_private_image_urls,
            tls=self._tls,
        )

    @cached_property
    def tool_calls(self) -> ToolCallStore:
        from .toolcalls import ToolCallStore

        return ToolCallStore(self._client, self.settings.table_name, TOOL_RECORD_TTL_SECONDS)

    @cached_property
    def tool_answers(self) -> LocalAnswers:
        from .tools.frontend import LocalAnswers

        return LocalAnswers()

    @cached_property
    def webhooks(self) -> ToolWebhooks:
        from .tools.webhook import ToolWebhooks

        return ToolWebhooks(
            self.http,
            timeout_seconds=self.settings.tool_webhook_timeout_seconds,
            max_bytes=self.settings.tool_answer_max_bytes,
        )

    @property
    def poster(self) -> Poster:
        if self._poster is None:
            self._poster = self._make_poster()
        return self._poster

    def _make_poster(self) -> Poster:
        settings = self.settings
        endpoint = settings.ws_management_endpoint
        if not endpoint:
            raise ProxyError("WS_MANAGEMENT_ENDPOINT is not configured")
        if settings.poster == "signed":
            from .channels.signed_poster import SignedPoster

            return SignedPoster(
                endpoint,
                settings.aws_region,
                max_connections=settings.post_concurrency,
                timeout=settings.post_timeout_seconds,
            )
        client = aws.management_api(settings.aws_region, endpoint, settings.post_timeout_seconds)
        return BotoPoster(client, threads=settings.post_concurrency)

    async def aclose(self) -> None:
        """Let detached relays finish (bounded), then release clients and threads."""
        if self._detached:
            await asyncio.wait(self._detached, timeout=self.settings.drain_timeout_seconds)
        await self.http.aclose()
        if "images" in self.__dict__:  # made on first use
            await self.images.aclose()
        if self._poster is not None:
            await self._poster.aclose()
        self.db.shutdown()

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
            slow_gate=self._slow_gate,
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

    def record_gated_relay(self, job: StreamJob, source: EventSource | None = None) -> Relay:
        """The relay of a Lambda self-invoke (its job claimed): its caller's ack polls the
        stream record, and the dead-letter handler its heartbeat."""
        gate = RecordGate(self.streams, job.stream_id, self.db)
        return self.relay(job, gate=gate, source=source, claimed=True)

    async def run_claimed(self, job: StreamJob) -> StreamOutcome | None:
        """Run a self-invoke's job unless another delivery of the same event claimed it
        (Lambda may deliver an async event more than once) or its stream is no longer
        `pending` (the ack failed it): None when dropped."""
        # A throttle or blip at the claim is retried (as this delivery's own claim), not
        # a 503 that the dead-letter handler would fail the stream for.
        claimant = secrets.token_urlsafe(12)
        every = self.settings.heartbeat_seconds
        if not await self._retried(self.streams.claim, job.stream_id, claimant, beat_seconds=every):
            get_logger().warning(
                "duplicate detached relay event dropped", extra={"stream_id": job.stream_id}
            )
            return None
        return await self.run(await event_relay(self, job))

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
        wait = self.settings.ack_wait_seconds
        if self.settings.detach_mode == "lambda":
            await self.register(job)  # the ack polls the record: it exists before the invoke
            await self._invoked(job)
            return await self._await_start(job.stream_id, wait) if wait > 0 else Detached("pending")
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

    async def store(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A blocking AWS call on the DynamoDB pool; AWS failures become a 503 (never a 500)."""
        try:
            return await self.db(fn, *args, **kwargs)
        except ProxyError:
            raise
        except Exception as e:
            mapped = dependency_error(e, STORE)
            if mapped is None:
                raise
            get_logger().warning("dependency call failed", exc_info=True)
            raise mapped from e

    # -- plumbing ------------------------------------------------------------------------------

    async def _invoked(self, job: StreamJob) -> None:
        """Self-invoke `job`; when its event is too large (detached.py) or Lambda refuses it,
        its record says so (failed, with the error the caller gets) rather than `pending`
        for a stream no relay will run. An invoke may also raise after Lambda queued its
        event (a dropped connection): that relay must not run beside the caller's retry, so
        the record is failed first (a relay claims only a `pending` stream) and then its
        cancel flag set (one that claimed it already stops at its next poll)."""
        try:
            # Serialising a large job is CPU: off the loop, as the invoke.
            event = await self.store(job_event, job)  # 413 when its dead letter could not fit
            await self.store(self._invoke_self, event)
        except ProxyError as e:
            try:
                await self.store(self.streams.mark_start_failed, job.stream_id, StartError.of(e))
                await self.store(self.streams.request_cancel, job.stream_id)
            except ProxyError:
                get_logger().warning("stream record not marked failed", exc_info=True)
            raise

    def _invoke_self(self, event: bytes) -> None:
        """Start the relay function on `event` (`detached.job_event`), asynchronously."""
        if not self.settings.self_function_name:
            raise ProxyError("DETACH_MODE=lambda needs AWS_LAMBDA_FUNCTION_NAME")
        client = aws.lambda_client(self.settings.aws_region)
        try:
            client.invoke(
                FunctionName=self.settings.self_function_name,
                InvocationType="Event",
                Payload=event,
            )
        except BotoCoreError as e:
            raise DependencyUnavailable(
                f"could not start the stream ({type(e).__name__}); try again shortly"
            ) from e
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code == "RequestEntityTooLargeException":
                raise PayloadTooLarge(
                    "request too large to run detached: send it with Accept: text/event-stream"
                ) from e
            raise DependencyUnavailable(
                f"could not start the stream ({code or 'invoke failed'}); try again shortly"
            ) from e

    async def _await_start(self, stream_id: str, wait: float) -> Detached:
        """Lambda mode's ack: poll the record for the first byte or an early failure; when
        time is up, mark the caller answered (conditionally: the relay may fail just now).
        The relay runs whatever the ack says, so a poll the table fails is only a poll
        lost; the mark is retried, and when the table never takes it the stream is
        stopped before the caller is told it did not start (the 503)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        pause = 0.05  # doubling to 0.4 s: a slow provider costs a few reads, not one per 50 ms
        while loop.time() < deadline:
            try:
                record = await self.store(self.streams.get, stream_id)
            except DependencyUnavailable:
                record = None  # logged by `store`; the next poll may get through
            if record is not None and record.status != "pending":
                return Detached(record.status, record.start_error)
            await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
            pause = min(pause * 2, 0.4)
        if await self._settling(stream_id, self.streams.mark_acked):
            return Detached("pending")
        record = await self._settling(stream_id, self.streams.get)
        if record is None:  # expired between two reads: nothing better to say
            return Detached("pending")
        return Detached(record.status, record.start_error)

    async def _settling(self, stream_id: str, fn: Callable[[str], T]) -> T:
        """`fn(stream_id)`, a step of the ack that decides what the caller is told
        (`_retried`); when the table takes none of its tries, the detached stream is
        cancelled (best effort) and the 503 raised: a caller told to try again must not
        get the stream it gave up on running beside its retry."""
        try:
            return await self._retried(fn, stream_id)
        except DependencyUnavailable:
            try:
                await self.store(self.streams.request_cancel, stream_id)
            except DependencyUnavailable:
                get_logger().error(
                    "detached stream not stopped after a failed ack; it runs",
                    extra={"stream_id": stream_id},
                )
            raise

    async def _retried(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A store call tried STEP_ATTEMPTS times (a throttle or a blip passes), for the
        steps of a detached stream that decide who hears what; the last failure raises."""
        for attempt in range(STEP_ATTEMPTS - 1):
            try:
                return await self.store(fn, *args, **kwargs)
            except DependencyUnavailable:
                await asyncio.sleep(STEP_PAUSE_SECONDS * 2**attempt)
        return await self.store(fn, *args, **kwargs)
