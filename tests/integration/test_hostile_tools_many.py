"""A model asking for many tools in one round: each call gets its own record, announcement
and answer, and the round goes on only once all are in."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import Stack
from tests.delivery import assert_complete
from tests.integration.test_tool_loop import query, start
from tests.wsclient import Subscriber

CALLS = 50


async def test_fifty_parallel_frontend_calls_each_answered_once_then_one_end(
    stack: Stack,
) -> None:
    channel = "hostile-fifty-calls"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    calls = [{"name": "ui_get_color", "arguments": {"n": n}} for n in range(CALLS)]
    script = [{"toolCalls": calls}, {"text": "All {{message:ui_get_color}}."}]
    try:
        stream_id = await start(stack, query(channel, script))
        ids: list[str] = []
        while len(ids) < CALLS:
            found = await sub.wait_for(
                lambda m: m.get("type") == "llmToolCall" and m["toolCallId"] not in ids
            )
            ids.append(found["toolCallId"])
        async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:

            async def reply(call_id: str, message: str) -> int:
                body = {"toolCallId": call_id, "success": True, "message": message}
                headers = {"x-api-key": stack.api_key}
                return (
                    await client.post("/llm/tool-response", json=body, headers=headers)
                ).status_code

            answers = await asyncio.gather(*(reply(i, "in") for i in ids))
            assert answers == [200] * CALLS
            assert await reply(ids[0], "another") == 409  # a second, other answer
        messages = await sub.stream(stream_id, within=20)
    finally:
        await sub.close()
    assert_complete(messages, "All in.")  # the mock quotes the last result of the name
    announced = next(m for m in messages if m["type"] == "function_call")
    assert [f["toolCallId"] for f in announced["content"]["functions"]] == ids
    record = await stack.finished(stream_id, within=5.0)
    assert (record["tool_rounds"], record["tool_calls"], record["dropped"]) == (1, CALLS, 0)
