"""The tool loop on every provider, through the real stack: the model (a fake upstream in
the provider's own format) asks for `ui_get_color`, a browser answers over the WebSocket,
and the continuation arrives in the same stream. The fake checks that the second request
carries the model's turn and the result in that provider's exact format (thinking blocks
with their signatures, Gemini's call signatures) and answers 400 otherwise."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import HOOKED_KEY, Stack
from tests.delivery import assert_complete
from tests.fake_llm import FakeLlm
from tests.wsclient import Subscriber

# (provider, the path of its requests on the fake)
PROVIDERS = [
    ("openai", "/chat/completions"),
    ("azure", "/openai/deployments/fake-tool-loop/chat/completions"),
    ("fakecompat", "/chat/completions"),
    ("anthropic", "/messages"),
    ("gemini", ":streamGenerateContent"),
    ("bedrock", "/converse-stream"),
]


def body(channel: str, provider: str, model: str, *tools: str, **options: Any) -> Any:
    payload: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "messages": [{"role": "user", "content": "Pick me a colour."}],
        "tools": [
            {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
            for name in tools or ("ui_get_color",)
        ],
    }
    if provider == "gemini":
        payload["apiKey"] = "fake-gemini-request-key"  # the stack holds no Gemini key
    return {
        "channels": [channel],
        "actionName": "onTools",
        "options": {"flushIntervalMs": 0, **options},
        "payload": payload,
    }


async def answer_calls(sub: Subscriber, stream_id: str, message: str, count: int = 1) -> None:
    """Answer the stream's frontend calls as a page would, `count` of them."""
    for n in range(count):
        call = await sub.wait_for(
            lambda m: (
                m.get("streamId") == stream_id
                and m.get("type") == "llmToolCall"
                and not m.get("_answered")
            )
        )
        call["_answered"] = True
        await sub.send(
            {
                "action": "llmToolCallResponse",
                "toolCallId": call["toolCallId"],
                "success": True,
                "message": f"{message}{n or ''}",
            }
        )


async def start(stack: Stack, request: Any, key: str | None = None) -> str:
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        r = await client.post(
            "/llm/query", json=request, headers={"x-api-key": key or stack.api_key}
        )
    assert r.status_code == 200, r.text
    return str(r.json()["streamId"])


@pytest.mark.parametrize(("provider", "path"), PROVIDERS)
async def test_a_browser_answers_and_the_model_continues_on_every_provider(
    stack: Stack, fake_llm: FakeLlm, provider: str, path: str
) -> None:
    channel = f"loop-{provider}"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        stream_id = await start(stack, body(channel, provider, "fake-tool-loop"))
        await answer_calls(sub, stream_id, "red")
        messages = await sub.stream(stream_id, within=20)
        assert_complete(messages, "Let me look. The colour is red.")
        end = messages[-1]
        assert end["finish_reason"] == "stop"
        # Both rounds' counts, summed: (20 + 35) prompt, (10 + 8) completion.
        assert end["usage"] == {
            "prompt_tokens": 55,
            "completion_tokens": 18,
            "total_tokens": 73,
            "estimated": False,
        }
        rounds = [r for r in fake_llm.requests if r.path.endswith(path)][-2:]
        assert len(rounds) == 2 and rounds[1].body != rounds[0].body
    finally:
        await sub.close()


@pytest.mark.parametrize(("provider", "path"), PROVIDERS)
async def test_a_frontend_and_a_backend_call_in_one_round_on_every_provider(
    stack: Stack, provider: str, path: str
) -> None:
    channel = f"loop-par-{provider}"
    sub = await Subscriber.open(stack.ws, stack.token(channel, api_key=HOOKED_KEY))
    try:
        request = body(channel, provider, "fake-tool-loop-parallel", "ui_get_color", "lookup_stock")
        stream_id = await start(stack, request, HOOKED_KEY)
        await answer_calls(sub, stream_id, "amber")  # lookup_stock runs on the app's webhook
        messages = await sub.stream(stream_id, within=20)
        assert_complete(messages, "Let me look. The colour is amber. The stock is A1: 12 in stock.")
        functions = next(m for m in messages if m["type"] == "function_call")["content"]
        assert [f["name"] for f in functions["functions"]] == ["ui_get_color", "lookup_stock"]
        assert [m["type"] for m in messages].count("llmToolCall") == 1
    finally:
        await sub.close()


@pytest.mark.parametrize(("provider", "path"), PROVIDERS)
async def test_a_model_that_keeps_asking_stops_at_the_round_limit(
    stack: Stack, provider: str, path: str
) -> None:
    channel = f"loop-forever-{provider}"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        request = body(channel, provider, "fake-tool-forever", maxToolRounds=2)
        stream_id = await start(stack, request)
        await answer_calls(sub, stream_id, "again", count=2)
        messages = await sub.stream(stream_id, within=20)
        kinds = [m["type"] for m in messages]
        assert kinds.count("llmToolCall") == 2 and kinds.count("function_call") == 3
        assert messages[-1]["finish_reason"] == "tool_calls"
    finally:
        await sub.close()
