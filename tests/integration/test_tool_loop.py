"""The tool loop through the real stack: a scripted mock model asks for tools, browsers (real
WebSocket clients) or a backend webhook answer, and the stream carries on in one piece."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from tests.conftest import HOOKED_APP, HOOKED_KEY, RIVAL_KEY, Stack, sse_query
from tests.delivery import assert_complete
from tests.fake_webhook import FakeWebhook
from tests.wsclient import Subscriber

COLOUR: dict[str, Any] = {
    "name": "ui_get_color",
    "arguments": {"userMessage": "Picking a colour", "shade": "warm"},
}
ASK_COLOUR: dict[str, Any] = {"text": "Let me pick. ", "toolCalls": [COLOUR]}
SAY_COLOUR: dict[str, Any] = {"text": "The colour is {{message:ui_get_color}}."}


def tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


def query(channel: str, script: list[Any], *tools: str, **extra: Any) -> Any:
    options = extra.pop("options", {})
    return {
        "channels": [channel],
        "actionName": "onTools",
        "options": {"flushIntervalMs": 0, **options},
        "payload": {
            "provider": "mock",
            "messages": [{"role": "user", "content": "Pick a colour"}],
            "tools": [tool(name) for name in tools or ("ui_get_color",)],
            "providerArgs": {"delayMs": 2, "script": script},
            **extra,
        },
    }


async def post(stack: Stack, path: str, body: Any, key: str | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        return await client.post(path, json=body, headers={"x-api-key": key or stack.api_key})


async def start(stack: Stack, body: Any, key: str | None = None) -> str:
    r = await post(stack, "/llm/query", body, key)
    assert r.status_code == 200, r.text
    return str(r.json()["streamId"])


async def finished(stack: Stack, stream_id: str) -> dict[str, Any]:
    """The stream's 'stream finished' log line (written once its lanes drained)."""
    return await stack.finished(stream_id, within=5.0)


async def tool_call(sub: Subscriber, stream_id: str, name: str = "get_color") -> dict[str, Any]:
    return await sub.wait_for(
        lambda m: (
            m.get("streamId") == stream_id
            and m.get("type") == "llmToolCall"
            and m.get("toolName") == name
        )
    )


def tool_answer(call_id: str, message: str, **extra: Any) -> dict[str, Any]:
    """A successful tool answer, as a browser sends it (over HTTPS, `action` is ignored)."""
    return {
        "action": "llmToolCallResponse",
        "toolCallId": call_id,
        "success": True,
        "message": message,
        **extra,
    }


async def answer(sub: Subscriber, call_id: str, message: str, **extra: Any) -> dict[str, Any]:
    """Send a tool answer; return the reply to it (ack or action error)."""
    since = len(sub.messages)
    await sub.send(tool_answer(call_id, message, **extra))
    return await sub.wait_for(
        lambda m: (
            (m.get("toolCallId") == call_id and m.get("type") == "ack")
            or (m.get("type") == "error" and "seq" not in m)
        ),
        since=since,
    )


async def test_a_browser_answers_a_frontend_tool_and_the_model_carries_on(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("tools-a"))
    try:
        stream_id = await start(stack, query("tools-a", [ASK_COLOUR, SAY_COLOUR]))
        call = await tool_call(sub, stream_id)
        # A Klai page handler tests `data.action`; ours read `type`: both are there.
        assert call["action"] == call["type"] == "llmToolCall"
        assert call["arguments"] == {"userMessage": "Picking a colour", "shade": "warm"}
        assert call["functions"] == [{"name": "get_color", "arguments": call["arguments"]}]
        assert call["channel"] == "tools-a" and call["actionName"] == "onTools"
        assert await answer(sub, call["toolCallId"], "red", hex="#f00") == {
            "type": "ack",
            "toolCallId": call["toolCallId"],
        }
        messages = await sub.stream(stream_id)
        state = assert_complete(messages, "Let me pick. The colour is red.")
        kinds = [kind for kind in state.types if kind != "delta"]
        assert kinds == ["threadInfo", "function_call", "llmToolCall", "end"]
        announced = next(m for m in messages if m["type"] == "function_call")
        assert announced["content"]["functions"][0]["toolCallId"] == call["toolCallId"]
        assert announced["seq"] < call["seq"]  # function_call as soon as asked, then the call
        end = messages[-1]
        assert end["finish_reason"] == "stop"
        assert end["usage"]["total_tokens"] == (
            end["usage"]["prompt_tokens"] + end["usage"]["completion_tokens"]
        )
        record = await finished(stack, stream_id)
        assert (record["tool_rounds"], record["tool_calls"]) == (1, 1)
    finally:
        await sub.close()


