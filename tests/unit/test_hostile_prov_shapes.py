"""Hostile upstreams: stream events whose JSON has the wrong types, counts that are no counts,
lone surrogates in signatures. Each adapter's events are read as the relay reads them
(through `upstream.valid`), and failures mapped as the relay maps them (`as_proxy_error`)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr

from streaming_proxy.config import Settings
from streaming_proxy.errors import ProxyError, UpstreamError
from streaming_proxy.events import (
    Finish,
    ProviderEvent,
    RedactedThinking,
    StreamEvent,
    TextDelta,
    ThinkingSignature,
    ToolCallDelta,
    Usage,
)
from streaming_proxy.providers.anthropic import AnthropicProvider
from streaming_proxy.providers.base import LlmRequest, Provider
from streaming_proxy.providers.gemini import GeminiProvider
from streaming_proxy.turn import TurnState
from streaming_proxy.upstream import as_proxy_error, valid

from .providers_fixtures import FakeUpstream
from .settled import settled

SETTINGS = Settings(anthropic_api_key=SecretStr("server-key"), gemini_api_key=SecretStr("g-key"))
REQUEST = settled(LlmRequest(model="a-model", messages=[{"role": "user", "content": "Hi"}]))


def provider(name: str, upstream: FakeUpstream) -> Provider:
    http = upstream.client()
    if name == "anthropic":
        return AnthropicProvider(http, SETTINGS)
    return GeminiProvider(http, SETTINGS, call_id=lambda n: f"call_{n}")


async def read(name: str, frames: list[str]) -> tuple[list[StreamEvent], ProxyError | None]:
    """What the relay gets of the stream: the valid events, and the error that ended it."""
    upstream = FakeUpstream([frame.encode() for frame in frames])
    events: list[StreamEvent] = []
    try:
        async for event in provider(name, upstream).stream(REQUEST):
            events.append(valid(event))
    except Exception as e:
        return events, as_proxy_error(e)
    return events, None


def sse(data: Any) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


STOP = sse({"type": "message_stop"})


def gemini(part: Any, **extra: Any) -> str:
    return sse({"candidates": [{"content": {"parts": [part]}, "finishReason": "STOP"}], **extra})


WRONG_TYPES = {
    "anthropic message is a list": (
        "anthropic",
        [sse({"type": "message_start", "message": ["x"]})],
    ),
    "anthropic delta is a string": (
        "anthropic",
        [sse({"type": "content_block_delta", "index": 0, "delta": "x"}), STOP],
    ),
    "anthropic block index is a list": (
        "anthropic",
        [
            sse(
                {
                    "type": "content_block_start",
                    "index": [],
                    "content_block": {"type": "tool_use", "id": "t", "name": "f"},
                }
            ),
            STOP,
        ],
    ),
    "anthropic text is a number": (
        "anthropic",
        [sse({"type": "content_block_delta", "delta": {"type": "text_delta", "text": 5}}), STOP],
    ),
    "anthropic tool name is a number": (
        "anthropic",
        [
            sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "tool_use", "id": "t", "name": 7},
                }
            ),
            STOP,
        ],
    ),
    "gemini candidates is a string": ("gemini", [sse({"candidates": "x"})]),
    "gemini part is a string": ("gemini", [gemini("hello")]),
    "gemini promptFeedback is a string": ("gemini", [sse({"promptFeedback": "x"})]),
    "gemini functionCall is a string": ("gemini", [gemini({"functionCall": "f"})]),
    "gemini text is a number": ("gemini", [gemini({"text": 5})]),
    "gemini thoughtSignature is a number": (
        "gemini",
        [gemini({"functionCall": {"name": "f", "args": {}}, "thoughtSignature": 5})],
    ),
}


@pytest.mark.parametrize("case", WRONG_TYPES)
async def test_a_value_of_the_wrong_json_type_is_the_providers_fault_not_a_crash(case: str) -> None:
    # Before: AttributeError/TypeError inside the adapter or further on, reported as a 500
    # "internal error" with a traceback logged, as if the proxy were broken.
    name, frames = WRONG_TYPES[case]
    _, error = await read(name, frames)
    assert isinstance(error, UpstreamError), error
    assert error.status == 502 and "internal" not in error.message


async def test_an_anthropic_error_event_whose_error_is_a_string_keeps_its_message() -> None:
    _, error = await read("anthropic", [sse({"type": "error", "error": "overloaded, retry"})])
    assert isinstance(error, UpstreamError) and "overloaded, retry" in error.message


BAD_COUNTS = ["-300", '"12"', "NaN", "1e999", "1.5", "true", "100000000000000000000000000000"]


@pytest.mark.parametrize("count", BAD_COUNTS)
async def test_token_counts_that_are_no_counts_are_estimated_and_marked_so(count: str) -> None:
    # A negative count would lower the stream's reported usage and cost; NaN or a string
    # made `total_tokens` no integer, so the app's token quota never counted the stream.
    usage = f'{{"input_tokens": {count}, "output_tokens": {count}}}'
    frames = [
        sse(f'{{"type": "message_start", "message": {{"usage": {usage}}}}}'),
        sse({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}}),
        sse(
            f'{{"type": "message_delta", "delta": {{"stop_reason": "end_turn"}}, "usage": {usage}}}'
        ),
        STOP,
    ]
    for name, stream in (("anthropic", frames), ("gemini", [_gemini_usage(count)])):
        events, error = await read(name, stream)
        assert error is None, (name, error)
        turn = TurnState()
        for event in events:
            turn.handle(event)  # type: ignore[arg-type]
        reported = turn.reported_usage(REQUEST)
        assert reported["estimated"] is True, (name, reported)
        assert all(
            type(reported[k]) is int and reported[k] >= 0 for k in reported if k != "estimated"
        )
        assert reported["total_tokens"] > 0


def _gemini_usage(count: str) -> str:
    usage = f'{{"promptTokenCount": {count}, "candidatesTokenCount": {count}}}'
    part = '{"content": {"parts": [{"text": "Hi"}]}, "finishReason": "STOP"}'
    return f'data: {{"candidates": [{part}], "usageMetadata": {usage}}}\n\n'


def test_a_plausible_count_is_kept_as_it_is() -> None:
    usage = Usage(12, 0)
    assert valid(usage) is usage


async def test_lone_surrogates_in_signatures_and_redacted_blocks_are_repaired() -> None:
    # A signature is text the proxy stores in the thread and sends back: a lone surrogate
    # in it fails every UTF-8 encoder after the adapter (DynamoDB, the next request).
    anthropic = [
        'data: {"type": "content_block_delta", "index": 0, '
        '"delta": {"type": "signature_delta", "signature": "sig\\ud800"}}\n\n',
        'data: {"type": "content_block_start", "index": 1, '
        '"content_block": {"type": "redacted_thinking", "data": "enc\\udfff"}}\n\n',
        STOP,
    ]
    events, error = await read("anthropic", anthropic)
    assert error is None
    assert events[:2] == [ThinkingSignature("sig\ufffd"), RedactedThinking("enc\ufffd")]
    frame = (
        'data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {}},'
        ' "thoughtSignature": "ts\\udc00"}]}, "finishReason": "STOP"}]}\n\n'
    )
    events, error = await read("gemini", [frame])
    assert error is None
    expected: list[ProviderEvent] = [
        ToolCallDelta(0, id="call_0", name="f", arguments="{}", signature="ts\ufffd"),
        Finish("tool_calls"),
    ]
    assert events == expected


def test_text_with_a_lone_surrogate_is_still_repaired_and_other_text_untouched() -> None:
    plain = TextDelta("ok")
    assert valid(plain) is plain
    assert valid(TextDelta("a\ud800")) == TextDelta("a\ufffd")
