"""Backend tools attacked through the real stack: what a webhook answers goes to the model
and into the thread, whose history pages read; a secret in it must reach neither."""

from __future__ import annotations

import json

from tests.conftest import HOOKED_KEY, Stack
from tests.fake_webhook import WEBHOOK_SECRET
from tests.integration.test_threads import COLOUR, TOOL, call, history, run_body
from tests.wsclient import Subscriber

LEAKY = {
    "type": "function",
    "function": {"name": "leaky_tool", "parameters": {"type": "object"}},
}


async def test_a_secret_a_webhook_echoes_reaches_neither_model_pages_nor_thread(
    stack: Stack,
) -> None:
    channel = "hostile-leaky-hook"
    bearer = "tok" + "en-of-the-debug-header-123456"
    sub = await Subscriber.open(stack.ws, stack.token(channel, api_key=HOOKED_KEY))
    try:
        body = run_body(channel, "Check stock", tools=[LEAKY])
        body["payload"]["providerArgs"]["script"] = [
            {"toolCalls": [{"name": "leaky_tool", "arguments": {"sku": bearer}}]},
            {"text": "Tool said: {{result:leaky_tool}}"},
        ]
        r = await call(stack, "POST", "/stream/create/assistants", body, HOOKED_KEY)
        assert r.status_code == 200, r.text
        ack = r.json()
        messages = await sub.stream(ack["streamId"], within=20)
        thread = await call(stack, "GET", f"/threads/{ack['threadId']}/messages", key=HOOKED_KEY)
        assert thread.status_code == 200, thread.text
        stored = json.dumps(thread.json()["messages"], ensure_ascii=False)
    finally:
        await sub.close()
    seen = json.dumps(messages, ensure_ascii=False)
    text = "".join(m["content"] for m in messages if m["type"] == "delta")
    assert '"signed with [redacted]"' in text and "signed with [redacted]" in stored
    for place in (seen, stored):
        assert WEBHOOK_SECRET not in place and bearer[::-1] not in place


async def test_a_pages_token_inside_its_answer_data_is_not_kept(stack: Stack) -> None:
    # Round 1 dropped `token`/`apiKey` beside the answer; a page may as well nest its token
    # in `data` under a name of its own. The history is read by pages on other channels.
    channel = "hostile-token-in-data"
    token = stack.token(channel)
    sub = await Subscriber.open(stack.ws, token)
    try:
        body = run_body(channel, "Pick a colour", tools=[TOOL])
        body["payload"]["providerArgs"]["script"] = [
            {"toolCalls": [COLOUR]},
            {"text": "It is {{message:ui_get_color}}."},
        ]
        r = await call(stack, "POST", "/stream/create/assistants", body)
        assert r.status_code == 200, r.text
        ack = r.json()
        found = await sub.wait_for(
            lambda m: m.get("streamId") == ack["streamId"] and m.get("type") == "llmToolCall"
        )
        answer = {"toolCallId": found["toolCallId"], "success": True, "message": "red"}
        await sub.send({"action": "llmToolCallResponse", **answer, "data": {"session": token}})
        await sub.stream(ack["streamId"], within=20)
        stored = json.dumps(await history(stack, ack["threadId"]))
    finally:
        await sub.close()
    assert "red" in stored and token not in stored
