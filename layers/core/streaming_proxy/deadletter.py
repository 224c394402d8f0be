"""Dead letters: detached relays Lambda gave up on, told to their channels instead of lost.

A detached relay runs in an async invoke (service.detach). When that event ages out in
Lambda's queue, or its invocation fails (a crash, a timeout, a 5xx from `/events`), Lambda
sends an invocation record to the on-failure destination, an SQS queue, whose consumer
lands here. For each record: the stream is marked `failed` (conditionally: a stream that
finished, or a duplicate of this dead letter already handled, is left alone) and its
channels get what a relay failure publishes: `threadInfo` (when nothing was sent yet and
the stream is not a Chat one), `error`, `end`. A lost run on a thread also lets go of its
thread (the run recorded `failed`), which would otherwise stay held until the run's lease
ends, some 15 minutes on.

A claimed stream whose relay still beats (its heartbeat on the record is fresh) is not
lost: the dead letter came from another delivery of the same event, whose claim failed
(the table throttled every try) while the first streams on. Its record is deferred (a
batch item failure: SQS shows it again after the queue's visibility timeout) and looked
at again: the stream finished meanwhile (nothing to do), or its heartbeat went stale (the
relay died: failed as above). A relay lives at most Lambda's 900 s, so a record is
deferred a few times at most. Before deferring, the handler waits in the same invocation
when the heartbeats it judged go stale within LOOK_AGAIN_WITHIN_SECONDS and the invocation
has the time, and judges those records once more: a relay that crashed (out of memory, say)
is then told to its pages about a minute after its last beat, not after the visibility
timeout. The event carries the job, provider key
included: it is never logged. A record without a job to read (malformed, or sent by Lambda
without its payload because it did not fit the queue: detached.py bounds the event so that
it does) cannot be told to anyone: it is logged as an error with Lambda's request id and
condition and counted (`DeadLettersUnread`, which an alarm watches), then dropped.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import emf
from .blocking import BlockingCalls
from .channels.publisher import ChannelPublisher
from .envelopes import EnvelopeSequencer
from .errors import StreamLost, error_object
from .heartbeat import STALE_BEATS
from .jobs import StreamKind, thread_info
from .observability import get_logger
from .outcome import unknown_usage
from .streams import StreamRecord, StreamStore

if TYPE_CHECKING:
    from .runs import ThreadRuns

# The app, channels and stream id of a job, as StreamService.publisher takes them.
PublisherFactory = Callable[[str, Sequence[str], str], ChannelPublisher]


class LostRun(BaseModel):
    """The run a lost job was on a thread (jobs.ThreadRun): the thread it holds."""

    model_config = ConfigDict(extra="ignore")

    thread_id: str = Field(min_length=1)
    run_id: str = Field(min_length=1)


class LostJob(BaseModel):
    """What the dead letter needs of the job; the rest (payload, key) is never read."""

    model_config = ConfigDict(extra="ignore")

    stream_id: str = Field(min_length=1)
    app_id: str = Field(min_length=1)
    kind: StreamKind
    action_name: str = ""
    # `lambda: []`, not `list`: cheaper at import (docs/architecture.md decision 31).
    channels: list[str] = Field(default_factory=lambda: [])
    thread: LostRun | None = None


class JobEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job: LostJob = Field(alias="streamingProxyJob")


class RequestContext(BaseModel):
    model_config = ConfigDict(extra="ignore")

    condition: str  # "EventAgeExceeded" | "RetriesExhausted"
    request_id: str = Field(default="", alias="requestId")
    approximate_invoke_count: int = Field(default=0, alias="approximateInvokeCount")


class InvocationRecord(BaseModel):
    """Lambda's on-failure invocation record (the SQS message body); `responsePayload`
    (the error Lambda reports) is not modelled: it is never read nor logged."""

    model_config = ConfigDict(extra="ignore")

    request_context: RequestContext = Field(alias="requestContext")
    request_payload: JobEvent = Field(alias="requestPayload")


class SqsRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    message_id: str = Field(alias="messageId")
    body: str


class SqsEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    records: list[SqsRecord] = Field(alias="Records")


# The metric of dead letters whose job could not be read (their streams were never told).
UNREAD_METRIC = "DeadLettersUnread"

# What one dead letter came to: its stream's channels told, nothing to tell (finished,
# expired, run by another delivery), or looked at again later (its relay still beats).
Handled = Literal["told", "nothing", "deferred"]
# The heartbeat interval assumed for a stream no relay claimed yet: a claim racing the
# dead letter is newer than the read by far more than this many intervals' margin.
UNCLAIMED_BEAT_SECONDS = 10.0
# A batch whose deferred records' heartbeats all go stale within this (six missed beats of
# 10 s: a minute at most) waits for it and judges them once more, rather than leave a dead
# relay's pages waiting for the queue's visibility timeout.
LOOK_AGAIN_WITHIN_SECONDS = 65.0
# Past the heartbeat's stale bound before the second look: clocks and a late write.
LOOK_AGAIN_MARGIN_SECONDS = 1.0
# What the second look may take besides the wait (reads, writes, the channels' posts): the
# wait is skipped when the invocation has less time left than both.
SECOND_LOOK_RESERVE_SECONDS = 20.0


class MalformedDeadLetter(ValueError):
    """A queue message without a stream job to read: not an invocation record, or one
    Lambda sent without its payload. `context`: the record's own, when it has one."""

    def __init__(self, where: str, context: RequestContext | None = None) -> None:
        super().__init__(where)
        self.context = context


