"""ThreadRuns: a stream as a run on a thread, from taking the thread to storing what was said.

`begin` takes the thread (a lease: one run at a time), reads its history newest first as far
as the model's budget can use, trims it to that budget and returns the payload the provider
gets (instructions, history, the new messages). A run detached through a Lambda self-invoke
leaves that reading to its relay (`with_history`), so that its event carries only what the
request added, however long the thread (detached.py). `finish` (called by the relay before `end`,
wherever the relay runs) appends the new messages, the tool rounds and the answer, and
releases the thread, in one write.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ParamSpec, Protocol, TypeVar

from .config import Settings
from .contract import Message, Payload
from .errors import PayloadTooLarge
from .history import Messages, Trimmed, shortfall, trim
from .jobs import StreamJob, ThreadRun
from .observability import get_logger
from .outcome import StreamOutcome
from .threads import (
    RunStart,
    RunStatus,
    ThreadStore,
    check_storable,
    check_unmarked,
    new_run_id,
    new_thread_id,
)

P = ParamSpec("P")
T = TypeVar("T")


class Store(Protocol):
    """A blocking store call, run off the event loop (`StreamService.store`)."""

    async def __call__(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T: ...


# A run's lease outlives its stream (total timeout) by this much; then another run may take it.
LEASE_MARGIN_SECONDS = 60
# How long a self-invoke's event may wait in Lambda's queue before its relay starts
# (RelayFunction's MaximumEventAgeInSeconds in template.yaml; a test holds them equal): the
# lease of a run detached that way covers that wait too, or a late relay would find its
# thread taken by the next run.
EVENT_MAX_AGE_SECONDS = 300


@dataclass(frozen=True)
class Begun:
    """A run that holds its thread: the payload to send and the job's `thread`."""

    payload: Payload
    thread: ThreadRun


def for_provider(messages: Messages) -> Messages:
    """Stored messages as a provider request takes them: without the proxy's `status` mark,
    and without a failed or cancelled answer that said nothing."""
    sent = []
    for message in messages:
        status = message.get("status")
        if status is not None and not message.get("content") and not message.get("tool_calls"):
            continue
        sent.append({k: v for k, v in message.items() if k != "status"})
    return sent


def run_status(outcome: StreamOutcome) -> RunStatus:
    if outcome.finish_reason == "cancelled":
        return "cancelled"
    return "failed" if outcome.error is not None else "done"


# The answer stored when what a run said is too large for its thread.
_UNSTORED: dict[str, Any] = {"role": "assistant", "content": "", "status": "failed"}


def added_messages(job: StreamJob) -> Messages:
    """The messages the run's request added to its thread (the payload's last ones)."""
    messages = job.payload.messages
    added = job.thread.added if job.thread is not None else 0
    return [m.model_dump(exclude_none=True) for m in messages[len(messages) - added :]]


def said(job: StreamJob, outcome: StreamOutcome, rounds: Sequence[dict[str, Any]]) -> Messages:
    """What the run adds to its thread: the request's new messages, the tool rounds (the
    loop's assistant turns and tool results) and the final answer, marked when the run did
    not end well. A run that failed before the provider said anything adds nothing."""
    if job.thread is None or not outcome.started:
        return []
    added = added_messages(job)
    earlier = "".join(str(m.get("content") or "") for m in rounds if m.get("role") == "assistant")
    text = outcome.text
    final = text[len(earlier) :] if text.startswith(earlier) else text
    status = run_status(outcome)
    answer: dict[str, Any] = {"role": "assistant", "content": final}
    if status != "done":
        answer["status"] = status
    elif not final:
        return [*added, *rounds]
    return [*added, *rounds, answer]


