"""An OpenAI event stream read from its body: chunks of the wrong shape end it with a clean
UpstreamError, and a body reads alike with or without a content coding (the reader takes
the transport's bytes itself when there is none to undo)."""

from __future__ import annotations

import gzip
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from streaming_proxy.errors import UpstreamError
from streaming_proxy.events import Finish, ProviderEvent, TextDelta
from streaming_proxy.providers.base import LlmRequest
from streaming_proxy.providers.openai import OpenAIProvider

from .settled import settled


class _Body(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> Any:
        yield self.data


def provider(body: bytes, headers: dict[str, str]) -> OpenAIProvider:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=headers, stream=_Body(body))

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    return OpenAIProvider("openai", client, "https://api.openai.test/v1", SecretStr("k"))


def request() -> LlmRequest:
    return settled(LlmRequest(model="m", messages=[{"role": "user", "content": "Hi"}]))


async def collect(source: OpenAIProvider) -> list[ProviderEvent]:
    return [event async for event in source.stream(request())]


SSE = (
    b'data: {"choices":[{"index":0,"delta":{"content":"caf\xc3\xa9"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


async def test_a_malformed_chunk_mid_stream_ends_it_with_an_upstream_error() -> None:
    bad = b'data: {"choices":[{"delta":{"content":{"text":"x"}}}]}\n\n'
    first = SSE.split(b"\n\n")[0] + b"\n\n"
    source = provider(first + bad, {"content-type": "text/event-stream"})
    seen: list[ProviderEvent] = []
    with pytest.raises(UpstreamError, match="not a JSON chunk"):
        async for event in source.stream(request()):
            seen.append(event)
    assert seen == [TextDelta("café")]


@pytest.mark.parametrize("coding", ["gzip", "identity", None])
async def test_an_event_stream_reads_alike_with_or_without_a_content_coding(
    coding: str | None,
) -> None:
    headers = {"content-type": "text/event-stream"}
    body = SSE
    if coding is not None:
        headers["content-encoding"] = coding
        body = gzip.compress(SSE) if coding == "gzip" else SSE
    assert await collect(provider(body, headers)) == [TextDelta("café"), Finish("stop")]


@pytest.mark.parametrize(
    "data",
    [
        "[1, 2]",
        '"text"',
        '{"choices": {"index": 0}}',
        '{"choices": ["text"]}',
        '{"choices": [{"delta": "text"}]}',
        '{"choices": [{"delta": {"content": 5}}]}',
        '{"choices": [{"delta": {"reasoning_content": ["a"]}}]}',
        '{"choices": [{"delta": {"tool_calls": {"index": 0}}}]}',
        '{"choices": [{"delta": {"tool_calls": [{"function": "f"}]}}]}',
        '{"choices": [{"delta": {}, "finish_reason": 1}]}',
        '{"usage": []}',
    ],
)
async def test_a_chunk_of_the_wrong_shape_ends_the_stream_cleanly(data: str) -> None:
    first = SSE.split(b"\n\n")[0] + b"\n\n"
    body = first + b"data: " + data.encode() + b"\n\n" + SSE
    source = provider(body, {"content-type": "text/event-stream"})
    seen: list[ProviderEvent] = []
    with pytest.raises(UpstreamError, match="not a JSON chunk"):
        async for event in source.stream(request()):
            seen.append(event)
    assert seen == [TextDelta("café")]
