"""Tool answers over HTTPS from pages: first answer wins, and every other page learns its
answer was not the one taken, even an identical one (it ran the tool too)."""

from __future__ import annotations

import httpx

from tests.conftest import Stack
from tests.integration.test_tool_loop import ASK_COLOUR, SAY_COLOUR, query, start, tool_call
from tests.wsclient import Subscriber


async def test_two_pages_answering_alike_over_https_are_told_apart(stack: Stack) -> None:
    channel = "hostile-two-tabs-https"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    first, second = stack.token(channel, "tab-a-own"), stack.token(channel, "tab-b-own")
    assert first != second
    try:
        stream_id = await start(stack, query(channel, [ASK_COLOUR, SAY_COLOUR]))
        call = await tool_call(sub, stream_id)
        body = {"toolCallId": call["toolCallId"], "success": True, "message": "teal"}
        async with httpx.AsyncClient(base_url=stack.http, timeout=10) as client:
            taken = await client.post("/llm/tool-response", json={**body, "token": first})
            other = await client.post(
                "/llm/tool-response", json=body, headers={"x-subscribe-token": second}
            )
            again = await client.post(
                "/llm/tool-response", json=body, headers={"x-subscribe-token": first}
            )
    finally:
        await sub.close()
    assert taken.status_code == 200, taken.text
    assert other.status_code == 409 and other.json()["error"]["type"] == "conflict"
    assert again.status_code == 200  # the first page sending again (its answer was lost)
