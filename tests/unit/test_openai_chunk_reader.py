"""Reading OpenAI `chat.completion.chunk` payloads without a model per chunk: the events of
well-formed chunks, and a clean UpstreamError for every shape that is not one."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from streaming_proxy.errors import UpstreamError
from streaming_proxy.events import Finish, ProviderEvent, TextDelta, ThinkingDelta, ToolCallDelta
from streaming_proxy.events import Usage as UsageEvent
from streaming_proxy.providers.base import LlmRequest
from streaming_proxy.providers.openai import OpenAIProvider
from streaming_proxy.providers.openai_chunks import MalformedChunk, chunk_events, parse_chunk

from .settled import settled


def events_of(chunk: dict[str, Any]) -> list[ProviderEvent]:
    return chunk_events(parse_chunk(json.dumps(chunk)))


@pytest.mark.parametrize(
    ("chunk", "expected"),
    [
        ({"choices": [{"index": 0, "delta": {"content": "hi"}}]}, [TextDelta("hi")]),
        # Absent and null fields alike: nothing to say.
        ({"choices": [{"delta": {"content": None, "role": "assistant"}}]}, []),
        ({"choices": None, "usage": None}, []),
        ({"choices": [{"index": 0, "delta": None, "finish_reason": "length"}]}, [Finish("length")]),
        ({"choices": [{"index": 1, "delta": {"content": "other"}}]}, []),
        ({"choices": [], "usage": {"prompt_tokens": 3}}, [UsageEvent(3, None)]),
        (
            {"choices": [{"delta": {"reasoning": "hm", "content": "ok"}, "finish_reason": "x"}]},
            [ThinkingDelta("hm"), TextDelta("ok"), Finish("stop")],
        ),
        (
            {"choices": [{"delta": {"tool_calls": [{"function": {"arguments": "{}"}}]}}]},
            [ToolCallDelta(0, arguments="{}")],
        ),
        # A call fragment with nothing in it is no event; unknown fields are ignored.
        ({"choices": [{"delta": {"tool_calls": [{"index": 2, "type": "function"}]}}]}, []),
        ({"id": "c", "object": "chat.completion.chunk", "system_fingerprint": 7}, []),
    ],
)
def test_well_formed_chunks_give_their_events(
    chunk: dict[str, Any], expected: list[ProviderEvent]
) -> None:
    assert events_of(chunk) == expected


@pytest.mark.parametrize(
    "data",
    [
        "[1, 2]",
        '"text"',
        '{"choices": {"index": 0}}',
        '{"choices": ["text"]}',
        '{"choices": [{"index": "0", "delta": {"content": "a"}}]}',
        '{"choices": [{"index": true, "delta": {"content": "a"}}]}',
        '{"choices": [{"delta": "text"}]}',
        '{"choices": [{"delta": {"content": 5}}]}',
        '{"choices": [{"delta": {"reasoning_content": ["a"]}}]}',
        '{"choices": [{"delta": {"tool_calls": {"index": 0}}}]}',
        '{"choices": [{"delta": {"tool_calls": [{"function": "f"}]}}]}',
        '{"choices": [{"delta": {"tool_calls": [{"id": 9}]}}]}',
        '{"choices": [{"delta": {}, "finish_reason": 1}]}',
        '{"usage": {"prompt_tokens": "12"}}',
        '{"usage": []}',
    ],
)
def test_a_chunk_of_the_wrong_shape_is_malformed(data: str) -> None:
    with pytest.raises(MalformedChunk):
        chunk_events(parse_chunk(data))


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
