"""A tool round sent back by a caller, in the proxy's OpenAI-style format with its extension
fields, reaches each provider in that provider's exact format (the fake upstream checks it
and answers 400 otherwise), through the real local stack."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.fake_llm import FakeLlm
from tests.fake_tool_loop import COLOR_ARGS, THINKING

QUESTION = {"role": "user", "content": "Pick me a colour."}
RESULT = {"success": True, "message": "teal"}
# provider -> (the fake's path, its reasoning blocks for round 1, Gemini's call signature)
PROVIDERS: dict[str, tuple[str, list[dict[str, Any]], str | None]] = {
    "openai": ("/chat/completions", [], None),
    "fakecompat": ("/chat/completions", [], None),
    "anthropic": (
        "/messages",
        [{"type": "thinking", "thinking": THINKING, "signature": "fake-thinking-sig-1"}],
        None,
    ),
    "gemini": (":streamGenerateContent", [], "gemini-sig-color-1"),
}


async def query(stack: Stack, provider: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    payload = {
        "provider": provider,
        "model": "fake-tool-loop",
        "stream": False,
        "messages": messages,
        "apiKey": "fake-gemini-request-key" if provider == "gemini" else None,
    }
    body = {"channels": [], "actionName": "onTool", "payload": payload}
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        r = await client.post("/llm/query", json=body, headers={"x-api-key": stack.api_key})
    assert r.status_code == 200, r.text
    message: dict[str, Any] = r.json()["data"]["choices"][0]["message"]
    return message


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_a_callers_tool_round_reaches_the_provider_in_its_format(
    stack: Stack, fake_llm: FakeLlm, provider: str
) -> None:
    path, reasoning, signature = PROVIDERS[provider]

    first = await query(stack, provider, [QUESTION])
    [call] = first["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == COLOR_ARGS
    turn: dict[str, Any] = {"role": "assistant", "content": first["content"], "tool_calls": [call]}
    if reasoning:
        turn["reasoning_blocks"] = reasoning
    if signature:
        call["thought_signature"] = signature
    result = {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(RESULT)}

    second = await query(stack, provider, [QUESTION, turn, result])

    assert second["content"] == "The colour is teal."
    sent = json.dumps(fake_llm.last(path).body)
    assert ("reasoning_blocks" in sent, "thought_signature" in sent) == (False, False)
