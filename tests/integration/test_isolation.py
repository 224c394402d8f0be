"""Two apps, the same channel names, every route and every WebSocket action: nothing crosses.

App A is the dev app, app B the rival (tests/conftest.py). Both use channel `shared`, and B
knows A's tab id. Whatever B does, A's browsers hear nothing from B and B's browsers hear
nothing of A; B can neither stop, resume, answer tools for, nor read A's streams.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import RIVAL_APP, RIVAL_KEY, Stack
from tests.delivery import assert_complete
from tests.wsclient import Subscriber

TEXT = "only app A may read this sentence, word by word"


def stream_body(route: str, channels: list[str], text: str = TEXT, delay: int = 5) -> Any:
    args = {"text": text, "delayMs": delay}
    messages = [{"role": "user", "content": "x"}]
    if route == "/v1/chat/completions":
        return {
            "model": "mock/echo",
            "messages": messages,
            "stream": True,
            "channels": channels,
            "actionName": "onLlm",
            "providerArgs": args,
        }
    return {
        "channels": channels,
        "actionName": "onLlm",
        "payload": {"provider": "mock", "messages": messages, "providerArgs": args},
    }


async def start(stack: Stack, route: str, channels: list[str], key: str, **kw: Any) -> str:
    """Start a stream; return its id (from the ack, or the SSE answer's header)."""
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        r = await client.post(
            route, json=stream_body(route, channels, **kw), headers={"x-api-key": key}
        )
    assert r.status_code == 200, r.text
    return str(r.headers.get("x-stream-id") or r.json()["streamId"])


async def open_pair(stack: Stack, channel: str) -> tuple[Subscriber, Subscriber]:
    a = await Subscriber.open(stack.ws, stack.token(channel))
    b = await Subscriber.open(stack.ws, stack.token(channel, api_key=RIVAL_KEY))
    return a, b


@pytest.mark.parametrize("route", ["/llm/query", "/stream/create", "/v1/chat/completions"])
async def test_a_stream_on_a_shared_channel_name_reaches_its_own_app_only(
    stack: Stack, route: str
) -> None:
    a, b = await open_pair(stack, "shared")
    try:
        from_a = await start(stack, route, ["shared"], stack.api_key)
        from_b = await start(stack, route, ["shared"], RIVAL_KEY, text="app B speaking")
        assert_complete(await a.stream(from_a), TEXT)
        assert_complete(await b.stream(from_b), "app B speaking")
        await asyncio.sleep(0.3)
        assert b.of(from_a) == [] and a.of(from_b) == []
    finally:
        await a.close()
        await b.close()


async def test_another_app_cannot_publish_into_a_tabs_private_channel(stack: Stack) -> None:
    a, b = await open_pair(stack, "lobby")
    try:
        tab = f"tab|{await a.connection_id()}"
        intruder = await start(stack, "/llm/query", [tab], RIVAL_KEY, text="hello from B")
        own = await start(stack, "/llm/query", [tab], stack.api_key, text="hello from A")
        assert_complete(await a.stream(own), "hello from A")  # the backend's own tab works
        await asyncio.sleep(0.3)
        assert a.of(intruder) == []
    finally:
        await a.close()
        await b.close()


async def test_stop_and_resume_of_another_apps_stream_do_not_exist(stack: Stack) -> None:
    a, b = await open_pair(stack, "shared-stop")
    try:
        sid = await start(stack, "/llm/query", ["shared-stop"], stack.api_key, delay=40)
        await a.wait_for(lambda m: m.get("streamId") == sid and m.get("type") == "delta")
        async with httpx.AsyncClient(base_url=stack.http, timeout=10) as client:
            http_stop = await client.post(
                "/llm/query/stop", json={"streamId": sid}, headers={"x-api-key": RIVAL_KEY}
            )
            # App B's page holds a token for a channel of the same name: still another channel.
            rival_token = stack.token("shared-stop", api_key=RIVAL_KEY)
            token_stop = await client.post(
                "/llm/query/stop", json={"streamId": sid, "token": rival_token}
            )
        for refused in (http_stop, token_stop):
            assert refused.status_code == 200, refused.text
            assert refused.json() == {"success": True, "status": "not_found", "streamId": sid}
        for action in ("stop", "resume"):
            await b.send({"action": action, "streamId": sid, "afterSeq": -1})
            reply = await b.wait_for(
                lambda m, act=action: m.get("streamId") == sid and "seq" not in m
            )
            assert reply == {"type": "not_found", "streamId": sid}, action
            b.messages.clear()
        messages = await a.stream(sid, within=30)
        assert_complete(messages, TEXT)
        assert messages[-1]["finish_reason"] == "stop"  # never stopped by app B
    finally:
        await a.close()
        await b.close()


async def test_a_tool_call_is_answered_only_by_its_own_apps_browsers(stack: Stack) -> None:
    a, b = await open_pair(stack, "shared-tools")
    script = [
        {"toolCalls": [{"name": "ui_pick", "arguments": {}}]},
        {"text": "picked {{message:ui_pick}}"},
    ]
    body = {
        "channels": ["shared-tools"],
        "actionName": "onLlm",
        "payload": {
            "provider": "mock",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "ui_pick"}}],
            "providerArgs": {"delayMs": 1, "script": script},
        },
    }
    try:
        async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
            r = await client.post("/llm/query", json=body, headers={"x-api-key": stack.api_key})
        stream_id = r.json()["streamId"]
        call = await a.wait_for(lambda m: m.get("type") == "llmToolCall")
        await asyncio.sleep(0.2)
        assert b.of(stream_id) == []  # app B's tab on the same channel name never saw it
        answer = {"toolCallId": call["toolCallId"], "success": True, "message": "from B"}
        async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
            by_key = await client.post(
                "/llm/tool-response", json=answer, headers={"x-api-key": RIVAL_KEY}
            )
            rival_token = stack.token("shared-tools", api_key=RIVAL_KEY)
            by_token = await client.post(
                "/llm/tool-response", json={**answer, "token": rival_token}
            )
        for refused_http in (by_key, by_token):
            assert refused_http.status_code == 404, refused_http.text
            assert refused_http.json()["error"]["type"] == "not_found"
        for sub, message in ((b, "from B"), (a, "from A")):
            await sub.send(
                {
                    "action": "llmToolCallResponse",
                    "toolCallId": call["toolCallId"],
                    "success": True,
                    "message": message,
                }
            )
        refused = await b.wait_for(lambda m: m.get("type") in ("error", "ack"))
        assert refused["type"] == "error" and refused["error"]["type"] == "not_found"
        assert_complete(await a.stream(stream_id), "picked from A")
    finally:
        await a.close()
        await b.close()