async def test_the_first_answer_wins_and_the_second_browser_is_told(stack: Stack) -> None:
    first = await Subscriber.open(stack.ws, stack.token("tools-b"))
    second = await Subscriber.open(stack.ws, stack.token("tools-b"))
    try:
        stream_id = await start(stack, query("tools-b", [ASK_COLOUR, SAY_COLOUR]))
        call = await tool_call(first, stream_id)
        await tool_call(second, stream_id)
        assert (await answer(first, call["toolCallId"], "blue"))["type"] == "ack"
        late = await answer(second, call["toolCallId"], "green")
        assert late["type"] == "error" and late["error"]["type"] == "conflict"
        for sub in (first, second):
            assert_complete(await sub.stream(stream_id), "Let me pick. The colour is blue.")
    finally:
        await first.close()
        await second.close()


async def test_an_answer_over_https_with_a_subscribe_token(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("tools-c"))
    try:
        stream_id = await start(stack, query("tools-c", [ASK_COLOUR, SAY_COLOUR]))
        call = await tool_call(sub, stream_id)
        body = {"toolCallId": call["toolCallId"], "success": True, "message": "teal"}
        async with httpx.AsyncClient(base_url=stack.http, timeout=10) as client:
            foreign = await client.post(
                "/llm/tool-response", json={**body, "token": stack.token("tools-other")}
            )
            anonymous = await client.post("/llm/tool-response", json=body)
            ok = await client.post(
                "/llm/tool-response",
                json=body,
                headers={"x-subscribe-token": stack.token("tools-c")},
            )
            again = await client.post(
                "/llm/tool-response", json=body, headers={"x-api-key": stack.api_key}
            )
        assert foreign.status_code == 403 and anonymous.status_code == 401
        assert ok.status_code == 200 and ok.json()["status"] == "accepted"
        assert again.status_code == 409
        assert_complete(await sub.stream(stream_id), "Let me pick. The colour is teal.")
    finally:
        await sub.close()


async def test_answers_from_another_channel_another_app_or_too_large_are_refused(
    stack: Stack,
) -> None:
    """A large answer cannot go over the WebSocket (API Gateway closes a connection whose
    frame is over 32 KB, and a browser sends a message as one frame): it goes to
    `POST /llm/tool-response`, which takes up to 64 KB (`TOOL_ANSWER_MAX_BYTES`)."""
    sub = await Subscriber.open(stack.ws, stack.token("tools-d"))
    tab = await Subscriber.open(stack.ws, stack.token("tools-d"))
    elsewhere = await Subscriber.open(stack.ws, stack.token("tools-d-other"))
    rival = await Subscriber.open(stack.ws, stack.token("tools-d", api_key=RIVAL_KEY))
    try:
        stream_id = await start(stack, query("tools-d", [ASK_COLOUR, SAY_COLOUR]))
        call_id = (await tool_call(sub, stream_id))["toolCallId"]
        refused = await answer(elsewhere, call_id, "from another channel")
        assert refused["error"]["type"] == "forbidden"
        unknown = await answer(rival, call_id, "from another app")
        assert unknown["error"]["type"] == "not_found"
        await tab.send(tool_answer(call_id, "big", data="x" * 40_000))
        await asyncio.wait_for(tab.ws.wait_closed(), 10)
        assert tab.ws.close_code == 1009  # the gateway's, before the answer reached anyone
        headers = {"x-subscribe-token": stack.token("tools-d")}
        async with httpx.AsyncClient(base_url=stack.http, timeout=10) as client:
            big = await client.post(
                "/llm/tool-response",
                json=tool_answer(call_id, "too big", data="x" * 70_000),
                headers=headers,
            )
            assert big.status_code == 413, big.text
            assert big.json()["error"]["type"] == "payload_too_large"
            ok = await client.post(
                "/llm/tool-response",
                json=tool_answer(call_id, "amber", data="x" * 40_000),
                headers=headers,
            )
            assert ok.status_code == 200 and ok.json()["status"] == "accepted", ok.text
        assert_complete(await sub.stream(stream_id), "Let me pick. The colour is amber.")
    finally:
        for s in (sub, tab, elsewhere, rival):
            await s.close()


