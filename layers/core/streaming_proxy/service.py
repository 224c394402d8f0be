"""StreamService: accepts a request, runs its relay (here or detached), answers stops."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
from botocore.exceptions import ClientError

from . import aws
from .auth import AppRegistry
from .channels.poster import BotoPoster, Poster
from .channels.publisher import ChannelPublisher
from .channels.store import ConnectionStore
from .config import Settings
from .errors import PayloadTooLarge, ProxyError
from .jobs import StreamJob
from .observability import StreamStats, get_logger
from .outcome import Observer, Sink, StreamOutcome
from .providers import ProviderRegistry
from .recorder import StreamRecorder
from .relay import Relay, cancel_local
from .streams import StartError, StreamRecord, StreamStore


@dataclass
class StopResult:
    status: str  # "stopped" | "not_found"
    stream_id: str
    stream_status: str | None = None


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
        self.apps = AppRegistry.from_settings(settings)
        db = aws.dynamodb(settings.aws_region, settings.dynamodb_endpoint_url)
        self.connections = ConnectionStore(db, settings.table_name, settings.connection_ttl_seconds)
        self.streams = StreamStore(db, settings.table_name, settings.stream_ttl_seconds)
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=settings.connect_timeout_seconds,
                read=settings.idle_timeout_seconds,
                write=30.0,
                pool=10.0,
            ),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )
        self.providers = ProviderRegistry(settings, self.http)
        self.executor = ThreadPoolExecutor(
            max_workers=settings.post_concurrency, thread_name_prefix="proxy-io"
        )
        self._poster = poster
        self._detached: set[asyncio.Task[StreamOutcome]] = set()

    @property
    def poster(self) -> Poster:
        if self._poster is None:
            if not self.settings.ws_management_endpoint:
                raise ProxyError("WS_MANAGEMENT_ENDPOINT is not configured")
            client = aws.management_api(
                self.settings.aws_region, self.settings.ws_management_endpoint
            )
            self._poster = BotoPoster(client, threads=self.settings.post_concurrency)
        return self._poster

    async def aclose(self) -> None:
        """Let detached relays finish (bounded), then release clients and threads."""
        if self._detached:
            await asyncio.wait(self._detached, timeout=self.settings.drain_timeout_seconds)
        await self.http.aclose()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- use cases ---------------------------------------------------------------------------

    def check(self, job: StreamJob) -> None:
        """Everything that can be refused before anything is published (422/401)."""
        self.providers.resolve(job.provider).prepare(job.llm_request)

    async def register(self, job: StreamJob) -> None:
        record = StreamRecord(job.stream_id, job.app_id, job.action_name, job.channels)
        await self._call(self.streams.create, record)

    def relay(
        self, job: StreamJob, sinks: Sequence[Sink] = (), observers: Sequence[Observer] = ()
    ) -> Relay:
        """A relay for `job`, publishing to its channels (if any) and to `sinks`."""
        stats = StreamStats(provider=job.provider, kind=job.kind)
        all_sinks: list[Sink] = list(sinks)
        if job.channels:
            publisher = ChannelPublisher(
                store=self.connections,
                poster=self.poster,
                channels=job.channels,
                executor=self.executor,
                refresh_seconds=self.settings.member_refresh_seconds,
                max_retries=self.settings.post_max_retries,
                drain_seconds=self.settings.drain_timeout_seconds,
                stream_id=job.stream_id,
                stats=stats.publish,
            )
            all_sinks.append(_PublisherSink(publisher))
        return Relay(
            job,
            self.providers.resolve(job.provider),
            all_sinks,
            settings=self.settings,
            # Streams with channels are registered (stop, resume); the others are not.
            recorder=StreamRecorder(self.streams, job.stream_id, self.executor)
            if job.channels
            else None,
            stats=stats,
            observers=observers,
        )

    async def run(self, relay: Relay) -> StreamOutcome:
        """Run a relay to its end and report its metrics."""
        outcome = await relay.run()
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

    async def detach(self, job: StreamJob) -> StartError | None:
        """Run `job` without the caller: locally as a task, in Lambda as an async self-invoke.

        Waits up to ACK_WAIT_SECONDS for the provider's first byte, so a request that fails
        at once (bad provider key, unknown model) still gets its error as the HTTP answer.
        """
        wait = self.settings.ack_wait_seconds
        if self.settings.detach_mode == "lambda":
            await self._call(self._invoke_self, job)
            return await self._poll_start(job.stream_id, wait) if wait > 0 else None
        relay = self.relay(job)
        self.start(relay)
        if wait <= 0:
            return None
        try:
            error = await asyncio.wait_for(asyncio.shield(relay.started), wait)
        except TimeoutError:
            return None
        return StartError(error.status, error.code, error.message) if error else None

    async def stop(self, stream_id: str, app_id: str) -> StopResult:
        """Set the cancel flag of an app's stream (the relay notices within a poll)."""
        record = await self._call(self.streams.get, stream_id)
        if record is None or record.app_id != app_id:
            return StopResult("not_found", stream_id)
        if not record.finished:
            await self._call(self.streams.request_cancel, stream_id)
            cancel_local(stream_id)
        return StopResult("stopped", stream_id, record.status)

    # -- plumbing ------------------------------------------------------------------------------

    def _invoke_self(self, job: StreamJob) -> None:
        if not self.settings.self_function_name:
            raise ProxyError("DETACH_MODE=lambda needs AWS_LAMBDA_FUNCTION_NAME")
        client = aws.lambda_client(self.settings.aws_region)
        try:
            client.invoke(
                FunctionName=self.settings.self_function_name,
                InvocationType="Event",
                Payload=json.dumps(job.to_event()).encode("utf-8"),
            )
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code == "RequestEntityTooLargeException":
                raise PayloadTooLarge(
                    "request too large to run detached: send it with Accept: text/event-stream"
                ) from e
            raise ProxyError(f"could not start the stream ({code or 'invoke failed'})") from e

    async def _poll_start(self, stream_id: str, wait: float) -> StartError | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while loop.time() < deadline:
            record: StreamRecord | None = await self._call(self.streams.get, stream_id)
            if record is not None and record.status != "pending":
                return record.start_error
            await asyncio.sleep(0.05)
        return None

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


class _PublisherSink:
    """Adapts ChannelPublisher to the relay's Sink protocol."""

    def __init__(self, publisher: ChannelPublisher) -> None:
        self.publisher = publisher

    async def start(self) -> None:
        await self.publisher.start()

    async def send(self, envelope: dict[str, Any]) -> None:
        await self.publisher.send(envelope)

    async def close(self) -> None:
        await self.publisher.close()


def start_error_as_proxy_error(error: StartError) -> ProxyError:
    """A recorded start failure as an error to answer with."""
    return ProxyError(error.message, status=error.status, code=error.code)
