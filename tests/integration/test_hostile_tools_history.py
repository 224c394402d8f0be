"""A caller's tool round in the history it sends (or a thread holds), written to break the
translation to other providers' formats: `NaN`, `1e999`, a lone surrogate or deep nesting
inside the JSON text of a call's arguments or a tool's result. The request body is JSON;
these are strings in it, parsed only when an adapter translates them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.fake_llm import FakeLlm


def body(provider: str, arguments: str, result: str) -> dict[str, Any]:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": result},
    ]
    payload = {"provider": provider, "model": "fake-text", "messages": messages, "stream": False}
    return {"channels": [], "payload": {**payload, "apiKey": "caller-key-" + "x" * 12}}


DEEP = '{"r": ' * 3000 + "1" + "}" * 3000


async def post(stack: Stack, data: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        return await client.post("/llm/query", json=data, headers={"x-api-key": stack.api_key})


@pytest.mark.parametrize("provider", ["anthropic", "gemini", "bedrock"])
@pytest.mark.parametrize(
    "arguments", ['{"a": NaN}', '{"a": 1e999}', DEEP], ids=["nan", "1e999", "deep"]
)
async def test_call_arguments_that_are_no_json_object_are_a_400(
    stack: Stack, provider: str, arguments: str
) -> None:
    r = await post(stack, body(provider, arguments, '{"ok": true}'))
    assert r.status_code == 400, r.text
    assert "tool call arguments must be a JSON object" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("result", "response"),
    [
        ('{"r": NaN}', {"output": '{"r": NaN}'}),
        ('{"r": 1e999}', {"output": '{"r": 1e999}'}),
        (DEEP, {"output": DEEP}),
        ('{"r": "\\ud800"}', {"r": "\ufffd"}),
    ],
    ids=["nan", "1e999", "deep", "surrogate"],
)
async def test_a_result_that_is_no_clean_json_goes_to_gemini_as_its_text(
    stack: Stack, fake_llm: FakeLlm, result: str, response: dict[str, Any]
) -> None:
    r = await post(stack, body("gemini", "{}", result))
    assert r.status_code == 200, r.text
    sent = fake_llm.last(":streamGenerateContent").body["contents"]
    [answer] = [p["functionResponse"] for c in sent for p in c["parts"] if "functionResponse" in p]
    assert answer["response"] == response