async def test_a_frontend_tool_nobody_answers_times_out_and_the_model_is_told(
    stack: Stack,
) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("tools-e"))
    try:
        body = query("tools-e", [ASK_COLOUR, SAY_COLOUR], options={"toolTimeoutSeconds": 1})
        stream_id = await start(stack, body)
        messages = await sub.stream(stream_id, within=20)
        assert_complete(
            messages,
            "Let me pick. The colour is the tool did not answer within 1 seconds.",
        )
        assert messages[-1]["finish_reason"] == "stop"
    finally:
        await sub.close()


async def test_a_stop_while_waiting_for_a_browser_ends_the_stream_at_once(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("tools-f"))
    try:
        stream_id = await start(stack, query("tools-f", [ASK_COLOUR, SAY_COLOUR]))
        call_id = (await tool_call(sub, stream_id))["toolCallId"]
        started = time.monotonic()
        await sub.send({"action": "stop", "streamId": stream_id})
        messages = await sub.stream(stream_id, within=10)
        assert time.monotonic() - started < 3
        assert messages[-1]["finish_reason"] == "cancelled"
        late = await answer(sub, call_id, "too late")
        assert late["type"] == "error" and late["error"]["type"] == "conflict"
    finally:
        await sub.close()


async def test_two_frontend_calls_of_one_round_both_wait_and_both_are_quoted(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("tools-g"))
    size = {"name": "ui_get_size", "arguments": {"userMessage": "Measuring"}}
    script = [
        {"toolCalls": [COLOUR, size]},
        {"text": "A {{message:ui_get_size}} {{message:ui_get_color}} one."},
    ]
    try:
        stream_id = await start(stack, query("tools-g", script, "ui_get_color", "ui_get_size"))
        colour = await tool_call(sub, stream_id)
        measure = await tool_call(sub, stream_id, "get_size")
        await answer(sub, measure["toolCallId"], "large")
        await answer(sub, colour["toolCallId"], "green")
        assert_complete(await sub.stream(stream_id), "A large green one.")
    finally:
        await sub.close()


async def test_a_frontend_call_too_large_for_a_page_fails_at_once_and_the_other_still_runs(
    stack: Stack,
) -> None:
    """An llmToolCall over one WebSocket message would be dropped on the way and its call
    wait the whole tool timeout: instead no page is sent it, the model is told at once, the
    round's other call still waits for its page, and the stream stays whole."""
    sub = await Subscriber.open(stack.ws, stack.token("tools-big"))
    big = {"name": "ui_get_size", "arguments": {"blob": "x" * 100_000}}
    script = [
        {"toolCalls": [COLOUR, big]},
        {"text": "A {{message:ui_get_color}} one; size: {{message:ui_get_size}}"},
    ]
    body = query("tools-big", script, "ui_get_color", "ui_get_size")
    body["options"]["toolTimeoutSeconds"] = 20
    try:
        stream_id = await start(stack, body)
        colour = await tool_call(sub, stream_id)
        await answer(sub, colour["toolCallId"], "green")
        messages = await sub.stream(stream_id, within=15)
        assert_complete(
            messages,
            "A green one; size: the arguments are too large to hand to a page (one WebSocket "
            "message holds 128 KB); the tool did not run",
        )
        assert [m["toolName"] for m in messages if m["type"] == "llmToolCall"] == ["get_color"]
        [announced] = [m for m in messages if m["type"] == "function_call"]
        entries = {e["name"]: e for e in announced["content"]["functions"]}
        assert entries["ui_get_color"]["arguments"] == COLOUR["arguments"]
        assert entries["ui_get_size"]["arguments"] is None
        assert entries["ui_get_size"]["argumentsBytes"] > 100_000
    finally:
        await sub.close()


