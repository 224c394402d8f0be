"""The provider boundary: what every adapter's events and failures pass through in the relay.

The relay's reader applies these to each event as it takes it from the adapter (no
generator of its own in between: one level fewer to resume per chunk), and closes the
adapter however the stream ends (`close`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import httpx

from .errors import ProxyError, UpstreamError, UpstreamTimeout
from .events import (
    RedactedThinking,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ThinkingSignature,
    ToolCallDelta,
    Usage,
)
from .observability import get_logger
from .textcheck import SURROGATE, valid_text


def as_proxy_error(error: BaseException) -> ProxyError:
    """What a provider stream raised, as an error to report (never its internals): an
    adapter's own errors as they are, transport errors of any adapter mapped onto the tree."""
    if isinstance(error, ProxyError):
        return error
    if isinstance(error, httpx.TimeoutException):
        return UpstreamTimeout("the provider did not answer in time")
    if isinstance(error, httpx.HTTPError):
        return UpstreamError(f"could not reach the provider: {type(error).__name__}")
    get_logger().error("unexpected error in a provider stream", exc_info=error)
    return ProxyError("internal error while streaming")


# No model call reports more tokens than this: a count past it is a broken upstream's.
MAX_TOKEN_COUNT = 1_000_000_000


def valid(event: StreamEvent) -> StreamEvent:
    """The event as the rest of the proxy may trust it, whatever the upstream sent: its text
    valid UTF-8 (models emit lone surrogates too), its token counts non-negative integers.

    An adapter copies a provider's JSON values into events as they are, and JSON may hold a
    number where text belongs: such an event is the provider's fault (`UpstreamError`), not
    a crash further on. A count that is not a plausible token count is treated as not
    reported, so the usage is estimated (and says so) and quotas still count the stream.
    """
    if isinstance(event, TextDelta | ThinkingDelta):
        text = valid_text(_text(event.text, "text"))
        return event if text is event.text else type(event)(text)
    if isinstance(event, ToolCallDelta):
        return _valid_call(event)
    if isinstance(event, Usage):
        prompt, completion = token_count(event.prompt_tokens), token_count(event.completion_tokens)
        if prompt is event.prompt_tokens and completion is event.completion_tokens:
            return event
        return replace(event, prompt_tokens=prompt, completion_tokens=completion)
    if isinstance(event, ThinkingSignature):
        signature = valid_text(_text(event.signature, "reasoning signature"))
        return event if signature is event.signature else ThinkingSignature(signature)
    if isinstance(event, RedactedThinking):
        data = valid_text(_text(event.data, "redacted reasoning block"))
        return event if data is event.data else RedactedThinking(data)
    return event


def token_count(value: object) -> int | None:
    """`value` when it is a plausible token count (an integer from 0 to MAX_TOKEN_COUNT,
    not a bool, NaN or a float), else None: not reported."""
    if type(value) is int and 0 <= value <= MAX_TOKEN_COUNT:
        return value
    return None


def _valid_call(event: ToolCallDelta) -> ToolCallDelta:
    parts = (event.id, event.name, event.arguments, event.signature)
    for part in parts:
        if part is not None:
            _text(part, "tool call field")
    if not any(part is not None and SURROGATE.search(part) for part in parts):
        return event
    # replace(), not a new delta: the call's other fields must survive the repair.
    return replace(
        event,
        id=valid_text(event.id) if event.id else event.id,
        name=valid_text(event.name) if event.name else event.name,
        arguments=valid_text(event.arguments),
        signature=valid_text(event.signature) if event.signature else event.signature,
    )


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise UpstreamError(f"the provider sent a {what} that is not a string")
    return value


async def close(events: AsyncIterator[StreamEvent]) -> None:
    """Close an adapter's stream (and with it the upstream response), if it can be."""
    closer = getattr(events, "aclose", None)
    if closer is not None:
        await closer()
