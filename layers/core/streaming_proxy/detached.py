"""A detached relay's Lambda event (DETACH_MODE=lambda): what it may weigh, what it holds.

The ack runs a detached relay by an async self-invoke of RelayFunction whose event is the
whole StreamJob. When that invocation fails or ages out, Lambda sends an invocation record
(the event as `requestPayload`, beside `requestContext`, `responseContext` and the error as
`responsePayload`) to the dead-letter queue; a record the queue cannot take arrives without
its payload, and the dead-letter handler can then tell nobody (deadletter.py). So an event
is refused (413) unless its record fits the queue whole.

A run on a thread would carry the thread's trimmed history, as large as the model's budget
allows: its event holds only the messages the request added instead, and the relay reads
and trims the history itself before it starts (`event_relay`), as the request would have.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from .errors import DependencyUnavailable, PayloadTooLarge, ProxyError
from .events import StreamEvent
from .jobs import StreamJob
from .observability import get_logger
from .providers.base import LlmRequest

if TYPE_CHECKING:
    from .relay import Relay
    from .service import StreamService

__all__ = ["MAX_DETACHED_EVENT_BYTES", "Refused", "event_relay", "job_event"]

# Lambda takes an async invoke's payload up to 1 MB; the dead-letter queue takes a message
# up to 1 MiB (its MaximumMessageSize in template.yaml, SQS's maximum). The on-failure
# record adds to the event: `requestContext` and `responseContext` (well under 1 KB) and
# `responsePayload`, the failed run's answer (`/events` answers a small JSON error; Lambda's
# own error object for a timeout or a crash is a few KB at most). 256 KiB are left for
# those and for Lambda writing the event JSON back differently spaced or escaped: the event
# is sent compact and ASCII-escaped (`\u00fc`), its largest spelling, so a re-encoding can
# only shrink it, but a serializer escaping `<`, `>` or `&` would grow it.
MAX_DETACHED_EVENT_BYTES = 786_432


def job_event(job: StreamJob) -> bytes:
    """The self-invoke's payload for `job`: PayloadTooLarge (413, before any invoke) when it
    is over MAX_DETACHED_EVENT_BYTES. Whatever makes it large counts (messages, images as
    data URLs, tools, an assistant's instructions): the caller is told to use SSE, which
    runs the relay in its own request with no event at all."""
    event = json.dumps(job.to_event(), separators=(",", ":")).encode("ascii")
    if len(event) > MAX_DETACHED_EVENT_BYTES:
        raise PayloadTooLarge(
            f"request too large to run detached ({len(event)} bytes as a job, at most "
            f"{MAX_DETACHED_EVENT_BYTES}): send it with Accept: text/event-stream"
        )
    return event


class Refused:
    """An event source that fails at once with `error`: the relay then ends the stream
    as it ends one whose provider failed before its first byte (gate.py, relay.py)."""

    name = "history"

    def __init__(self, error: ProxyError) -> None:
        self._error = error

    async def stream(self, request: LlmRequest) -> AsyncIterator[StreamEvent]:
        raise self._error
        yield  # an async generator, as every source's stream is


async def event_relay(service: StreamService, job: StreamJob) -> Relay:
    """The relay of a self-invoke's (claimed) job. A run whose history was left to it
    (`history_pending`) gets it first, read and trimmed as its request would have, and
    checked against its provider as the request checks it. When that fails, the relay
    fails the stream visibly, never silently: the error to the ack still waiting, or else
    `error` and `end` to the channels, the record `failed`, the thread released (the
    relay's closing step ends the run)."""
    thread = job.thread
    if thread is None or not thread.history_pending:
        return service.record_gated_relay(job)
    try:
        whole = await service.runs.with_history(job)
        service.check(whole)
    except Exception as e:
        error = e if isinstance(e, ProxyError) else None
        get_logger().error(
            "detached run's history not read; the stream fails",
            extra={"stream_id": job.stream_id, "thread_id": thread.thread_id},
            exc_info=error is None,
        )
        if error is None:
            error = DependencyUnavailable("could not read the thread's history; try again")
        return service.record_gated_relay(job, source=Refused(error))
    return service.record_gated_relay(whole)
