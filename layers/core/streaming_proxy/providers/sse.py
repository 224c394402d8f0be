"""Opening a provider's Server-Sent Events stream with one error mapping for every SSE adapter."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from httpx_sse import ServerSentEvent

from ..errors import UpstreamError, UpstreamTimeout
from ..nethttp import BODY
from .base import MAX_ERROR_BODY_BYTES, raise_for_upstream, upstream_message
from .raw import tapped
from .ssedecode import SseDecoder

# What httpx-sse's `aconnect_sse` asks for.
_SSE_HEADERS = {"Accept": "text/event-stream", "Cache-Control": "no-store"}


@asynccontextmanager
async def open_event_stream(
    http: httpx.AsyncClient,
    url: str,
    *,
    provider: str,
    json: Any,
    headers: dict[str, str],
) -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
    """POST `json` to `url` and yield its SSE events; the response closes when the block exits.

    Non-2xx answers and non-SSE bodies raise `UpstreamError` with the provider's message;
    timeouts raise `UpstreamTimeout` and other transport failures `UpstreamError`, both
    also when they happen while the caller iterates.
    """
    try:
        headers = {**headers, **_SSE_HEADERS}
        async with http.stream("POST", url, json=json, headers=headers) as response:
            await raise_for_upstream(response, provider)
            await _require_event_stream(response, provider)
            events = _events(response, provider)
            tap = tapped(events)  # frames kept for options.rawResponse, when asked
            try:
                yield tap
                # Reached only when the adapter stopped reading on its own (OpenAI's
                # `[DONE]`): what is left is the body's end, and reading it lets the pool
                # keep the connection, so the next stream skips a TCP and TLS handshake.
                await _read_to_end(events)
            finally:
                await tap.aclose()
                await events.aclose()
    except httpx.TimeoutException as e:
        raise UpstreamTimeout(f"{provider} timed out: {type(e).__name__}") from e
    except httpx.HTTPError as e:
        # The type says what broke; the text could quote URLs or headers.
        raise UpstreamError(f"{provider} connection failed: {type(e).__name__}") from e


async def _events(response: httpx.Response, provider: str) -> AsyncGenerator[ServerSentEvent, None]:
    """The body's events as they complete (content codings undone by httpx)."""
    decoder = SseDecoder()
    chunks = _body(response)
    started = False
    async for data in chunks:
        if not started and data.strip():
            started = True
            if data.lstrip()[:1] in (b"{", b"["):
                raise await _json_body(data, chunks, response, provider)
        for event in decoder.feed(data):
            yield event
    for event in decoder.end():
        yield event


def _body(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body's bytes: from the transport's stream itself when there is no content coding
    to undo (nearly always for an event stream), else through httpx's decoders. Each chunk
    then skips three generators and their bookkeeping (the lean transport's body is read
    without httpx's wrapper around it); the stream still closes with the response
    (`http.stream`'s block), which also sets its `elapsed`."""
    coding = response.headers.get("content-encoding", "").strip().lower()
    stream = response.extensions.get(BODY, response.stream)
    if coding in ("", "identity") and isinstance(stream, httpx.AsyncByteStream):
        response.is_stream_consumed = True  # as `aiter_raw` marks it
        return stream.__aiter__()
    return response.aiter_bytes()


# What the body may still hold after the adapter's last event: a terminator, not a stream.
_TAIL_SECONDS = 0.1
_TAIL_EVENTS = 8


async def _read_to_end(events: AsyncIterator[ServerSentEvent]) -> None:
    """Read the few bytes left after the last event, briefly; else the connection closes."""
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(_TAIL_SECONDS):
            left = _TAIL_EVENTS
            async for _ in events:
                left -= 1
                if not left:
                    return


async def _json_body(
    first: bytes, chunks: AsyncIterator[bytes], response: httpx.Response, provider: str
) -> UpstreamError:
    """A body labelled an event stream that is one JSON value: a gateway's or compatible
    server's error, sent with status 200. No event stream starts so (its lines are fields,
    comments or blank), and read as one it would be no events at all ("ended early")."""
    body = first
    async for data in chunks:
        body += data
        if len(body) >= MAX_ERROR_BODY_BYTES:
            break
    return UpstreamError(
        f"{provider} answered with a JSON body instead of an event stream: "
        f"{upstream_message(body[:MAX_ERROR_BODY_BYTES])}",
        upstream_status=response.status_code,
    )


async def _require_event_stream(response: httpx.Response, provider: str) -> None:
    """A 2xx answer that is not SSE is usually a JSON error or a misconfigured base URL."""
    content_type = response.headers.get("content-type", "").partition(";")[0].strip()
    if content_type == "text/event-stream":
        return
    body = (await response.aread())[:MAX_ERROR_BODY_BYTES]
    raise UpstreamError(
        f"{provider} answered with {content_type or 'no content type'} instead of an event "
        f"stream: {upstream_message(body)}",
        upstream_status=response.status_code,
    )