async def test_no_subscribe_reaches_another_connections_private_channel(stack: Stack) -> None:
    a, b = await open_pair(stack, "shared-sub")
    try:
        tab_a = f"tab|{await a.connection_id()}"
        tab_b = f"tab|{await b.connection_id()}"
        await b.send({"action": "subscribe", "channel": tab_a, "token": stack.token("x")})
        refused = await b.wait_for(lambda m: m.get("type") in ("error", "subscribed"))
        assert refused["type"] == "error" and refused["error"]["type"] == "forbidden"
        b.messages.clear()
        await b.send({"action": "subscribe", "channel": tab_b})  # its own: already in it
        own = await b.wait_for(lambda m: m.get("type") in ("error", "subscribed"))
        assert own == {"type": "subscribed", "channel": tab_b}
        b.messages.clear()
        # A token of app A on a connection of app B is refused, channel names alike.
        await b.send({"action": "subscribe", "channel": "team", "token": stack.token("team")})
        foreign = await b.wait_for(lambda m: m.get("type") in ("error", "subscribed"))
        assert foreign["type"] == "error" and foreign["error"]["type"] == "forbidden"
    finally:
        await a.close()
        await b.close()


async def test_a_token_cannot_name_a_private_channel_even_when_signed_by_the_app(
    stack: Stack,
) -> None:
    import jwt

    forged = jwt.encode(
        {"app": RIVAL_APP, "channels": ["tab|AnyConnection="], "exp": 2_000_000_000},
        "rival-token-secret-not-for-production",
        algorithm="HS256",
    )
    with pytest.raises(Exception, match="403"):
        await Subscriber.open(stack.ws, forged)
