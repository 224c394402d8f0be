"""Hostile tests of a stop while a stream's tool round runs on the app's webhook: the
stream ends `cancelled` at once, not after the webhook's answer or timeout, with one
`end`, and its record says so."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from tests.conftest import HOOKED_KEY, Stack
from tests.delivery import replay
from tests.integration.test_tool_loop import query, start
from tests.wsclient import Subscriber


async def test_a_stop_while_the_webhook_runs_a_tool_ends_the_stream_at_once(
    stack: Stack,
) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("life-hook", api_key=HOOKED_KEY))
    script = [{"text": "Let me look. ", "toolCalls": [{"name": "slow_tool"}]}, {"text": "Done."}]
    try:
        sid = await start(stack, query("life-hook", script, "slow_tool"), HOOKED_KEY)
        await sub.wait_for(lambda m: m.get("streamId") == sid and m["type"] == "function_call")
        stopped_at = time.monotonic()
        async with httpx.AsyncClient(base_url=stack.http, timeout=10) as client:
            stop = await client.post(
                "/llm/query/stop", json={"streamId": sid}, headers={"x-api-key": HOOKED_KEY}
            )
        assert stop.json()["streamStatus"] == "streaming"
        messages = await sub.stream(sid, within=10)
        assert time.monotonic() - stopped_at < 0.8  # the webhook's 1 s timeout did not run out
        state = replay(messages)
        assert state.ends == 1 and state.text == "Let me look. "
        assert messages[-1]["finish_reason"] == "cancelled"
    finally:
        await sub.close()


async def test_a_caller_hanging_up_before_its_ack_still_streams_to_the_channels(
    stack: Stack,
) -> None:
    """The backend sends its request and closes the connection at once (a FileMaker
    script timing out): the detached stream still reaches every page whole."""
    text = " ".join(f"h{i}" for i in range(30))
    sub = await Subscriber.open(stack.ws, stack.token("life-hangup"))
    body = json.dumps(
        {
            "channels": ["life-hangup"],
            "actionName": "onLlm",
            "payload": {
                "provider": "mock",
                "messages": [{"role": "user", "content": "x"}],
                "providerArgs": {"text": text, "delayMs": 10},
            },
        }
    ).encode()
    host, port = stack.http.removeprefix("http://").split(":")
    try:
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /llm/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"x-api-key: {stack.api_key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()  # gone before any answer
        await writer.wait_closed()
        first = await sub.wait_for(lambda m: m.get("type") == "threadInfo")
        messages = await sub.stream(first["streamId"])
        assert replay(messages).text == text
        assert messages[-1]["finish_reason"] == "stop"
    finally:
        await sub.close()
