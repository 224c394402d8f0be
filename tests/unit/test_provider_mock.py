"""The built-in mock provider: exact echo, scripted chunks, tool calls and injected failures."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from streaming_proxy.config import Settings
from streaming_proxy.errors import UpstreamError, ValidationFailed
from streaming_proxy.events import (
    Finish,
    ProviderEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    Usage,
)
from streaming_proxy.providers.base import LlmRequest
from streaming_proxy.providers.mock import MockProvider, split_even
from streaming_proxy.providers.registry import ProviderRegistry
from streaming_proxy.tokens import estimate_prompt_tokens, estimate_text_tokens

TEXT = "  héllo — 日本語 🎉\n\nthe quick  brown fox\tjumps "
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "an earlier question"},
    {"role": "assistant", "content": "an answer"},
    {"role": "user", "content": TEXT},
]


def request(messages: list[dict[str, Any]] = MESSAGES, **args: Any) -> LlmRequest:
    return LlmRequest(model=None, messages=messages, provider_args={"delayMs": 0, **args})


async def events_of(llm_request: LlmRequest) -> list[ProviderEvent]:
    provider = MockProvider()
    provider.prepare(llm_request)
    return [event async for event in provider.stream(llm_request)]


def texts(events: list[ProviderEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


async def test_echoes_the_last_user_message_word_by_word_exactly() -> None:
    events = await events_of(request())

    pieces = texts(events)
    assert "".join(pieces) == TEXT
    assert len(pieces) == len(TEXT.split())
    assert events[-2:] == [
        Usage(estimate_prompt_tokens(MESSAGES), estimate_text_tokens(TEXT)),
        Finish("stop"),
    ]


async def test_echoes_the_text_parts_of_list_content() -> None:
    content = [
        {"type": "text", "text": "look at"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "text", "text": "this cat"},
    ]

    events = await events_of(request([{"role": "user", "content": content}]))

    assert "".join(texts(events)) == "look at\nthis cat"


async def test_streams_the_given_text_instead() -> None:
    events = await events_of(request(text="Scripted answer."))

    assert texts(events) == ["Scripted ", "answer."]


@pytest.mark.parametrize("chunks", [1, 2, 3, 7, 12])
async def test_chunks_sets_the_number_of_pieces(chunks: int) -> None:
    pieces = texts(await events_of(request(chunks=chunks)))

    assert len(pieces) == chunks
    assert "".join(pieces) == TEXT


def test_even_pieces_cut_between_words_when_there_are_enough() -> None:
    assert split_even("aaaa bbbb cccc dddd", 2) == ["aaaa bbbb ", "cccc dddd"]
    assert split_even("abcdefgh", 4) == ["ab", "cd", "ef", "gh"]
    assert split_even("", 3) == []


async def test_fail_after_raises_after_that_many_text_chunks() -> None:
    provider = MockProvider()
    received: list[ProviderEvent] = []

    with pytest.raises(UpstreamError) as caught:
        async for event in provider.stream(request(failAfter=2)):
            received.append(event)

    assert texts(received) == ["  héllo ", "— "]
    assert caught.value.message == "mock failure after 2 chunks"
    assert (caught.value.upstream_status, caught.value.status) == (500, 502)


async def test_fail_status_sets_the_injected_status() -> None:
    with pytest.raises(UpstreamError) as caught:
        await events_of(request(failAfter=0, failStatus=429))

    assert (caught.value.upstream_status, caught.value.status) == (429, 429)


async def test_fail_before_first_byte_yields_nothing() -> None:
    received: list[ProviderEvent] = []

    with pytest.raises(UpstreamError) as caught:
        async for event in MockProvider().stream(request(failBeforeFirstByte=True)):
            received.append(event)

    assert received == []
    assert caught.value.upstream_status == 503


async def test_fail_before_first_byte_with_a_status() -> None:
    with pytest.raises(UpstreamError) as caught:
        await events_of(request(failBeforeFirstByte=True, failStatus=401))

    assert (caught.value.upstream_status, caught.value.status) == (401, 401)


async def test_tool_calls_come_as_fragments_after_the_text() -> None:
    calls: list[dict[str, Any]] = [
        {"name": "get_weather", "arguments": {"city": "Zürich", "days": [1, 2]}, "id": "call_1"},
        {"name": "ui_show", "arguments": '{"panel": "map"}'},
    ]

    events = await events_of(request(text="Let me check.", toolCalls=calls))

    fragments = [e for e in events if isinstance(e, ToolCallDelta)]
    assert events.index(fragments[0]) > max(
        i for i, e in enumerate(events) if isinstance(e, TextDelta)
    )
    assert fragments[0] == ToolCallDelta(0, id="call_1", name="get_weather")
    assert next(f for f in fragments if f.index == 1).name == "ui_show"
    for index, call in enumerate(calls):
        parts = [f.arguments for f in fragments if f.index == index and f.name is None]
        assert len(parts) == 3
        arguments = call["arguments"]
        expected = json.loads(arguments) if isinstance(arguments, str) else arguments
        assert json.loads("".join(parts)) == expected
    assert events[-1] == Finish("tool_calls")


async def test_thinking_comes_before_the_text() -> None:
    events = await events_of(request(text="Answer.", thinking="Let me think."))

    assert events[:4] == [
        ThinkingDelta("Let "),
        ThinkingDelta("me "),
        ThinkingDelta("think."),
        TextDelta("Answer."),
    ]


async def test_finish_reason_can_be_overridden() -> None:
    events = await events_of(request(finishReason="length"))

    assert events[-1] == Finish("length")


async def test_usage_false_sends_no_usage() -> None:
    events = await events_of(request(usage=False))

    assert not any(isinstance(e, Usage) for e in events)
    assert events[-1] == Finish("stop")


async def test_unknown_provider_args_are_ignored() -> None:
    events = await events_of(request(text="ok", temperature=0.3, max_tokens=5))

    assert texts(events) == ["ok"]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"delayMs": -1}, "delayMs"),
        ({"delayMs": 10_001}, "delayMs"),
        ({"chunks": 0}, "chunks"),
        ({"chunks": "many"}, "chunks"),
        ({"failAfter": -2}, "failAfter"),
        ({"failStatus": 200}, "failStatus"),
        ({"finishReason": "done"}, "finishReason"),
        ({"toolCalls": [{"arguments": {}}]}, "toolCalls.0.name"),
        ({"toolCalls": "get_weather"}, "toolCalls"),
    ],
)
def test_invalid_provider_args_are_rejected_in_prepare(args: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        MockProvider().prepare(request(**args))

    assert caught.value.status == 400
    assert f"{field}:" in caught.value.message
    assert caught.value.message.startswith("invalid providerArgs for provider 'mock'")


async def test_delay_ms_waits_before_each_chunk() -> None:
    started = time.monotonic()

    await events_of(request(text="a b c", delayMs=20))

    # uvloop's timers keep milliseconds: each sleep may end up to 1 ms early.
    assert time.monotonic() - started >= 0.06 - 0.003


def test_the_registry_builds_the_mock_without_settings_or_network() -> None:
    registry = ProviderRegistry(Settings(), httpx.AsyncClient())

    assert isinstance(registry.resolve("mock"), MockProvider)
