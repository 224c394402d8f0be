"""Conformance: the message, tool and toolChoice shapes of the Klai Chat and LLM Query pages
(OpenAI, Gemini and Anthropic styles, Klai's bare `ui_tool_hello_world`) are accepted by the
real stack and reach each provider in that provider's own format, byte for byte as asserted
on the fake upstream; what cannot be translated is refused naming the field, before any
provider is called."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.fake_llm import FakeLlm
from tests.integration.test_bad_input import assert_klai_error

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(32))).decode("ascii")
# Where each provider's requests land on the fake upstream.
PATHS = {
    "openai": "/v1/chat/completions",
    "azure": "/openai/deployments/fake-text/chat/completions",
    "anthropic": "/v1/messages",
    "gemini": "/v1beta/models/fake-text:streamGenerateContent",
    "bedrock": "/model/fake-text/converse-stream",
}
# Klai's own frontend-tool example, in its bare shape.
HELLO_TOOL = {
    "name": "ui_tool_hello_world",
    "description": "Show a hello world message in the browser",
    "parameters": {"type": "object", "properties": {"name": {"type": "string"}}},
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def send(
    stack: Stack, path: str, provider: str, *, stream: bool = False, **payload: Any
) -> httpx.Response:
    """A Klai body for `provider` (model `fake-text` on the fake upstream)."""
    body: dict[str, Any] = {"payload": {"provider": provider, "model": "fake-text", **payload}}
    body["payload"]["stream"] = stream
    if provider == "gemini":
        body["payload"]["apiKey"] = "fake-gemini-request-key"  # the stack holds no Gemini key
    if stream:
        body.update(channels=["contract-messages"], actionName="onLlmMessage")
    return httpx.post(
        f"{stack.http}{path}", json=body, headers={"x-api-key": stack.api_key}, timeout=30
    )


def received(
    stack: Stack, fake_llm: FakeLlm, path: str, provider: str, **payload: Any
) -> dict[str, Any]:
    """The body the provider received for a request that succeeded."""
    before = len(fake_llm.requests)
    r = send(stack, path, provider, **payload)
    assert r.status_code == 200, r.text
    assert len(fake_llm.requests) == before + 1
    recorded = fake_llm.requests[-1]
    assert recorded.path == PATHS[provider]
    return recorded.body


# -- Chat (`/stream/create`) -----------------------------------------------------------------


def test_chat_openai_messages_reach_openai_as_sent(stack: Stack, fake_llm: FakeLlm) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Write a haiku about FileMaker."},
    ]
    body = received(stack, fake_llm, "/stream/create", "openai", messages=messages)
    assert body["messages"] == messages


def test_chat_gemini_parts_arrive_as_gemini_contents(stack: Stack, fake_llm: FakeLlm) -> None:
    body = received(
        stack,
        fake_llm,
        "/stream/create",
        "gemini",
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "parts": [{"text": "Hello"}]},
            {"role": "model", "parts": [{"text": "Hi! How can I help?"}]},
            {
                "role": "user",
                "parts": [
                    {"text": "What is in this image?"},
                    {"inlineData": {"mimeType": "image/png", "data": PNG}},
                ],
            },
        ],
    )
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Hello"}]},
        {"role": "model", "parts": [{"text": "Hi! How can I help?"}]},
        {
            "role": "user",
            "parts": [
                {"text": "What is in this image?"},
                {"inlineData": {"mimeType": "image/png", "data": PNG}},
            ],
        },
    ]
    assert body["systemInstruction"] == {"parts": [{"text": "Answer briefly."}]}


# The same Gemini text part in each other provider's terms.
HELLO_AS = {
    "openai": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
    "anthropic": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
    "bedrock": [{"role": "user", "content": [{"text": "Hello"}]}],
}


@pytest.mark.parametrize("provider", sorted(HELLO_AS))
def test_chat_gemini_parts_reach_every_other_provider(
    stack: Stack, fake_llm: FakeLlm, provider: str
) -> None:
    messages = [{"role": "user", "parts": [{"text": "Hello"}]}]
    body = received(stack, fake_llm, "/stream/create", provider, messages=messages)
    assert body["messages"] == HELLO_AS[provider]


# -- LLM Query (`/llm/query`): content blocks and images ------------------------------------

ANTHROPIC_BLOCKS = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Describe this picture."},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        ],
    }
]


def test_anthropic_content_blocks_reach_anthropic_as_blocks(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    body = received(stack, fake_llm, "/llm/query", "anthropic", messages=ANTHROPIC_BLOCKS)
    assert body["messages"] == ANTHROPIC_BLOCKS


@pytest.mark.parametrize(
    ("provider", "image"),
    [
        ("openai", {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}),
        ("gemini", {"inlineData": {"mimeType": "image/png", "data": PNG}}),
        ("bedrock", {"image": {"format": "png", "source": {"bytes": PNG}}}),
    ],
)
def test_anthropic_image_blocks_reach_every_provider_as_its_image(
    stack: Stack, fake_llm: FakeLlm, provider: str, image: dict[str, Any]
) -> None:
    body = received(stack, fake_llm, "/llm/query", provider, messages=ANTHROPIC_BLOCKS)
    parts = body["contents" if provider == "gemini" else "messages"][0]
    content = parts["parts" if provider == "gemini" else "content"]
    assert content[1] == image


# -- Tools ------------------------------------------------------------------------------------

# The bare tool as each provider declares a function.
DECLARED = {
    "openai": ("tools", [{"type": "function", "function": HELLO_TOOL}]),
    "azure": ("tools", [{"type": "function", "function": HELLO_TOOL}]),
    "anthropic": (
        "tools",
        [
            {
                "name": "ui_tool_hello_world",
                "description": HELLO_TOOL["description"],
                "input_schema": HELLO_TOOL["parameters"],
            }
        ],
    ),
    "gemini": ("tools", [{"functionDeclarations": [HELLO_TOOL]}]),
    "bedrock": (
        "toolConfig",
        {
            "tools": [
                {
                    "toolSpec": {
                        "name": "ui_tool_hello_world",
                        "description": HELLO_TOOL["description"],
                        "inputSchema": {"json": HELLO_TOOL["parameters"]},
                    }
                }
            ]
        },
    ),
}


@pytest.mark.parametrize("provider", sorted(DECLARED))
def test_klais_bare_hello_world_tool_arrives_as_a_function_declaration(
    stack: Stack, fake_llm: FakeLlm, provider: str
) -> None:
    before = len(fake_llm.requests)
    # A frontend (ui_) tool runs in a browser on the channels: only a streamed query takes it.
    r = send(
        stack,
        "/llm/query",
        provider,
        stream=True,
        messages=[{"role": "user", "content": "Say hello to Ada."}],
        tools=[HELLO_TOOL],
    )
    assert r.status_code == 200 and r.json()["success"] is True, r.text
    recorded = fake_llm.requests[before]
    assert recorded.path == PATHS[provider]
    key, declared = DECLARED[provider]
    assert recorded.body[key] == declared


# (provider, toolChoice as sent, the provider's own field and value; None: left out)
CHOICES = [
    ("openai", "auto", "tool_choice", "auto"),
    ("openai", "any", "tool_choice", "required"),
    ("openai", "NONE", "tool_choice", "none"),
    (
        "openai",
        {"type": "tool", "name": "get_weather"},
        "tool_choice",
        {"type": "function", "function": {"name": "get_weather"}},
    ),
    (
        "azure",
        {"name": "get_weather"},
        "tool_choice",
        {"type": "function", "function": {"name": "get_weather"}},
    ),
    ("anthropic", "required", "tool_choice", {"type": "any"}),
    ("anthropic", "AUTO", "tool_choice", {"type": "auto"}),
    ("anthropic", "none", "tool_choice", {"type": "none"}),
    (
        "anthropic",
        {"type": "function", "function": {"name": "get_weather"}},
        "tool_choice",
        {"type": "tool", "name": "get_weather"},
    ),
    ("gemini", "ANY", "toolConfig", {"functionCallingConfig": {"mode": "ANY"}}),
    ("gemini", "none", "toolConfig", {"functionCallingConfig": {"mode": "NONE"}}),
    ("gemini", "auto", "toolConfig", {"functionCallingConfig": {"mode": "AUTO"}}),
    (
        "gemini",
        {"name": "get_weather"},
        "toolConfig",
        {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
    ),
    ("bedrock", "any", "toolChoice", {"any": {}}),
    (
        "bedrock",
        {"type": "tool", "name": "get_weather"},
        "toolChoice",
        {"tool": {"name": "get_weather"}},
    ),
    ("bedrock", "auto", "toolChoice", None),  # auto is Converse's default, and all it takes
]


@pytest.mark.parametrize(("provider", "choice", "field", "native"), CHOICES)
def test_every_tool_choice_spelling_arrives_in_the_providers_own_terms(
    stack: Stack, fake_llm: FakeLlm, provider: str, choice: Any, field: str, native: Any
) -> None:
    body = received(
        stack,
        fake_llm,
        "/llm/query",
        provider,
        messages=[{"role": "user", "content": "Weather in Amsterdam?"}],
        tools=[WEATHER_TOOL],
        toolChoice=choice,
    )
    where = body["toolConfig"] if provider == "bedrock" else body
    assert where.get(field) == native
    if provider == "bedrock":
        assert where["tools"][0]["toolSpec"]["name"] == "get_weather"


def test_tool_choice_none_on_bedrock_leaves_the_tools_out(stack: Stack, fake_llm: FakeLlm) -> None:
    # Converse cannot say "none": sending no tools is the same thing.
    body = received(
        stack,
        fake_llm,
        "/llm/query",
        "bedrock",
        messages=[{"role": "user", "content": "Just talk."}],
        tools=[WEATHER_TOOL],
        toolChoice="none",
    )
    assert "toolConfig" not in body


# -- What cannot be translated ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (
            {
                "messages": [
                    {"role": "user", "parts": [{"text": "a"}, {"functionCall": {"name": "f"}}]}
                ]
            },
            "payload.messages.0.parts.1",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t", "name": "f"}],
                    },
                ]
            },
            "payload.messages.1.content.0",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "parts": [{"inlineData": {"mimeType": "audio/mp3", "data": "AAAA"}}],
                    }
                ]
            },
            "payload.messages.0.parts.0",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}], "toolChoice": {"type": "tool"}},
            "payload.toolChoice",
        ),
    ],
)
@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_an_untranslatable_field_is_refused_by_name_and_no_provider_is_called(
    stack: Stack, fake_llm: FakeLlm, provider: str, payload: dict[str, Any], field: str
) -> None:
    before = len(fake_llm.requests)
    r = send(stack, "/llm/query", provider, stream=True, **payload)
    error = assert_klai_error(r, 400, "invalid_request")
    assert field in json.dumps(error)
    assert len(fake_llm.requests) == before
