"""A page's credentials never become part of a tool answer: a Klai page may send its
subscribe token (or a careless one the app key) inside `llmToolCallResponse`. The answer
goes to the model and into the thread's history, which every page on any of the thread's
channels reads: a token granting more channels than theirs would reach them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Stack
from tests.integration.test_threads import COLOUR, TOOL, call, history, run_body
from tests.wsclient import Subscriber


async def tool_call(sub: Subscriber, stream_id: str) -> dict[str, Any]:
    return await sub.wait_for(
        lambda m: m.get("streamId") == stream_id and m.get("type") == "llmToolCall", 15
    )


@pytest.mark.parametrize("over", ["websocket", "https"])
async def test_credentials_sent_beside_a_tool_answer_are_not_part_of_it(
    stack: Stack, over: str
) -> None:
    channel = f"answer-creds-{over}"
    token = stack.token(channel, "answer-creds-private")
    sub = await Subscriber.open(stack.ws, token)
    try:
        body = run_body(channel, "Pick a colour", tools=[TOOL])
        body["payload"]["providerArgs"]["script"] = [
            {"text": "Let me pick. ", "toolCalls": [COLOUR]},
            {"text": "It is {{message:ui_get_color}}."},
        ]
        r = await call(stack, "POST", "/stream/create/assistants", body)
        assert r.status_code == 200, r.text
        ack = r.json()
        found = await tool_call(sub, ack["streamId"])
        credentials = {"token": token, "apiKey": stack.api_key, "api_key": stack.api_key}
        answer = {"toolCallId": found["toolCallId"], "success": True, "message": "red"}
        if over == "websocket":
            await sub.send({"action": "llmToolCallResponse", **answer, **credentials})
        else:
            sent = await call(stack, "POST", "/llm/tool-response", {**answer, **credentials})
            assert sent.status_code == 200, sent.text
        await sub.stream(ack["streamId"], within=20)
        stored = json.dumps(await history(stack, ack["threadId"]))
    finally:
        await sub.close()
    assert "red" in stored
    assert token not in stored and stack.api_key not in stored
