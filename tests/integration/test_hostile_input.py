"""Hostile input: numbers Python's JSON parser reads but JSON has none of (`NaN`,
`Infinity`, `1e999`). Each is a 400 at the edge on every route and WebSocket action;
before, they reached a browser as text `JSON.parse` refuses, or a later JSON writer (the
provider request, a thread's history page) as a 500.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import Stack

NOT_JSON_NUMBERS = [float("nan"), float("-inf")]


def strict(raw: str | bytes) -> Any:
    """A browser's JSON.parse: no NaN, no Infinity."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(raw, parse_constant=refuse)


def hostile(data: Any) -> bytes:
    """`data` as Python writes it with `allow_nan`: `NaN`, `Infinity`, `-Infinity`."""
    return json.dumps(data, allow_nan=True).encode()


async def post(stack: Stack, path: str, body: bytes) -> httpx.Response:
    headers = {"x-api-key": stack.api_key, "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        return await client.post(path, content=body, headers=headers)


async def nothing_arrives(ws: ClientConnection, within: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), within)


def query(stream: bool, **payload: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": "hi"}]
    body = {"provider": "mock", "stream": stream, "messages": messages, **payload}
    return {"channels": ["nan-ch"], "actionName": "onNan", "payload": body}


CASES = [
    ("/message/send", {"channels": ["nan-ch"], "actionName": "onNan", "message": {"v": 0}}),
    ("/llm/query", query(True, providerArgs={"temperature": 0})),
    ("/stream/create/assistants", query(False, metadata={"v": 0})),
    ("/llm/tool-response", {"toolCallId": "tc_nobodyHasThisOne1", "success": True, "data": 0}),
    (
        "/v1/chat/completions",
        {"model": "openai/fake-text", "messages": [{"role": "user", "content": "x"}], "top_p": 0},
    ),
]


def put(value: Any, number: float) -> Any:
    """`value` with each 0 in it replaced by `number`."""
    if isinstance(value, dict):
        return {k: put(v, number) for k, v in value.items()}
    if isinstance(value, list):
        return [put(v, number) for v in value]
    return number if value == 0 and not isinstance(value, bool) else value


@pytest.mark.parametrize("number", NOT_JSON_NUMBERS, ids=["NaN", "-Infinity"])
@pytest.mark.parametrize(("path", "body"), CASES, ids=[path for path, _ in CASES])
async def test_nan_and_infinity_are_a_400_and_reach_no_browser(
    stack: Stack, path: str, body: dict[str, Any], number: float
) -> None:
    async with connect(f"{stack.ws}/?token={stack.token('nan-ch')}") as ws:
        answer = await post(stack, path, hostile(put(body, number)))
        assert answer.status_code == 400, answer.text
        error = strict(answer.text)["error"]
        assert "not valid JSON" in error["message"]
        await nothing_arrives(ws)


async def test_a_number_past_the_float_range_is_a_400_not_a_500(stack: Stack) -> None:
    raw = json.dumps(query(False, providerArgs={"temperature": 0})).replace(": 0}", ": 1e999}")
    answer = await post(stack, "/llm/query", raw.encode())
    assert answer.status_code == 400, answer.text
    assert "1e999 is out of range" in answer.json()["error"]["message"]


async def test_a_thread_message_with_nan_is_refused_before_it_is_stored(stack: Stack) -> None:
    # Stored, it made every later read of the thread's history a 500.
    messages = [{"role": "user", "content": "hi", "note": float("nan")}]
    body = {
        "actionName": "a",
        "payload": {"provider": "mock", "stream": False, "messages": messages},
    }
    answer = await post(stack, "/stream/create/assistants", hostile(body))
    assert answer.status_code == 400, answer.text


async def test_a_browser_message_with_nan_is_an_error_reply(stack: Stack) -> None:
    async with connect(f"{stack.ws}/?token={stack.token('nan-ch')}") as ws:
        await ws.send('{"action": "llmToolCallResponse", "toolCallId": "tc_x", "data": NaN}')
        reply = strict(await asyncio.wait_for(ws.recv(), 5))
        assert reply["type"] == "error" and "not valid JSON" in reply["error"]["message"]


async def test_tool_arguments_with_nan_from_the_model_reach_the_browser_as_valid_json(
    stack: Stack,
) -> None:
    call = {"name": "lookup", "arguments": '{"x": NaN, "userMessage": "hm"}', "id": "c1"}
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    body = query(True, tools=tools, providerArgs={"toolCalls": [call], "delayMs": 0})
    async with connect(f"{stack.ws}/?token={stack.token('nan-ch')}") as ws:
        answer = await post(stack, "/llm/query", json.dumps(body).encode())
        assert answer.status_code == 200, answer.text
        frames = []
        while not frames or frames[-1]["type"] != "end":
            frames.append(strict(await asyncio.wait_for(ws.recv(), 10)))
    calls = [f for f in frames if f["type"] == "function_call"]
    assert calls, frames
    # The model's arguments are not JSON: the browser gets them as the model wrote them.
    assert calls[0]["content"]["functions"][0]["arguments"] == call["arguments"]
