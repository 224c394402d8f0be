"""Every action error names the request it refuses (`request`: its action and key fields as
sent). API Gateway runs a connection's messages concurrently, so a browser cannot tell which
of its requests an error answers from the order replies arrive in."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Stack
from tests.wsclient import Subscriber


async def test_each_action_error_names_its_request_and_nothing_else(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("hostile-ws-replies"))
    refused: list[dict[str, Any]] = [
        {"action": "subscribe", "channel": "team-9", "token": "not-a-token"},
        {"action": "unsubscribe", "channel": f"tab|{await sub.connection_id()}"},
        {"action": "stop", "streamId": ""},
        {"action": "history", "threadId": "not a thread", "cursor": "0"},
        {"action": "llmToolCallResponse", "toolCallId": "tc_nobody", "success": True},
        {"action": "ping", "id": ["not", "a", "key"]},
        {"action": "nope", "channel": "x" * 300, "streamId": 7},
    ]
    try:
        for message in [*refused, "not json"]:
            await sub.ws.send(message if isinstance(message, str) else json.dumps(message))
        await sub.wait_for(
            lambda m: len([x for x in sub.messages if x.get("type") == "error"]) == 8
        )
        errors = [m for m in sub.messages if m.get("type") == "error"]
    finally:
        await sub.close()
    assert [e["request"] for e in errors[:-1]] == [
        {"action": "subscribe", "channel": "team-9"},
        refused[1],
        {"action": "stop", "streamId": ""},
        {"action": "history", "threadId": "not a thread", "cursor": "0"},
        {"action": "llmToolCallResponse", "toolCallId": "tc_nobody"},
        {"action": "ping"},  # a key that is no string or number is not echoed
        {"action": "nope", "streamId": 7},  # nor is a long one
    ]
    assert "request" not in errors[-1]  # not JSON: nothing to name
    assert all("streamId" not in e and "seq" not in e for e in errors)  # never a stream's event