def parse_record(body: str) -> InvocationRecord:
    """The invocation record in an SQS message body; MalformedDeadLetter otherwise (the
    error says which field, never its value)."""
    try:
        data = json.loads(body)
    except ValueError:
        raise MalformedDeadLetter("not JSON") from None
    try:
        return InvocationRecord.model_validate(data)
    except ValidationError as e:
        where = ", ".join(".".join(map(str, err["loc"])) for err in e.errors()[:3])
        raise MalformedDeadLetter(where, _context_of(data)) from None


def _context_of(data: Any) -> RequestContext | None:
    """The record's `requestContext` when it can be read without the rest."""
    try:
        return RequestContext.model_validate(data["requestContext"])
    except (KeyError, TypeError, ValidationError):
        return None


def report_unread(message_id: str, error: MalformedDeadLetter) -> None:
    """Log (field names and Lambda's ids only, never a value) and count a dead letter whose
    stream cannot be told: it stays `pending`/`streaming` until its record expires."""
    log = {"message_id": message_id, "fields": str(error)}
    if error.context is not None:
        log |= {"request_id": error.context.request_id, "condition": error.context.condition}
    get_logger().error(
        "dead letter without a readable job dropped; its stream was not told", extra=log
    )
    try:
        emf.write(emf.count_record(UNREAD_METRIC))
    except Exception:  # the log line above says it all the same
        get_logger().warning("dead-letter metric not written", exc_info=True)


def lost_error(condition: str) -> StreamLost:
    if condition == "EventAgeExceeded":
        why = "it could not start in time (the proxy was too busy)"
    else:
        why = "its run failed before it could finish"
    return StreamLost(
        f"the stream was lost: {why}; send the request again", details=f"lambda: {condition}"
    )


@dataclass(frozen=True, slots=True)
class _Deferred:
    """A record deferred on a first look, and when its relay is taken for dead unless it
    beats again."""

    message_id: str
    record: InvocationRecord
    dead_at: float


def _dead_at(stored: StreamRecord | None) -> float | None:
    beat = stored.heartbeat if stored is not None else None
    return beat.dead_at() if beat is not None else None


def _not_handled(message_id: str) -> None:
    get_logger().warning(
        "dead letter not handled; retried", extra={"message_id": message_id}, exc_info=True
    )


