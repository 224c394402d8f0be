"""The provider boundary: what every adapter's events pass through before the relay."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace

import httpx

from .errors import ProxyError, UpstreamError, UpstreamTimeout
from .events import StreamEvent, TextDelta, ThinkingDelta, ToolCallDelta
from .observability import get_logger
from .textcheck import SURROGATE, valid_text


async def guarded(events: AsyncIterator[StreamEvent]) -> AsyncGenerator[StreamEvent, None]:
    """Transport errors of any adapter mapped onto the error tree, text made valid UTF-8
    (models emit lone surrogates too), the adapter always closed."""
    try:
        async for event in events:
            yield _valid(event)
    except httpx.TimeoutException as e:
        raise UpstreamTimeout("the provider did not answer in time") from e
    except httpx.HTTPError as e:
        raise UpstreamError(f"could not reach the provider: {type(e).__name__}") from e
    finally:
        closer = getattr(events, "aclose", None)
        if closer is not None:
            await closer()


def as_proxy_error(error: BaseException) -> ProxyError:
    """What a provider stream raised, as an error to report (never its internals)."""
    if isinstance(error, ProxyError):
        return error
    get_logger().error("unexpected error in a provider stream", exc_info=error)
    return ProxyError("internal error while streaming")


def _valid(event: StreamEvent) -> StreamEvent:
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
