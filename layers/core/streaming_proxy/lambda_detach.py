"""LambdaDetach: DETACH_MODE=lambda, a detached stream run by an async self-invoke.

The ack writes the stream's record, invokes the function with the job (detached.py) and
polls the record for the first byte; the invoked relay claims the job first, so a second
delivery of the same event runs nothing.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from . import aws
from .detached import event_relay, job_event
from .errors import DependencyUnavailable, PayloadTooLarge, ProxyError
from .jobs import StreamJob
from .observability import get_logger
from .outcome import StreamOutcome
from .service import Detached
from .streams import StartError

if TYPE_CHECKING:
    from .service import StreamService

P = ParamSpec("P")
T = TypeVar("T")

# Lambda mode's steps that decide who hears what (the ack's answer, the relay's claim):
# tries of each, and the first pause between two.
STEP_ATTEMPTS = 3
STEP_PAUSE_SECONDS = 0.1


class LambdaDetach:
    """The ack's side of a self-invoked stream (`detach`) and the invoked relay's
    (`run_claimed`), for one StreamService."""

    def __init__(self, service: StreamService) -> None:
        self._service = service
        self._settings = service.settings
        self._streams = service.streams
        self._store = service.store

    async def detach(self, job: StreamJob) -> Detached:
        """Register `job`, self-invoke it, and wait up to ACK_WAIT_SECONDS for how it
        stands (StreamService.detach)."""
        wait = self._settings.ack_wait_seconds
        await self._service.register(job)  # the ack polls the record: it exists before the invoke
        await self._invoked(job)
        return await self._await_start(job.stream_id, wait) if wait > 0 else Detached("pending")

    async def run_claimed(self, job: StreamJob) -> StreamOutcome | None:
        """Run a self-invoke's job unless another delivery of the same event claimed it
        (Lambda may deliver an async event more than once) or its stream is no longer
        `pending` (the ack failed it): None when dropped."""
        # A throttle or blip at the claim is retried (as this delivery's own claim), not
        # a 503 that the dead-letter handler would fail the stream for.
        claimant = secrets.token_urlsafe(12)
        every = self._settings.heartbeat_seconds
        if not await self._retried(
            self._streams.claim, job.stream_id, claimant, beat_seconds=every
        ):
            get_logger().warning(
                "duplicate detached relay event dropped", extra={"stream_id": job.stream_id}
            )
            return None
        service = self._service
        return await service.run(await event_relay(service, job))

    async def _invoked(self, job: StreamJob) -> None:
        """Self-invoke `job`; when its event is too large (detached.py) or Lambda refuses it,
        its record says so (failed, with the error the caller gets) rather than `pending`
        for a stream no relay will run. An invoke may also raise after Lambda queued its
        event (a dropped connection): that relay must not run beside the caller's retry, so
        the record is failed first (a relay claims only a `pending` stream) and then its
        cancel flag set (one that claimed it already stops at its next poll)."""
        try:
            # Serialising a large job is CPU: off the loop, as the invoke.
            event = await self._store(job_event, job)  # 413 when its dead letter could not fit
            await self._store(self.invoke_self, event)
        except ProxyError as e:
            try:
                await self._store(self._streams.mark_start_failed, job.stream_id, StartError.of(e))
                await self._store(self._streams.request_cancel, job.stream_id)
            except ProxyError:
                get_logger().warning("stream record not marked failed", exc_info=True)
            raise

    def invoke_self(self, event: bytes) -> None:
        """Start the relay function on `event` (`detached.job_event`), asynchronously."""
        if not self._settings.self_function_name:
            raise ProxyError("DETACH_MODE=lambda needs AWS_LAMBDA_FUNCTION_NAME")
        client = aws.lambda_client(self._settings.aws_region)
        try:
            client.invoke(
                FunctionName=self._settings.self_function_name,
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
                record = await self._store(self._streams.get, stream_id)
            except DependencyUnavailable:
                record = None  # logged by `store`; the next poll may get through
            if record is not None and record.status != "pending":
                return Detached(record.status, record.start_error)
            await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
            pause = min(pause * 2, 0.4)
        if await self._settling(stream_id, self._streams.mark_acked):
            return Detached("pending")
        record = await self._settling(stream_id, self._streams.get)
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
                await self._store(self._streams.request_cancel, stream_id)
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
                return await self._store(fn, *args, **kwargs)
            except DependencyUnavailable:
                await asyncio.sleep(STEP_PAUSE_SECONDS * 2**attempt)
        return await self._store(fn, *args, **kwargs)
