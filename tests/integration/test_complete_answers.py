"""`payload.stream: false` through the real stack: every provider's answer comes back as one
OpenAI `chat.completion` in the Klai success envelope, and `options.rawResponse` adds what
the provider itself streamed (its native frames, per call)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import HOOKED_KEY, Stack
from tests.fake_llm import TEXT, FakeLlm

GEMINI_KEY = "fake-gemini-request-key"  # the stack holds no Gemini key


def request(provider: str, model: str, *, raw: bool = False, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "stream": False,
        "messages": [{"role": "user", "content": "Say hello."}],
        **extra.pop("payload", {}),
    }
    if provider == "gemini":
        payload["apiKey"] = GEMINI_KEY
    return {"actionName": "onAnswer", "payload": payload, "options": {"rawResponse": raw}, **extra}


async def post(stack: Stack, path: str, body: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        return await client.post(path, json=body, headers={"x-api-key": stack.api_key})


def completion_of(r: httpx.Response, model: str) -> dict[str, Any]:
    """The Klai envelope checked; its `data`, checked to be a whole `chat.completion`."""
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["success"] is True and answer["actionName"] == "onAnswer"
    data = answer["data"]
    assert data["id"] == "chatcmpl-" + answer["streamId"].removeprefix("st_")
    assert data["object"] == "chat.completion" and data["model"] == model
    assert isinstance(data["created"], int) and data["created"] > 1_700_000_000
    [choice] = data["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    return dict(data)


# (provider, its text with fake-text, usage the fake reports)
TEXT_PROVIDERS = [
    ("openai", TEXT, (12, 30)),
    ("fakecompat", TEXT, (12, 30)),
    ("azure", TEXT, (12, 30)),
    ("anthropic", TEXT + " ", (25, 33)),  # the fake sends every word with a space after it
    ("gemini", TEXT, (12, 30)),
]


@pytest.mark.parametrize(("provider", "text", "usage"), TEXT_PROVIDERS)
@pytest.mark.parametrize("path", ["/stream/create", "/llm/query"])
async def test_every_provider_answers_one_chat_completion(
    stack: Stack, provider: str, text: str, usage: tuple[int, int], path: str
) -> None:
    data = completion_of(await post(stack, path, request(provider, "fake-text")), "fake-text")
    [choice] = data["choices"]
    assert choice["message"] == {"role": "assistant", "content": text}
    assert choice["finish_reason"] == "stop"
    prompt, completion = usage
    assert data["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "estimated": False,
    }
    assert "raw_response" not in data


def _openai_text(frames: list[dict[str, Any]]) -> str:
    deltas = [c["delta"] for f in frames for c in f["choices"]]
    return "".join(d.get("content") or "" for d in deltas)


@pytest.mark.parametrize("provider", ["openai", "fakecompat", "azure"])
async def test_raw_response_holds_the_chat_completion_chunks(stack: Stack, provider: str) -> None:
    data = completion_of(
        await post(stack, "/llm/query", request(provider, "fake-text", raw=True)), "fake-text"
    )
    raw = data["raw_response"]
    assert raw["provider"] == provider and raw["truncated"] is False
    [frames] = raw["rounds"]
    assert all(f["object"] == "chat.completion.chunk" for f in frames)
    assert _openai_text(frames) == TEXT
    assert frames[-1]["usage"]["total_tokens"] == 42  # the usage chunk; [DONE] is left out


async def test_raw_response_holds_anthropic_events(stack: Stack) -> None:
    data = completion_of(
        await post(stack, "/llm/query", request("anthropic", "fake-text", raw=True)), "fake-text"
    )
    [frames] = data["raw_response"]["rounds"]
    types = [f["type"] for f in frames]
    assert types[:3] == ["message_start", "ping", "content_block_start"]
    assert types[-2:] == ["message_delta", "message_stop"]
    assert frames[0]["message"]["id"] == "msg_fake"
    text = "".join(f["delta"]["text"] for f in frames if f["type"] == "content_block_delta")
    assert text == data["choices"][0]["message"]["content"]


async def test_raw_response_holds_gemini_responses(stack: Stack) -> None:
    data = completion_of(
        await post(stack, "/stream/create", request("gemini", "fake-text", raw=True)), "fake-text"
    )
    [frames] = data["raw_response"]["rounds"]
    parts = [p for f in frames for p in f["candidates"][0]["content"]["parts"]]
    assert "".join(p["text"] for p in parts) == TEXT
    assert frames[-1]["candidates"][0]["finishReason"] == "STOP"
    assert frames[-1]["usageMetadata"]["promptTokenCount"] == 12
    # The request's own key is not in what the caller gets back, frames included.
    assert GEMINI_KEY not in json.dumps(data)


async def test_bedrock_answers_with_its_tool_calls_and_its_converse_events(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    # fake-tool-loop asks for ui_get_color in round 1; maxToolRounds 0 leaves the call to
    # the caller, as stream:false must (nobody can answer a frontend tool here).
    tools = [{"type": "function", "function": {"name": "get_color"}}]
    body = request("bedrock", "fake-tool-loop", raw=True, payload={"tools": tools})
    body["options"]["maxToolRounds"] = 0
    data = completion_of(await post(stack, "/llm/query", body), "fake-tool-loop")
    [choice] = data["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me look. "
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "ui_get_color"
    assert json.loads(call["function"]["arguments"])["shade"] == "warm"
    assert choice["message"]["reasoning_content"]  # the signed thinking the fake sends
    [frames] = data["raw_response"]["rounds"]
    kinds = [next(iter(f)) for f in frames]
    assert kinds[0] == "messageStart" and "messageStop" in kinds and kinds[-1] == "metadata"
    assert "contentBlockDelta" in kinds
    assert fake_llm.last("/converse-stream").path.endswith("fake-tool-loop/converse-stream")


async def test_raw_response_has_one_list_per_call_of_the_tool_loop(stack: Stack) -> None:
    # fake-tools asks for get_weather every time; the app's webhook answers it once, then
    # the round limit leaves the second call to the caller.
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    body = request("openai", "fake-tools", raw=True, payload={"tools": tools})
    body["options"]["maxToolRounds"] = 1
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        r = await client.post("/llm/query", json=body, headers={"x-api-key": HOOKED_KEY})
    data = completion_of(r, "fake-tools")
    assert data["choices"][0]["finish_reason"] == "tool_calls"
    rounds = data["raw_response"]["rounds"]
    assert len(rounds) == 2
    for frames in rounds:
        names = [
            call["function"].get("name")
            for f in frames
            for c in f["choices"]
            for call in c["delta"].get("tool_calls") or []
        ]
        assert "get_weather" in names


async def test_mock_has_no_native_frames(stack: Stack) -> None:
    body = request("mock", "echo", raw=True, payload={"providerArgs": {"text": "Hi there"}})
    data = completion_of(await post(stack, "/llm/query", body), "echo")
    assert data["choices"][0]["message"]["content"] == "Hi there"
    assert data["raw_response"] == {"provider": "mock", "rounds": [], "truncated": False}