class DeadLetters:
    """Marks lost detached relays failed and tells their channels."""

    def __init__(
        self,
        streams: StreamStore,
        publisher: PublisherFactory,
        db: BlockingCalls,
        runs: ThreadRuns,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._streams = streams
        self._publisher = publisher
        self._db = db
        self._runs = runs
        self._clock = clock  # epoch seconds, as the relay's heartbeat writes them
        self._sleep = sleep

    async def handle_batch(
        self, event: dict[str, Any], seconds_left: Callable[[], float] = lambda: 0.0
    ) -> dict[str, Any]:
        """Handle an SQS batch; records that failed for a reason worth retrying (the table
        down before the stream was marked) are reported as batch item failures, malformed
        ones dropped. Failed posts are not such a reason: the stream is marked by then.
        `seconds_left`: the invocation's time left, which bounds the second look (none
        unless the caller says)."""
        failures: list[dict[str, str]] = []
        try:
            batch = SqsEvent.model_validate(event)
        except ValidationError:
            # Never raised as is: pydantic's message would quote the event, keys included.
            get_logger().error("dead-letter event is not an SQS batch; dropped")
            return {"batchItemFailures": []}
        deferred: list[_Deferred] = []
        for message in batch.records:
            try:
                record = parse_record(message.body)
                verdict, dead_at = await self._judge(record)
                if verdict == "deferred" and dead_at is not None:
                    deferred.append(_Deferred(message.message_id, record, dead_at))
                elif verdict == "deferred":  # no heartbeat read: nothing to wait for
                    failures.append({"itemIdentifier": message.message_id})
            except MalformedDeadLetter as e:
                report_unread(message.message_id, e)
            except Exception:
                _not_handled(message.message_id)
                failures.append({"itemIdentifier": message.message_id})
        for item in await self._look_again(deferred, seconds_left):
            failures.append({"itemIdentifier": item.message_id})
        return {"batchItemFailures": failures}

    async def _look_again(
        self, deferred: list[_Deferred], seconds_left: Callable[[], float]
    ) -> list[_Deferred]:
        """The records still deferred after a second look, taken once every heartbeat
        judged would be stale, when that is soon enough and the invocation has the time (a
        relay that died is told now; one that lives has beaten again meanwhile)."""
        if not deferred:
            return deferred
        wait = max(d.dead_at for d in deferred) - self._clock() + LOOK_AGAIN_MARGIN_SECONDS
        if wait > LOOK_AGAIN_WITHIN_SECONDS or wait + SECOND_LOOK_RESERVE_SECONDS > seconds_left():
            return deferred
        get_logger().info(
            "dead letters for relays whose heartbeat goes stale soon; looked at again then",
            extra={"records": len(deferred), "wait_seconds": round(max(0.0, wait), 1)},
        )
        await self._sleep(max(0.0, wait))
        still: list[_Deferred] = []
        for item in deferred:
            try:
                if (await self._judge(item.record))[0] == "deferred":
                    still.append(item)
            except Exception:
                _not_handled(item.message_id)
                still.append(item)
        return still

    async def handle(self, record: InvocationRecord) -> Handled:
        """Tell one lost stream's channels; "nothing" when there was nothing to tell,
        "deferred" when its relay still runs (the record is to be looked at again)."""
        return (await self._judge(record))[0]

    async def _judge(self, record: InvocationRecord) -> tuple[Handled, float | None]:
        """`handle`, and for a deferred record when its relay is taken for dead unless it
        beats again (None: not known)."""
        job, condition = record.request_payload.job, record.request_context.condition
        log = {"stream_id": job.stream_id, "condition": condition}
        stored = await self._db(self._streams.get, job.stream_id)
        verdict = self._verdict(stored, condition)
        if verdict != "lost":
            self._log_verdict(verdict, log)
            return verdict, _dead_at(stored) if verdict == "deferred" else None
        assert stored is not None
        messages = self._messages(job, stored, lost_error(condition))
        end_seq = messages[-1]["seq"]
        # Members first (a table failure here is retried with nothing written yet), then
        # the write: of two copies of this dead letter, only one gets to publish, and none
        # over a relay that claimed or beat since the read (the write's condition).
        publisher = self._publisher(job.app_id, job.channels, job.stream_id)
        await publisher.start()
        try:
            if not await self._marked_lost(job.stream_id, stored, end_seq):
                # Finished, or a relay claimed or beat since the read: read it again.
                again = await self._db(self._streams.get, job.stream_id)
                verdict = "nothing" if again is None or again.finished else "deferred"
                self._log_verdict(verdict, log)
                return verdict, _dead_at(again) if verdict == "deferred" else None
            get_logger().warning("lost detached relay reported to its channels", extra=log)
            # Before `end`, as a relay does: a page that sees it may start the next run.
            await self._abandon(job, log)
            for message in messages:
                await publisher.send(message)
        finally:
            await publisher.close()
        return "told", None

    async def _marked_lost(self, stream_id: str, stored: StreamRecord, end_seq: int) -> bool:
        """Fail the stream, unless it finished or its relay's heartbeat is fresh by now.
        A relay past Lambda's lifetime is failed whatever its heartbeat says (a record is
        never deferred for ever)."""
        now, beat = self._clock(), stored.heartbeat
        stale_before: float | None = now - STALE_BEATS * UNCLAIMED_BEAT_SECONDS
        if beat is not None:
            stale_before = None if beat.outlived(now) else beat.stale_before(now)
        usage = unknown_usage()
        return await self._db(
            self._streams.mark_lost, stream_id, end_seq, usage, stale_before=stale_before
        )

    @staticmethod
    def _log_verdict(verdict: Handled, log: dict[str, str]) -> None:
        if verdict == "deferred":
            get_logger().info(
                "dead letter for a stream whose relay still runs; deferred", extra=log
            )
        else:
            get_logger().info("dead letter for a stream not lost; nothing to do", extra=log)

    async def _abandon(self, job: LostJob, log: dict[str, str]) -> None:
        """Release the thread the lost run holds, the run recorded `failed` (nothing when it
        no longer holds it). Only for a stream this dead letter marked lost: a finished or
        still running one holds or released its thread itself. A failure is logged, not
        retried (a second copy finds the stream failed): the lease frees the thread then."""
        if job.thread is None:
            return
        thread = job.thread
        try:
            await self._runs.abandon(job.app_id, thread.thread_id, thread.run_id, "failed")
        except Exception:
            get_logger().error(
                "lost run's thread not released; it is free once the run's lease ends",
                extra={**log, "thread_id": thread.thread_id, "run_id": thread.run_id},
                exc_info=True,
            )

    def _verdict(
        self, stored: StreamRecord | None, condition: str
    ) -> Literal["lost", "nothing", "deferred"]:
        if stored is None or stored.finished:
            return "nothing"  # expired, or the relay ran and finished
        if not stored.claimed:
            return "lost"  # no relay ever ran it
        # An event that aged out while another delivery of it runs the job is no loss.
        if condition == "EventAgeExceeded":
            return "nothing"
        beat = stored.heartbeat
        if beat is not None and beat.live(self._clock()):
            return "deferred"  # another delivery failed; the claimant still runs
        return "lost"  # the claimant died (or was claimed before relays kept heartbeats)

    @staticmethod
    def _messages(job: LostJob, stored: StreamRecord, error: StreamLost) -> list[dict[str, Any]]:
        """`threadInfo`?, `error`, `end`, numbered on from what the record says was sent
        (a crashed relay may have sent more: clients then read these as duplicates and
        resume, which answers the final `failed` snapshot)."""
        seq = EnvelopeSequencer(job.stream_id, job.action_name)
        seq.last_seq = stored.last_seq
        messages: list[dict[str, Any]] = []
        if stored.status == "pending" and job.kind != "chat":
            content = thread_info(job.stream_id, job.thread)  # as the relay's
            messages.append(seq.envelope("threadInfo", content=content))
        messages.append(seq.envelope("error", error=error_object(error)))
        messages.append(seq.envelope("end", finish_reason="error", usage=unknown_usage()))
        return messages