async def test_a_backend_tool_runs_on_the_apps_webhook_signed(
    stack: Stack, webhook: FakeWebhook
) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("tools-h", api_key=HOOKED_KEY))
    stock = {"name": "lookup_stock", "arguments": {"sku": "A1", "userMessage": "Checking"}}
    script = [{"toolCalls": [stock]}, {"text": "Stock: {{message:lookup_stock}}"}]
    try:
        stream_id = await start(stack, query("tools-h", script, "lookup_stock"), HOOKED_KEY)
        messages = await sub.stream(stream_id)
        assert_complete(messages, "Stock: A1: 12 in stock")
        assert "llmToolCall" not in [m["type"] for m in messages]  # nothing for the page to do
        [call] = [c for c in webhook.calls if c.payload["streamId"] == stream_id]
        assert call.verified
        announced = next(m for m in messages if m["type"] == "function_call")
        assert call.payload == {
            "appId": HOOKED_APP,
            "streamId": stream_id,
            "toolCallId": announced["content"]["functions"][0]["toolCallId"],
            "name": "lookup_stock",
            "arguments": {"sku": "A1", "userMessage": "Checking"},
            "channels": ["tools-h"],
            "actionName": "onTools",
        }
    finally:
        await sub.close()


@pytest.mark.parametrize(
    ("name", "told"),
    [
        ("slow_tool", "the tool did not answer within 1 seconds"),
        ("broken_tool", "the tool failed (its webhook answered HTTP 500)"),
    ],
)
async def test_a_webhook_that_fails_is_reported_to_the_model_and_the_stream_goes_on(
    stack: Stack, name: str, told: str
) -> None:
    script = [{"toolCalls": [{"name": name}]}, {"text": f"Result: {{{{message:{name}}}}}"}]
    body = query("tools-i", script, name)
    body["payload"]["stream"] = False
    r = await post(stack, "/llm/query", body, HOOKED_KEY)
    assert r.status_code == 200, r.text
    choice = r.json()["data"]["choices"][0]
    assert choice["message"]["content"] == f"Result: {told}"
    assert choice["finish_reason"] == "stop"


async def test_with_no_webhook_the_stream_ends_with_the_calls_for_the_backend(
    stack: Stack,
) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("tools-j"))
    stock = {"name": "lookup_stock", "arguments": {"sku": "B2"}}
    try:
        body = query("tools-j", [{"text": "One moment. ", "toolCalls": [stock]}], "lookup_stock")
        stream_id = await start(stack, body)  # the dev app has no webhook
        messages = await sub.stream(stream_id)
        state = assert_complete(messages, "One moment. ")
        assert state.types[-2:] == ["function_call", "end"]
        [entry] = messages[-2]["content"]["functions"]
        assert entry["name"] == "lookup_stock" and entry["arguments"] == {"sku": "B2"}
        assert entry["toolCallId"].startswith("tc_")
        assert messages[-1]["finish_reason"] == "tool_calls"
    finally:
        await sub.close()


async def test_backend_calls_too_large_for_a_page_reach_the_sse_caller_whole(
    stack: Stack,
) -> None:
    """The SSE caller (the backend that runs the calls) gets every argument; the pages get
    the same function_call with the arguments left out and their size, in one message."""
    sub = await Subscriber.open(stack.ws, stack.token("tools-jj"))
    stock = {"name": "lookup_stock", "arguments": {"skus": ["B2"] * 40_000}}
    body = query("tools-jj", [{"text": "One moment. ", "toolCalls": [stock]}], "lookup_stock")
    try:
        async with sse_query(stack, body) as answer:
            frames = [
                json.loads(line[6:])
                async for line in answer.aiter_lines()
                if line.startswith("data: ")
            ]
        [called] = [f for f in frames if f.get("type") == "function_call"]
        [whole] = called["content"]["functions"]
        assert whole["arguments"] == stock["arguments"]
        messages = await sub.stream(called["streamId"])
        assert_complete(messages, "One moment. ")
        [left_out] = messages[-2]["content"]["functions"]
        assert (left_out["name"], left_out["toolCallId"]) == ("lookup_stock", whole["toolCallId"])
        assert left_out["arguments"] is None
        assert left_out["argumentsBytes"] == len(
            json.dumps(stock["arguments"], separators=(",", ":"))
        )
    finally:
        await sub.close()


