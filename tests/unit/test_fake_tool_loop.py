"""The tool-loop fakes, through the real adapters: round 1 asks for the tool, round 2 with
the result in the provider's format answers, and a wrong format is the fake's HTTP 400.

The HTTP fakes run in process (httpx's ASGI transport, no network); Bedrock's is the fake
client of tests/fake_bedrock.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from streaming_proxy.config import Settings
from streaming_proxy.errors import UpstreamError
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
from streaming_proxy.providers.anthropic import AnthropicProvider
from streaming_proxy.providers.base import LlmRequest, Provider
from streaming_proxy.providers.bedrock import BedrockProvider
from streaming_proxy.providers.gemini import GeminiProvider
from streaming_proxy.providers.openai import OpenAIProvider
from tests.fake_bedrock import FakeBedrock
from tests.fake_llm import FakeLlm
from tests.fake_tool_loop import COLOR_ARGS, STOCK_ARGS, THINKING, WrongFormat, next_turn

PROVIDERS = ["openai", "anthropic", "gemini", "bedrock"]
QUESTION = [{"role": "user", "content": "Pick me a colour."}]
RED = {"success": True, "message": "red"}
IN_STOCK = {"success": True, "message": "4 left"}


class Fakes:
    """Every adapter, pointed at the fakes."""

    def __init__(self, llm: FakeLlm, http: httpx.AsyncClient) -> None:
        self.llm = llm
        self.bedrock = FakeBedrock()
        key = SecretStr("fake-key")
        settings = Settings(
            anthropic_api_key=key,
            anthropic_base_url="http://fake/v1",
            gemini_api_key=key,
            gemini_base_url="http://fake/v1beta",
            bedrock_region="eu-central-1",
        )
        self.adapters: dict[str, Callable[[], Provider]] = {
            "openai": lambda: OpenAIProvider("openai", http, "http://fake/v1", key),
            "anthropic": lambda: AnthropicProvider(http, settings),
            "gemini": lambda: GeminiProvider(http, settings),
            "bedrock": lambda: BedrockProvider(settings, client_factory=self.bedrock.factory),
        }

    async def run(self, provider: str, model: str, messages: list[dict[str, Any]]) -> list[Any]:
        adapter = self.adapters[provider]()
        request = LlmRequest(model=model, messages=messages)
        return [event async for event in adapter.stream(request)]


@asynccontextmanager
async def fakes() -> AsyncIterator[Fakes]:
    llm = FakeLlm()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=llm.app())) as http:
        yield Fakes(llm, http)


def assistant_turn(events: list[ProviderEvent]) -> dict[str, Any]:
    """The model's turn as the tool loop sends it back (the proxy's fixed format)."""
    text: list[str] = []
    thinking: list[str] = []
    blocks: list[dict[str, Any]] = []
    calls: dict[int, dict[str, Any]] = {}
    for event in events:
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, ThinkingDelta):
            thinking.append(event.text)
        elif isinstance(event, ThinkingSignature):
            block = {
                "type": "thinking",
                "thinking": "".join(thinking),
                "signature": event.signature,
            }
            blocks.append(block)
            thinking.clear()
        elif isinstance(event, RedactedThinking):
            blocks.append({"type": "redacted_thinking", "data": event.data})
        elif isinstance(event, ToolCallDelta):
            _add_fragment(calls, event)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if blocks:
        message["reasoning_blocks"] = blocks
    message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message


def _add_fragment(calls: dict[int, dict[str, Any]], event: ToolCallDelta) -> None:
    call = calls.setdefault(
        event.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
    )
    call["id"] = event.id or call["id"]
    call["function"]["name"] = event.name or call["function"]["name"]
    call["function"]["arguments"] += event.arguments
    if event.signature:
        call["thought_signature"] = event.signature


def results(turn: dict[str, Any], *values: dict[str, Any]) -> list[dict[str, Any]]:
    calls = turn["tool_calls"]
    return [
        {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(value)}
        for call, value in zip(calls, values, strict=True)
    ]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_one_tool_round_trips_through_the_adapter(provider: str) -> None:
    async with fakes() as f:
        first = await f.run(provider, "fake-tool-loop", QUESTION)
        turn = assistant_turn(first)
        second = await f.run(provider, "fake-tool-loop", [*QUESTION, turn, *results(turn, RED)])

    assert turn["content"] == "Let me look. "
    [call] = turn["tool_calls"]
    assert call["function"]["name"] == "ui_get_color"
    assert json.loads(call["function"]["arguments"]) == COLOR_ARGS
    assert Finish("tool_calls") in first
    signed = [b for b in turn.get("reasoning_blocks", []) if b["signature"]]
    assert [b["thinking"] for b in signed] == (
        [THINKING] if provider in ("anthropic", "bedrock") else []
    )
    assert ("thought_signature" in call) is (provider == "gemini")
    assert "".join(e.text for e in second if isinstance(e, TextDelta)) == "The colour is red."
    assert Finish("stop") in second
    assert any(isinstance(e, Usage) and e.completion_tokens for e in second)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_two_parallel_calls_round_trip_and_both_results_are_quoted(provider: str) -> None:
    async with fakes() as f:
        turn = assistant_turn(await f.run(provider, "fake-tool-loop-parallel", QUESTION))
        answer = [*QUESTION, turn, *results(turn, RED, IN_STOCK)]
        second = await f.run(provider, "fake-tool-loop-parallel", answer)

    calls = turn["tool_calls"]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("ui_get_color", COLOR_ARGS),
        ("lookup_stock", STOCK_ARGS),
    ]
    assert "thought_signature" not in calls[1]
    text = "".join(e.text for e in second if isinstance(e, TextDelta))
    assert text == "The colour is red. The stock is 4 left."


# Each spoils one round in its own way: what follows the question in the next request.
def _without_reasoning(turn: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in turn.items() if k != "reasoning_blocks"}, *results(turn, RED)]


def _without_signature(turn: dict[str, Any]) -> list[dict[str, Any]]:
    calls = [{k: v for k, v in c.items() if k != "thought_signature"} for c in turn["tool_calls"]]
    return [{**turn, "tool_calls": calls}, *results(turn, RED)]


def _result_as_user_text(turn: dict[str, Any]) -> list[dict[str, Any]]:
    return [turn, {"role": "user", "content": json.dumps(RED)}]


@pytest.mark.parametrize(
    ("provider", "spoil", "complaint"),
    [
        ("anthropic", _without_reasoning, "thinking block did not come back with its signature"),
        ("bedrock", _without_reasoning, "thinking block did not come back with its signature"),
        ("gemini", _without_signature, "came back with thoughtSignature None"),
        ("openai", _result_as_user_text, "expected 1 tool results right after the model's turn"),
    ],
)
async def test_a_round_in_the_wrong_format_is_the_fakes_400(
    provider: str, spoil: Callable[[dict[str, Any]], list[dict[str, Any]]], complaint: str
) -> None:
    async with fakes() as f:
        turn = assistant_turn(await f.run(provider, "fake-tool-loop", QUESTION))
        with pytest.raises(UpstreamError) as caught:
            await f.run(provider, "fake-tool-loop", [*QUESTION, *spoil(turn)])

    assert caught.value.upstream_status == 400
    assert complaint in caught.value.message


async def test_fake_tool_forever_asks_again_every_round_with_new_ids() -> None:
    async with fakes() as f:
        conversation = list(QUESTION)
        ids = []
        for _ in range(3):
            turn = assistant_turn(await f.run("anthropic", "fake-tool-forever", conversation))
            ids.append(turn["tool_calls"][0]["id"])
            conversation += [turn, *results(turn, RED)]
        sent = [r.body for r in f.llm.requests]

    assert ids == ["toolu_color_1", "toolu_color_2", "toolu_color_3"]
    assert [len(body["messages"]) for body in sent] == [1, 3, 5]


BAD_BODIES: list[tuple[str, dict[str, Any], str]] = [
    (
        "openai",
        {
            "messages": [
                *QUESTION,
                {
                    "role": "assistant",
                    "content": "Let me look. ",
                    "reasoning_blocks": [],
                    "tool_calls": [],
                },
            ]
        },
        "fields this API does not know: reasoning_blocks",
    ),
    (
        "anthropic",
        {
            "messages": [
                *QUESTION,
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "thinking",
                            "thinking": THINKING,
                            "signature": "fake-thinking-sig-1",
                        },
                        {"type": "text", "text": "Let me look. "},
                        {
                            "type": "tool_use",
                            "id": "toolu_color_1",
                            "name": "ui_get_color",
                            "input": COLOR_ARGS,
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_color_1",
                            "content": '{"success": false, "message": "no"}',
                        }
                    ],
                },
            ]
        },
        "is_error must be true exactly when the result has success: false",
    ),
    (
        "converse",
        {
            "messages": [
                {"role": "user", "content": [{"text": "Pick"}]},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "reasoningContent": {
                                "reasoningText": {
                                    "text": THINKING,
                                    "signature": "fake-thinking-sig-1",
                                }
                            }
                        },
                        {"text": "Let me look. "},
                        {
                            "toolUse": {
                                "toolUseId": "tooluse_color_1",
                                "name": "ui_get_color",
                                "input": COLOR_ARGS,
                            }
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "toolResult": {
                                "toolUseId": "tooluse_color_1",
                                "content": [{"text": json.dumps(RED)}],
                            }
                        }
                    ],
                },
            ]
        },
        "a JSON object result must be sent as a json block, not as text",
    ),
]


@pytest.mark.parametrize(("wire", "body", "complaint"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_the_fakes_name_format_rules_the_adapters_never_break(
    wire: Any, body: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(WrongFormat, match=complaint):
        next_turn(wire, "fake-tool-loop", body)