class ThreadRuns:
    """The runs of every app's threads (one per process, built by the service)."""

    def __init__(self, threads: ThreadStore, store: Store, settings: Settings) -> None:
        self.threads = threads
        self._store = store
        self._settings = settings

    def budget(self, model: str | None) -> int:
        by_model = self._settings.thread_context_tokens_by_model
        return by_model.get(model or "", self._settings.thread_context_tokens)

    async def begin(
        self,
        app_id: str,
        payload: Payload,
        stream_id: str,
        channels: Sequence[str] = (),
        *,
        read_history: bool = True,
    ) -> Begun:
        """Take the payload's thread (or a new one) for a new run; 404 for an unknown (or
        another app's) thread, 409 while another run holds it, 413 when the new messages
        could not be stored in it (before the thread is taken). Without `read_history` the
        payload stays the new messages and the run's `history_pending` says that its relay
        reads the history (`with_history`)."""
        settings = self._settings
        added = [m.model_dump(exclude_none=True) for m in payload.messages]
        check_unmarked(added)
        check_storable(added)
        start = RunStart(
            thread_id=payload.thread_id or new_thread_id(),
            run_id=new_run_id(),
            stream_id=stream_id,
            new=payload.thread_id is None,
            lease_until=int(time.time() + self._lease_seconds(queued=not read_history)),
            ttl_seconds=settings.thread_ttl_days * 86_400,
            channels=tuple(channels),
        )
        await self._store(self.threads.start_run, app_id, start)
        thread = ThreadRun(
            thread_id=start.thread_id,
            run_id=start.run_id,
            new=start.new,
            lease_until=start.lease_until,
            ttl_seconds=start.ttl_seconds,
            added=len(added),
            history_pending=not read_history,
        )
        if not read_history:
            return Begun(payload, thread)
        try:
            return await self._with_history(app_id, payload, thread)
        except Exception:
            await self._store(self.threads.finish_run, app_id, start, [], "failed")
            raise

    def _lease_seconds(self, *, queued: bool) -> float:
        """How long a run holds its thread: its stream's total timeout and a margin, plus
        the event's wait for a run whose relay is a self-invoke (the ones that read their
        history themselves)."""
        seconds = self._settings.total_timeout_seconds + LEASE_MARGIN_SECONDS
        return seconds + EVENT_MAX_AGE_SECONDS if queued else seconds

    async def with_history(self, job: StreamJob) -> StreamJob:
        """The job of a run whose history was left to its relay (`history_pending`), as
        `begin` would have made it: the instructions, the thread's history trimmed to the
        model's budget, the new messages, and `dropped`/`tokens` for the run's log. The run
        holds the thread, so the history is the one `begin` would have read. The thread is
        not released on failure: the relay's end (`finish`) does that."""
        thread = job.thread
        if thread is None or not thread.history_pending:
            return job
        begun = await self._with_history(job.app_id, job.payload, thread)
        return job.replaced(payload=begun.payload, thread=begun.thread)

    async def _with_history(self, app_id: str, payload: Payload, thread: ThreadRun) -> Begun:
        """`payload` (its last `thread.added` messages the new ones) with the history."""
        system = (
            [{"role": "system", "content": payload.instructions}] if payload.instructions else []
        )
        new = payload.messages[len(payload.messages) - thread.added :]
        added = [m.model_dump(exclude_none=True) for m in new]
        trimmed = await self._history(app_id, thread, system, added, payload.model)
        done = {"dropped": trimmed.dropped, "tokens": trimmed.tokens, "history_pending": False}
        messages = [Message.model_validate(m) for m in trimmed.messages]
        return Begun(
            payload.model_copy(update={"messages": messages}), thread.model_copy(update=done)
        )

    async def _history(
        self, app_id: str, thread: ThreadRun, system: Messages, added: Messages, model: str | None
    ) -> Trimmed:
        """What the run sends: the instructions, the newest whole turns of the thread that fit
        the model's budget and the new messages. The thread is read newest first only until
        older turns can no longer change that (history.shortfall); `dropped` then counts the
        older messages never read too."""
        budget = self.budget(model)
        if thread.new:
            return trim(system, [], added, budget)

        def short(recent: Messages) -> int:
            return shortfall(system, for_provider(recent), added, budget)

        recent = await self._store(self.threads.recent, app_id, thread.thread_id, short)
        trimmed = trim(system, for_provider(recent.messages), added, budget)
        return replace(trimmed, dropped=trimmed.dropped + recent.older)

    async def release(self, app_id: str, thread: ThreadRun) -> None:
        """Let go of a thread whose run never started (refused after `begin`)."""
        await self._store(self.threads.finish_run, app_id, _start(thread, ""), [], "failed")

    async def abandon(self, app_id: str, thread_id: str, run_id: str, status: RunStatus) -> None:
        """Release a thread whose run's stream is over but never recorded the run's end (a
        detached relay that was lost: its dead letter failed the stream): the run is
        recorded `status`, nothing is stored. A relay still finishing finds its lease gone."""
        ttl = self._settings.thread_ttl_days * 86_400
        start = RunStart(thread_id, run_id, "", new=False, lease_until=0, ttl_seconds=ttl)
        await self._store(self.threads.finish_run, app_id, start, [], status)

    async def finish(
        self, job: StreamJob, outcome: StreamOutcome, rounds: Sequence[dict[str, Any]]
    ) -> None:
        """Store what the run said and release its thread (the relay calls this before
        `end`, so a browser that sees `end` may start the next run at once)."""
        thread = job.thread
        if thread is None:
            return
        messages = said(job, outcome, rounds)
        # Stopped before the provider's first byte is still stopped: `cancelled`, not failed.
        stopped = outcome.finish_reason == "cancelled"
        status = run_status(outcome) if outcome.started or stopped else "failed"
        start = _start(thread, job.stream_id)
        messages, status, stored = await self._stored(job, start, messages, status)
        get_logger().info(
            "thread run finished",
            extra={
                "stream_id": job.stream_id,
                "thread_id": thread.thread_id,
                "run_id": thread.run_id,
                "run_status": status,
                "messages_stored": len(messages) if stored else 0,
                "history_dropped": thread.dropped,
                "history_tokens": thread.tokens,
                "lease_lost": not stored,
            },
        )

    async def _stored(
        self, job: StreamJob, start: RunStart, messages: Messages, status: RunStatus
    ) -> tuple[Messages, RunStatus, bool]:
        """Append the run's messages and release its thread: what was stored, how the run
        is recorded, and whether the run still held the thread. When the answer and tool
        rounds outgrew what a run stores, the thread is released all the same (it would
        stay held until its lease ends), keeping the request's messages (they fit: `begin`
        checked) and a failed answer in place of the rest."""
        try:
            stored = await self._store(self.threads.finish_run, job.app_id, start, messages, status)
            return messages, status, stored
        except PayloadTooLarge:
            get_logger().error(
                "thread run too large to store",
                extra={"stream_id": job.stream_id, "messages_lost": len(messages)},
            )
        kept = [*added_messages(job), _UNSTORED]
        stored = await self._store(self.threads.finish_run, job.app_id, start, kept, "failed")
        return kept, "failed", stored


def _start(thread: ThreadRun, stream_id: str) -> RunStart:
    return RunStart(
        thread_id=thread.thread_id,
        run_id=thread.run_id,
        stream_id=stream_id,
        new=thread.new,
        lease_until=thread.lease_until,
        ttl_seconds=thread.ttl_seconds,
    )