async def test_stream_false_refuses_frontend_tools_and_runs_backend_ones(stack: Stack) -> None:
    ui = query("tools-k", [ASK_COLOUR, SAY_COLOUR])
    ui["payload"]["stream"] = False
    refused = await post(stack, "/llm/query", ui)
    assert refused.status_code == 400 and "ui_" in refused.json()["error"]["message"]
    stock = {"name": "lookup_stock", "arguments": {"sku": "C3"}}
    backend = query(
        "tools-k", [{"toolCalls": [stock]}, {"text": "{{message:lookup_stock}}"}], "lookup_stock"
    )
    backend["payload"]["stream"] = False
    done = await post(stack, "/llm/query", backend, HOOKED_KEY)
    assert done.status_code == 200, done.text
    assert done.json()["data"]["choices"][0]["message"]["content"] == "C3: 12 in stock"


async def test_past_the_round_limit_the_stream_ends_with_the_pending_calls(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("tools-l"))
    try:
        body = query("tools-l", [{"toolCalls": [COLOUR]}], options={"maxToolRounds": 2})
        stream_id = await start(stack, body)
        for _ in range(2):
            call = await sub.wait_for(
                lambda m: (
                    m.get("type") == "llmToolCall"
                    and m.get("streamId") == stream_id
                    and not m.get("_answered")
                )
            )
            call["_answered"] = True
            await answer(sub, call["toolCallId"], "again")
        messages = await sub.stream(stream_id)
        assert [m["type"] for m in messages].count("function_call") == 3
        assert [m["type"] for m in messages].count("llmToolCall") == 2
        assert messages[-1]["finish_reason"] == "tool_calls"
        over = await post(stack, "/llm/query", query("tools-l", [], options={"maxToolRounds": 9}))
        assert over.status_code == 400 and "maxToolRounds" in over.json()["error"]["message"]
    finally:
        await sub.close()


async def test_the_sse_caller_sees_the_same_rounds(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("tools-m"))
    answered: list[asyncio.Task[dict[str, Any]]] = []
    try:
        async with (
            httpx.AsyncClient(base_url=stack.http, timeout=30) as client,
            client.stream(
                "POST",
                "/llm/query",
                json=query("tools-m", [ASK_COLOUR, SAY_COLOUR]),
                headers={"x-api-key": stack.api_key, "accept": "text/event-stream"},
            ) as r,
        ):
            events: list[str] = []
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    events.append(line[7:])
                if line == "event: llmToolCall":
                    call = await sub.wait_for(lambda m: m.get("type") == "llmToolCall")
                    answered.append(asyncio.create_task(answer(sub, call["toolCallId"], "violet")))
        kinds = [kind for kind in events if kind != "delta"]
        assert kinds == ["threadInfo", "function_call", "llmToolCall", "end"]
        assert (await answered[0])["type"] == "ack"
    finally:
        await sub.close()


async def test_a_tab_that_joins_during_the_wait_learns_of_the_call_and_answers_it(
    stack: Stack,
) -> None:
    first = await Subscriber.open(stack.ws, stack.token("tools-n"))
    try:
        stream_id = await start(stack, query("tools-n", [ASK_COLOUR, SAY_COLOUR]))
        call = await tool_call(first, stream_id)  # the first tab sees it and does not answer
        late = await Subscriber.open(stack.ws, stack.token("tools-n"))  # a reloaded tab
        try:
            catch_up = await late.wait_for(
                lambda m: m.get("type") == "snapshot" and m.get("streamId") == stream_id
            )
            [pending] = catch_up["pendingToolCalls"]
            assert pending["toolCallId"] == call["toolCallId"]
            assert pending["action"] == "llmToolCall" and pending["channel"] == "tools-n"
            assert (await answer(late, pending["toolCallId"], "from the new tab"))["type"] == "ack"
            assert_complete(
                await late.stream(stream_id), "Let me pick. The colour is from the new tab."
            )
        finally:
            await late.close()
    finally:
        await first.close()
