"""A detached relay's Lambda event (DETACH_MODE=lambda): what it may weigh.

The ack runs a detached relay by an async self-invoke of RelayFunction whose event is the
whole StreamJob. When that invocation fails or ages out, Lambda sends an invocation record
(the event as `requestPayload`, beside `requestContext`, `responseContext` and the error as
`responsePayload`) to the dead-letter queue; a record the queue cannot take arrives without
its payload, and the dead-letter handler can then tell nobody (deadletter.py). So an event
is refused (413) unless its record fits the queue whole.
"""

from __future__ import annotations

import json

from .errors import PayloadTooLarge
from .jobs import StreamJob

__all__ = ["MAX_DETACHED_EVENT_BYTES", "job_event"]

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
