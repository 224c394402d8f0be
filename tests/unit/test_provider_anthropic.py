"""AnthropicProvider: request translation, stream normalisation, errors and closing."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pydantic import SecretStr

from streaming_proxy.config import Settings
from streaming_proxy.errors import ProviderNotConfigured, UpstreamError, ValidationFailed
from streaming_proxy.events import (
    Finish,
    ProviderEvent,
    RedactedThinking,
    TextDelta,
    ThinkingDelta,
    ThinkingSignature,
    ToolCallDelta,
    Usage,
)
from streaming_proxy.providers.anthropic import AnthropicProvider, anthropic_body
from streaming_proxy.providers.base import LlmRequest

from . import tool_history as history
from .providers_fixtures import SPLITS, FakeUpstream, fixture_bytes
from .settled import settled

SETTINGS = Settings(
    anthropic_api_key=SecretStr("server-key"), anthropic_base_url="https://anthropic.test/v1"
)
HELLO = [{"role": "user", "content": "Bonjour"}]


def request(**kwargs: object) -> LlmRequest:
    fields: dict[str, object] = {"model": "claude-sonnet-4-5", "messages": HELLO, **kwargs}
    return settled(LlmRequest(**fields))  # type: ignore[arg-type]


async def run(upstream: FakeUpstream, req: LlmRequest | None = None) -> list[ProviderEvent]:
    async with upstream.client() as http:
        provider = AnthropicProvider(http, SETTINGS)
        return [event async for event in provider.stream(req or request())]


EXPECTED: dict[str, list[ProviderEvent]] = {
    "text.sse": [
        Usage(25, 1),
        TextDelta("héllo — "),
        TextDelta("日本語 🎉"),
        Usage(25, 12),
        Finish("stop"),
    ],
    "tool_call.sse": [
        Usage(472, 2),
        TextDelta("Je regarde — 天気"),
        ToolCallDelta(0, id="toolu_01A", name="get_weather"),
        ToolCallDelta(0, arguments='{"city": "Zü'),
        ToolCallDelta(0, arguments='rich"}'),
        ToolCallDelta(1, id="toolu_01B", name="ui_show_map"),
        ToolCallDelta(1, arguments="{}"),
        Usage(472, 89),
        Finish("tool_calls"),
    ],
    "thinking.sse": [
        Usage(100, 1),
        ThinkingDelta("Réfléchissons… "),
        ThinkingDelta("2 + 2 = 4"),
        ThinkingSignature("EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"),
        TextDelta("C'est 4 🎉"),
        Usage(100, 64),
        Finish("length"),
    ],
    "thinking_tool_use.sse": [
        Usage(512, 3),
        ThinkingDelta("Il faut la météo — "),
        ThinkingDelta("天気を調べる。"),
        ThinkingSignature("ErUBCkYIBhgCIkB2Zm9+aGVsbG8vd29ybGQ=+/sig=="),
        RedactedThinking("EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP=="),
        TextDelta("Je regarde."),
        ToolCallDelta(0, id="toolu_01C", name="get_weather"),
        ToolCallDelta(0, arguments='{"city": "Zü'),
        ToolCallDelta(0, arguments='rich"}'),
        Usage(512, 120),
        Finish("tool_calls"),
    ],
    "no_usage.sse": [TextDelta("Je ne peux pas — 申し訳"), Finish("content_filter")],
}


@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_stream_normalises_events_however_the_bytes_are_split(name: str, split: str) -> None:
    data = fixture_bytes(f"anthropic/{name}")
    assert not data.isascii()  # so that the mid_utf8 split really cuts inside characters
    upstream = FakeUpstream(SPLITS[split](data))

    assert await run(upstream) == EXPECTED[name]
    assert upstream.body.closed


@pytest.mark.parametrize("split", sorted(SPLITS))
async def test_error_event_after_http_200_raises_with_the_providers_message(split: str) -> None:
    data = fixture_bytes("anthropic/overloaded.sse")
    assert not data.isascii()  # so that the mid_utf8 split really cuts inside characters
    upstream = FakeUpstream(SPLITS[split](data))
    seen: list[ProviderEvent] = []

    async with upstream.client() as http:
        with pytest.raises(UpstreamError) as caught:
            async for event in AnthropicProvider(http, SETTINGS).stream(request()):
                seen.append(event)

    assert seen == [Usage(7, 1), TextDelta("héllo")]
    assert "Overloaded — réessayez" in caught.value.message
    assert caught.value.upstream_status == 529
    assert caught.value.status == 502
    assert upstream.body.closed


async def test_stream_cut_before_message_stop_is_an_error() -> None:
    upstream = FakeUpstream([fixture_bytes("anthropic/truncated.sse")])

    with pytest.raises(UpstreamError, match="before message_stop"):
        await run(upstream)
    assert upstream.body.closed


@pytest.mark.parametrize(
    ("status", "error_type", "mapped"),
    [
        (400, "invalid_request_error", 400),
        (429, "rate_limit_error", 429),
        (529, "overloaded_error", 502),
    ],
)
async def test_http_error_body_becomes_upstream_error(
    status: int, error_type: str, mapped: int
) -> None:
    upstream = FakeUpstream.error(
        status, {"type": "error", "error": {"type": error_type, "message": f"Nope: {error_type}"}}
    )

    with pytest.raises(UpstreamError) as caught:
        await run(upstream)

    assert caught.value.status == mapped
    assert caught.value.upstream_status == status
    assert f"Nope: {error_type}" in caught.value.message
    assert upstream.body.closed


async def test_response_is_closed_when_the_consumer_stops_early() -> None:
    upstream = FakeUpstream(SPLITS["byte_by_byte"](fixture_bytes("anthropic/text.sse")))

    async with upstream.client() as http:
        events = AnthropicProvider(http, SETTINGS).stream(request())
        async for event in events:
            if isinstance(event, TextDelta):
                break
        await events.aclose()  # type: ignore[attr-defined]

    assert upstream.body.closed
    assert upstream.body.sent < len(upstream.body.reads)


async def test_request_goes_to_messages_with_key_version_and_stream_flag() -> None:
    upstream = FakeUpstream([fixture_bytes("anthropic/text.sse")])

    await run(upstream, request(api_key=SecretStr("caller-key")))

    sent = upstream.request
    assert str(sent.url) == "https://anthropic.test/v1/messages"
    assert sent.headers["x-api-key"] == "caller-key"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert upstream.sent_json() == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Bonjour"}]}],
        "stream": True,
    }


def test_prepare_without_any_key_is_not_configured() -> None:
    provider = AnthropicProvider(None, Settings(anthropic_api_key=None))  # type: ignore[arg-type]

    with pytest.raises(ProviderNotConfigured):
        provider.prepare(request())


def test_prepare_without_model_fails_validation() -> None:
    with pytest.raises(ValidationFailed, match="model"):
        AnthropicProvider(None, SETTINGS).prepare(request(model=None))  # type: ignore[arg-type]


def test_system_and_developer_messages_become_system() -> None:
    body = anthropic_body(
        request(
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "user", "content": "Hi"},
            ]
        )
    )

    assert body["system"] == "Be brief.\n\nAnswer in French."
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]


def test_images_tool_calls_and_merged_tool_results() -> None:
    png = base64.b64encode(b"\x89PNG fake").decode()
    body = anthropic_body(
        request(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                        {"type": "image_url", "image_url": {"url": "https://img.test/cat.jpg"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": "Let me check.",
                    "tool_calls": [
                        {
                            "id": "t1",
                            "type": "function",
                            "function": {"name": "a", "arguments": '{"x": 1}'},
                        },
                        {
                            "id": "t2",
                            "type": "function",
                            "function": {"name": "b", "arguments": ""},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "t1", "content": "one"},
                {"role": "tool", "tool_call_id": "t2", "content": '{"ok": true}'},
            ]
        )
    )

    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": png},
                },
                {"type": "image", "source": {"type": "url", "url": "https://img.test/cat.jpg"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "t1", "name": "a", "input": {"x": 1}},
                {"type": "tool_use", "id": "t2", "name": "b", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "one"},
                {"type": "tool_result", "tool_use_id": "t2", "content": '{"ok": true}'},
            ],
        },
    ]


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ],
)
def test_tools_and_tool_choice(choice: str | dict[str, object], expected: dict[str, str]) -> None:
    body = anthropic_body(request(tools=TOOLS, tool_choice=choice))

    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    assert body["tool_choice"] == expected


def test_provider_args_are_merged_but_cannot_replace_the_stream_flag() -> None:
    body = anthropic_body(
        request(
            provider_args={
                "max_tokens": 100,
                "temperature": 0.2,
                "thinking": {"type": "enabled", "budget_tokens": 1024},
                "stream": False,
            }
        )
    )

    assert body["max_tokens"] == 100
    assert body["temperature"] == 0.2
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert body["stream"] is True


def test_provider_args_model_never_chooses_the_model() -> None:
    """payload.model is the one model (an app's policy judges it); providerArgs.model
    neither replaces it nor stands in for a missing one."""
    body = anthropic_body(request(provider_args={"model": "claude-opus-4"}))
    assert body["model"] == "claude-sonnet-4-5"
    with pytest.raises(ValidationFailed, match=r"payload\.model"):
        anthropic_body(request(model=None, provider_args={"model": "claude-opus-4"}))


def test_invalid_tool_call_arguments_fail_validation() -> None:
    messages = [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "t", "function": {"name": "a", "arguments": "{"}}],
        },
    ]
    with pytest.raises(ValidationFailed, match="JSON object"):
        anthropic_body(request(messages=messages))


async def test_a_tool_round_goes_back_in_the_messages_api_format() -> None:
    upstream = FakeUpstream([fixture_bytes("anthropic/text.sse")])

    await run(upstream, request(messages=history.conversation()))

    assert upstream.sent_json() == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "system": history.SYSTEM,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": history.QUESTION}]},
            {
                "role": "assistant",
                "content": [
                    history.SIGNED,
                    history.REDACTED,
                    {"type": "text", "text": history.TEXT},
                    {
                        "type": "tool_use",
                        "id": "toolu_01",
                        "name": "ui_get_color",
                        "input": history.COLOR_ARGS,
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_02",
                        "name": "lookup_stock",
                        "input": history.STOCK_ARGS,
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_01",
                        "content": json.dumps(history.COLOR_RESULT),
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_02",
                        "content": [{"type": "text", "text": json.dumps(history.STOCK_RESULT)}],
                        "is_error": True,
                    },
                ],
            },
        ],
        "stream": True,
    }


def test_a_thinking_block_without_a_signature_is_left_out() -> None:
    messages = history.conversation()
    messages[2]["reasoning_blocks"] = [{"type": "thinking", "thinking": "from elsewhere"}]

    assistant = anthropic_body(request(messages=messages))["messages"][1]

    assert [block["type"] for block in assistant["content"]] == ["text", "tool_use", "tool_use"]


@pytest.mark.parametrize(
    "blocks",
    [
        "thinking",
        [{"type": "thinking"}],
        [{"type": "thinking", "thinking": "x", "signature": 7}],
        [{"type": "redacted_thinking", "data": ""}],
        [{"type": "summary", "text": "x"}],
    ],
)
def test_malformed_reasoning_blocks_fail_validation(blocks: Any) -> None:
    messages = history.conversation()
    messages[2]["reasoning_blocks"] = blocks

    with pytest.raises(ValidationFailed, match="reasoning"):
        AnthropicProvider(None, SETTINGS).prepare(request(messages=messages))  # type: ignore[arg-type]
