"""The provider boundary: what every adapter's events and failures pass through in the relay.

The relay's reader applies these to each event as it takes it from the adapter (no
generator of its own in between: one level fewer to resume per chunk), and closes the
adapter however the stream ends (`close`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import httpx

from .errors import ProxyError, UpstreamError, UpstreamTimeout
from .events import StreamEvent, TextDelta, ThinkingDelta, ToolCallDelta
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


def valid(event: StreamEvent) -> StreamEvent:
    """The event with its text made valid UTF-8 (models emit lone surrogates too)."""
    if isinstance(event, TextDelta | ThinkingDelta):
        text = valid_text(event.text)
        return event if text is event.text else type(event)(text)
    if isinstance(event, ToolCallDelta):
        parts = (event.id or "", event.name or "", event.arguments)
        if any(SURROGATE.search(p) for p in parts):
            # replace(), not a new delta: the call's signature must survive the repair.
            return replace(
                event,
                id=valid_text(event.id) if event.id else event.id,
                name=valid_text(event.name) if event.name else event.name,
                arguments=valid_text(event.arguments),
            )
    return event


async def close(events: AsyncIterator[StreamEvent]) -> None:
    """Close an adapter's stream (and with it the upstream response), if it can be."""
    closer = getattr(events, "aclose", None)
    if closer is not None:
        await closer()
