"""GeminiProvider: request translation, stream normalisation, errors and closing."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr

from streaming_proxy.config import Settings
from streaming_proxy.errors import ProviderNotConfigured, UpstreamError, ValidationFailed
from streaming_proxy.events import (
    Finish,
    ProviderEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    Usage,
)
from streaming_proxy.providers.base import LlmRequest
from streaming_proxy.providers.gemini import GeminiProvider
from streaming_proxy.providers.gemini_request import gemini_body

from . import tool_history as history
from .providers_fixtures import SPLITS, FakeUpstream, fixture_bytes
from .settled import settled

SETTINGS = Settings(
    gemini_api_key=SecretStr("g-server"), gemini_base_url="https://gemini.test/v1beta"
)
HELLO = [{"role": "user", "content": "Bonjour"}]


def request(**kwargs: object) -> LlmRequest:
    fields: dict[str, object] = {"model": "gemini-2.5-flash", "messages": HELLO, **kwargs}
    return settled(LlmRequest(**fields))  # type: ignore[arg-type]


def provider(http: object = None, settings: Settings = SETTINGS) -> GeminiProvider:
    return GeminiProvider(http, settings, call_id=lambda n: f"call_{n}")  # type: ignore[arg-type]


async def run(upstream: FakeUpstream, req: LlmRequest | None = None) -> list[ProviderEvent]:
    async with upstream.client() as http:
        return [event async for event in provider(http).stream(req or request())]


EXPECTED: dict[str, list[ProviderEvent]] = {
    "text.sse": [
        TextDelta("héllo — "),
        Usage(9, None),
        TextDelta("日本語 🎉"),
        Usage(9, 6),
        Usage(9, 7),
        Finish("stop"),
    ],
    "tool_call.sse": [
        TextDelta("Je regarde — 天気"),
        Usage(40, None),
        ToolCallDelta(0, id="call_0", name="get_weather", arguments='{"city": "Zürich"}'),
        ToolCallDelta(1, id="call_1", name="ui_show_map", arguments="{}"),
        Usage(40, 18),
        Finish("tool_calls"),
    ],
    "tool_call_thought_signature.sse": [
        ThinkingDelta("Il faut la météo de deux villes."),
        Usage(52, 30),
        ToolCallDelta(
            0,
            id="call_0",
            name="get_weather",
            arguments='{"city": "Zürich"}',
            signature="CiQBjz1rX0Zsb3JlbnRpbmUtc2lnbmF0dXJlLTAx/+==",
        ),
        ToolCallDelta(1, id="call_1", name="get_weather", arguments='{"city": "東京"}'),
        Usage(52, 54),
        Finish("tool_calls"),
    ],
    "thinking.sse": [
        ThinkingDelta("Réfléchissons… 2 + 2 = 4"),
        Usage(12, 20),
        TextDelta("C'est 4 🎉"),
        Usage(12, 25),
        Finish("length"),
    ],
    "no_usage.sse": [TextDelta("Je ne peux pas — 申し訳"), Finish("content_filter")],
    "blocked_prompt.sse": [Usage(8, None), Finish("content_filter")],
}


@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_stream_normalises_events_however_the_bytes_are_split(name: str, split: str) -> None:
    data = fixture_bytes(f"gemini/{name}")
    assert not data.isascii()  # so that the mid_utf8 split really cuts inside characters
    upstream = FakeUpstream(SPLITS[split](data))

    assert await run(upstream) == EXPECTED[name]
    assert upstream.body.closed


@pytest.mark.parametrize("split", sorted(SPLITS))
async def test_error_object_in_the_stream_raises_with_its_message(split: str) -> None:
    data = fixture_bytes("gemini/error.sse")
    assert not data.isascii()  # so that the mid_utf8 split really cuts inside characters
    upstream = FakeUpstream(SPLITS[split](data))
    seen: list[ProviderEvent] = []

    async with upstream.client() as http:
        with pytest.raises(UpstreamError) as caught:
            async for event in provider(http).stream(request()):
                seen.append(event)

    assert seen == [TextDelta("héllo")]
    assert "The model is overloaded — réessayez." in caught.value.message
    assert caught.value.upstream_status == 503
    assert caught.value.status == 502
    assert upstream.body.closed


@pytest.mark.parametrize(
    ("status", "code", "mapped"),
    [(400, "INVALID_ARGUMENT", 400), (429, "RESOURCE_EXHAUSTED", 429), (500, "INTERNAL", 502)],
)
async def test_http_error_body_becomes_upstream_error(status: int, code: str, mapped: int) -> None:
    upstream = FakeUpstream.error(
        status, [{"error": {"code": status, "message": f"Nope: {code}", "status": code}}]
    )

    with pytest.raises(UpstreamError) as caught:
        await run(upstream)

    assert caught.value.status == mapped
    assert f"Nope: {code}" in caught.value.message
    assert upstream.body.closed


async def test_response_is_closed_when_the_consumer_stops_early() -> None:
    upstream = FakeUpstream(SPLITS["byte_by_byte"](fixture_bytes("gemini/text.sse")))

    async with upstream.client() as http:
        events = provider(http).stream(request())
        async for event in events:
            if isinstance(event, TextDelta):
                break
        await events.aclose()  # type: ignore[attr-defined]

    assert upstream.body.closed
    assert upstream.body.sent < len(upstream.body.reads)


async def test_request_url_key_and_body() -> None:
    upstream = FakeUpstream([fixture_bytes("gemini/text.sse")])

    await run(upstream, request(model="models/gemini-2.5-flash"))

    sent = upstream.request
    assert str(sent.url) == (
        "https://gemini.test/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    assert sent.headers["x-goog-api-key"] == "g-server"
    assert upstream.sent_json() == {"contents": [{"role": "user", "parts": [{"text": "Bonjour"}]}]}


def test_generated_call_ids_are_unique_per_stream() -> None:
    from streaming_proxy.providers.gemini import _random_call_id

    assert _random_call_id(0) != _random_call_id(0)
    assert _random_call_id(3).startswith("call_")


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        [{"role": "system", "content": "Be brief."}],
        [],
    ],
)
def test_last_message_must_be_from_the_user(messages: list[dict[str, object]]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        provider().prepare(request(messages=messages))

    assert caught.value.status == 400
    assert caught.value.message == "Gemini requires the last message to be from the user"


@pytest.mark.parametrize("model", [None, "", "../../files", "gemini?x=1"])
def test_model_is_required_and_must_be_a_plain_name(model: str | None) -> None:
    with pytest.raises(ValidationFailed, match="model"):
        provider().prepare(request(model=model))


def test_prepare_without_any_key_is_not_configured() -> None:
    with pytest.raises(ProviderNotConfigured):
        provider(settings=Settings(gemini_api_key=None)).prepare(request())


def test_messages_system_images_tool_calls_and_results() -> None:
    jpeg = base64.b64encode(b"\xff\xd8 fake").decode()
    body = gemini_body(
        request(
            messages=[
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Weather here?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/jpeg;base64,{jpeg}"},
                        },
                        {"type": "image_url", "image_url": {"url": "https://img.test/a.png?s=1"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "Bern"}'},
                        },
                        {
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "time", "arguments": "{}"},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21}'},
                {"role": "tool", "tool_call_id": "c2", "content": "12:00"},
            ]
        )
    )

    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "Weather here?"},
                {"inlineData": {"mimeType": "image/jpeg", "data": jpeg}},
                {"fileData": {"mimeType": "image/png", "fileUri": "https://img.test/a.png?s=1"}},
            ],
        },
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "weather", "args": {"city": "Bern"}}},
                {"functionCall": {"name": "time", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "weather", "response": {"temp": 21}}},
                {"functionResponse": {"name": "time", "response": {"output": "12:00"}}},
            ],
        },
    ]


@pytest.mark.parametrize(
    "messages",
    [
        [
            {"role": "user", "content": "x"},
            {"role": "tool", "tool_call_id": "nope", "name": "weather", "content": "1"},
        ],
        [*history.conversation()[:3], {"role": "tool", "tool_call_id": "nope", "content": "1"}],
    ],
)
def test_tool_result_for_an_unknown_call_fails_validation(
    messages: list[dict[str, object]],
) -> None:
    with pytest.raises(ValidationFailed, match="'nope', which no earlier assistant tool_calls"):
        provider().prepare(request(messages=messages))


@pytest.mark.parametrize("signed_call", [0, 1, None])
async def test_a_tool_round_goes_back_in_gemini_format(signed_call: int | None) -> None:
    upstream = FakeUpstream([fixture_bytes("gemini/text.sse")])

    await run(upstream, request(messages=history.conversation(signed_call=signed_call)))

    calls = [
        {"functionCall": {"name": "ui_get_color", "args": history.COLOR_ARGS}},
        {"functionCall": {"name": "lookup_stock", "args": history.STOCK_ARGS}},
    ]
    if signed_call is not None:
        calls[signed_call]["thoughtSignature"] = history.GEMINI_SIGNATURE
    assert upstream.sent_json() == {
        "systemInstruction": {"parts": [{"text": history.SYSTEM}]},
        "contents": [
            {"role": "user", "parts": [{"text": history.QUESTION}]},
            {"role": "model", "parts": [{"text": history.TEXT}, *calls]},
            {
                "role": "user",
                "parts": [
                    {
                        "functionResponse": {
                            "name": "ui_get_color",
                            "response": history.COLOR_RESULT,
                        }
                    },
                    {
                        "functionResponse": {
                            "name": "lookup_stock",
                            "response": history.STOCK_RESULT,
                        }
                    },
                ],
            },
        ],
    }


def test_a_thought_signature_that_is_not_a_string_fails_validation() -> None:
    messages = history.conversation(signed_call=None)
    messages[2]["tool_calls"][0]["thought_signature"] = {"bytes": "x"}

    with pytest.raises(ValidationFailed, match="thought_signature"):
        provider().prepare(request(messages=messages))


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Weather for a city",
            "parameters": {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {"city": {"type": ["string", "null"], "description": "City"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "now", "parameters": {"type": "object", "properties": {}}},
    },
]


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "now"}},
            {"mode": "ANY", "allowedFunctionNames": ["now"]},
        ),
    ],
)
def test_tools_and_tool_choice(choice: str | dict[str, object], config: dict[str, object]) -> None:
    body = gemini_body(request(tools=TOOLS, tool_choice=choice))

    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "weather",
                    "description": "Weather for a city",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "city": {"type": "string", "nullable": True, "description": "City"}
                        },
                        "required": ["city"],
                    },
                },
                {"name": "now"},
            ]
        }
    ]
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_generation_config_and_provider_args() -> None:
    body = gemini_body(
        request(
            generation_config={"temperature": 0.1, "topK": 40},
            provider_args={
                "temperature": 0.1,
                "top_p": 0.5,
                "max_tokens": 200,
                "stop": "END",
                "thinking_config": {"thinkingBudget": 0},
                "safety_settings": [
                    {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}
                ],
            },
        )
    )

    assert body["generationConfig"] == {
        "temperature": 0.1,
        "topK": 40,
        "topP": 0.5,
        "maxOutputTokens": 200,
        "stopSequences": ["END"],
        "thinkingConfig": {"thinkingBudget": 0},
    }
    assert body["safetySettings"] == [
        {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}
    ]
