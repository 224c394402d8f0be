"""Threads and runs through the real stack: `/stream/create/assistants` keeps a conversation
in the table, each run sends the history to the provider (asserted on the fake upstream's
recorded requests), stores what was said, and can be stopped; threads are read and erased
with the app key, and never reach another app."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.conftest import RIVAL_KEY, Stack
from tests.delivery import assert_complete
from tests.fake_llm import TEXT, FakeLlm
from tests.wsclient import Subscriber

COLOUR = {"name": "ui_get_color", "arguments": {"shade": "warm"}}
TOOL = {"type": "function", "function": {"name": "ui_get_color", "parameters": {"type": "object"}}}


def run_body(channel: str, text: str, thread_id: str | None = None, **payload: Any) -> Any:
    body: dict[str, Any] = {
        "channels": [channel],
        "actionName": "onRun",
        "options": {"flushIntervalMs": 0},
        "payload": {
            "provider": "mock",
            "messages": [{"role": "user", "content": text}],
            "providerArgs": {"delayMs": 1},
            **payload,
        },
    }
    if thread_id is not None:
        body["payload"]["thread_id"] = thread_id
    return body


async def call(
    stack: Stack, method: str, path: str, body: Any = None, key: str | None = None
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        headers = {"x-api-key": key or stack.api_key}
        return await client.request(method, path, json=body, headers=headers)


async def run(stack: Stack, sub: Subscriber, body: Any) -> tuple[dict[str, Any], list[Any]]:
    """Start a run and wait for its end: the ack and the stream's messages."""
    r = await call(stack, "POST", "/stream/create/assistants", body)
    assert r.status_code == 200, r.text
    ack = r.json()
    return ack, await sub.stream(ack["streamId"], within=20)


async def history(stack: Stack, thread_id: str, query: str = "") -> list[dict[str, Any]]:
    r = await call(stack, "GET", f"/threads/{thread_id}/messages{query}")
    assert r.status_code == 200, r.text
    messages: list[dict[str, Any]] = r.json()["messages"]
    return messages


async def test_two_turns_send_the_first_turn_to_the_fake_openai_upstream(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    channel = "thread-openai"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        openai = {"provider": "openai", "model": "fake-text", "instructions": "Be brief."}
        ack, first = await run(stack, sub, run_body(channel, "Hello?", **openai))
        assert ack["success"] is True and ack["status"] == "created"
        assert ack["threadId"].startswith("thread_") and ack["runId"].startswith("run_")
        assert_complete(first, TEXT)
        info = next(m for m in first if m["type"] == "threadInfo")["content"]
        assert info == {
            "streamId": ack["streamId"],
            "assistantThreadId": ack["threadId"],
            "runId": ack["runId"],
        }
        again, second = await run(stack, sub, run_body(channel, "More?", ack["threadId"], **openai))
        assert again["threadId"] == ack["threadId"] and again["runId"] != ack["runId"]
        info = next(m for m in second if m["type"] == "threadInfo")["content"]
        assert (info["assistantThreadId"], info["runId"]) == (ack["threadId"], again["runId"])
        sent = fake_llm.last("/chat/completions").body["messages"]
        assert [(m["role"], m["content"]) for m in sent] == [
            ("system", "Be brief."),
            ("user", "Hello?"),
            ("assistant", TEXT),
            ("user", "More?"),
        ]
        # The instructions go with each run, never into the thread.
        assert [m["role"] for m in await history(stack, ack["threadId"])] == [
            "user",
            "assistant",
            "user",
            "assistant",
        ]
    finally:
        await sub.close()


async def test_mock_turns_and_stream_false_answer_in_klai_shape(stack: Stack) -> None:
    channel = "thread-mock"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        ack, first = await run(stack, sub, run_body(channel, "first question"))
        assert_complete(first, "first question")
        body = run_body(channel, "second question", ack["threadId"], stream=False)
        r = await call(stack, "POST", "/stream/create/assistants", body)
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["success"] is True and done["status"] == "done"
        assert done["data"] == [{"type": "text", "text": {"value": "second question"}}]
        assert done["threadId"] == ack["threadId"] and done["runId"] != ack["runId"]
        # The mock counts the prompt it got: the second run's held the first turn.
        assert done["usage"]["prompt_tokens"] > first[-1]["usage"]["prompt_tokens"]
        ids = {"threadId": ack["threadId"], "runId": ack["runId"]}
        stop = await call(stack, "POST", "/stream/create/assistants/stop", ids)
        assert stop.status_code == 200 and stop.json()["status"] == "done"  # graceful
        stored = await history(stack, ack["threadId"])
        assert [m["content"] for m in stored] == [
            "first question",
            "first question",
            "second question",
            "second question",
        ]
    finally:
        await sub.close()


async def answer_colour(sub: Subscriber, stream_id: str, colour: str) -> None:
    call_ = await sub.wait_for(
        lambda m: m.get("streamId") == stream_id and m.get("type") == "llmToolCall", 15
    )
    await sub.send(
        {
            "action": "llmToolCallResponse",
            "toolCallId": call_["toolCallId"],
            "success": True,
            "message": colour,
        }
    )


async def test_a_tool_round_is_stored_and_sent_on_to_other_providers(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    channel = "thread-tools"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        script = [
            {"text": "Let me pick. ", "toolCalls": [COLOUR]},
            {"text": "It is {{message:ui_get_color}}."},
        ]
        body = run_body(channel, "Pick a colour", tools=[TOOL])
        body["payload"]["providerArgs"]["script"] = script
        r = await call(stack, "POST", "/stream/create/assistants", body)
        assert r.status_code == 200, r.text
        ack = r.json()
        await answer_colour(sub, ack["streamId"], "red")
        assert_complete(await sub.stream(ack["streamId"], within=20), "Let me pick. It is red.")
        stored = await history(stack, ack["threadId"])
        assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
        call_id = stored[1]["tool_calls"][0]["id"]
        assert stored[1]["content"] == "Let me pick. "
        assert stored[1]["tool_calls"][0]["function"]["name"] == "ui_get_color"
        assert stored[2]["tool_call_id"] == call_id and "red" in stored[2]["content"]
        assert stored[3]["content"] == "It is red."

        thread = ack["threadId"]
        openai = {"provider": "openai", "model": "fake-text"}
        await run(stack, sub, run_body(channel, "Why?", thread, **openai))
        sent = fake_llm.last("/chat/completions").body["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "tool", "assistant", "user"]
        assert sent[1]["tool_calls"][0]["id"] == call_id
        assert sent[2]["tool_call_id"] == call_id

        # The same history, translated to Anthropic's blocks.
        anthropic = {"provider": "anthropic", "model": "fake-text"}
        _, third = await run(stack, sub, run_body(channel, "Sure?", thread, **anthropic))
        assert third[-1]["finish_reason"] == "stop"
        blocks = fake_llm.last("/messages").body["messages"]
        assert [m["role"] for m in blocks][:3] == ["user", "assistant", "user"]
        kinds = [b.get("type") for m in blocks for b in m["content"] if isinstance(b, dict)]
        assert "tool_use" in kinds and "tool_result" in kinds
        assert len(await history(stack, thread)) == 8
    finally:
        await sub.close()


async def test_stop_a_run_then_stop_it_again_and_a_second_run_waits(stack: Stack) -> None:
    channel = "thread-stop"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        body = run_body(channel, "long " * 400)
        body["payload"]["providerArgs"]["delayMs"] = 20
        r = await call(stack, "POST", "/stream/create/assistants", body)
        assert r.status_code == 200, r.text
        ack = r.json()
        ids = {"threadId": ack["threadId"], "runId": ack["runId"]}
        await sub.wait_for(lambda m: m.get("streamId") == ack["streamId"] and m["type"] == "delta")

        busy = await call(
            stack, "POST", "/stream/create/assistants", run_body(channel, "x", ids["threadId"])
        )
        assert busy.status_code == 409, busy.text
        assert busy.json()["error"]["type"] == "conflict"
        refused = await call(stack, "DELETE", f"/threads/{ids['threadId']}")
        assert refused.status_code == 409

        stopped = await call(stack, "POST", "/stream/create/assistants/stop", ids)
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["status"] == "cancelling"
        messages = await sub.stream(ack["streamId"], within=20)
        assert messages[-1]["finish_reason"] == "cancelled"

        again = await call(stack, "POST", "/stream/create/assistants/stop", ids)
        assert again.status_code == 200
        assert again.json() == {
            "success": True,
            "status": "cancelled",
            **ids,
            "streamId": ack["streamId"],
        }
        stored = await history(stack, ids["threadId"])
        assert stored[-1]["role"] == "assistant" and stored[-1]["status"] == "cancelled"
        # The thread is free again.
        done_ack, next_run = await run(stack, sub, run_body(channel, "next", ids["threadId"]))
        assert_complete(next_run, "next")
        # Stopping a run that finished answers gracefully with its status.
        finished = {"threadId": done_ack["threadId"], "runId": done_ack["runId"]}
        late = await call(stack, "POST", "/stream/create/assistants/stop", finished)
        assert late.status_code == 200, late.text
        assert late.json()["status"] == "done"
    finally:
        await sub.close()


async def test_another_apps_thread_and_run_are_not_found(stack: Stack) -> None:
    channel = "thread-mine"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        ack, _ = await run(stack, sub, run_body(channel, "mine"))
    finally:
        await sub.close()
    thread = ack["threadId"]
    rival = await call(stack, "GET", f"/threads/{thread}/messages", key=RIVAL_KEY)
    assert rival.status_code == 404 and rival.json()["error"]["type"] == "not_found"
    body = run_body(channel, "theirs", thread)
    taken = await call(stack, "POST", "/stream/create/assistants", body, key=RIVAL_KEY)
    assert taken.status_code == 404 and taken.json()["success"] is False
    ids = {"threadId": thread, "runId": ack["runId"]}
    stop = await call(stack, "POST", "/stream/create/assistants/stop", ids, key=RIVAL_KEY)
    assert stop.status_code == 404
    deleted = await call(stack, "DELETE", f"/threads/{thread}", key=RIVAL_KEY)
    assert deleted.status_code == 404
    assert len(await history(stack, thread)) == 2  # untouched


async def test_messages_page_by_page_then_delete(stack: Stack) -> None:
    channel = "thread-pages"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        ack, _ = await run(stack, sub, run_body(channel, "one"))
        await run(stack, sub, run_body(channel, "two", ack["threadId"]))
    finally:
        await sub.close()
    thread = ack["threadId"]
    r = await call(stack, "GET", f"/threads/{thread}/messages?limit=3")
    page = r.json()
    assert [m["content"] for m in page["messages"]] == ["one", "one", "two"]
    assert page["nextCursor"] == "3" and page["createdAt"] <= page["updatedAt"]
    rest = (await call(stack, "GET", f"/threads/{thread}/messages?cursor=3")).json()
    assert [m["content"] for m in rest["messages"]] == ["two"] and rest["nextCursor"] is None
    too_many = await call(stack, "GET", f"/threads/{thread}/messages?limit=500")
    assert too_many.status_code == 400

    deleted = await call(stack, "DELETE", f"/threads/{thread}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    gone = await call(stack, "GET", f"/threads/{thread}/messages")
    assert gone.status_code == 404
    assert (await call(stack, "DELETE", f"/threads/{thread}")).status_code == 404
    # A delete reads no page: a query it does not take is not a 400.
    assert (await call(stack, "DELETE", f"/threads/{thread}?limit=0")).status_code == 404


async def test_stop_needs_both_ids_and_unknown_runs_are_not_found(stack: Stack) -> None:
    path = "/stream/create/assistants/stop"
    missing = await call(stack, "POST", path, {"threadId": "thread_abcdefgh1234"})
    assert missing.status_code == 400
    unknown = {"threadId": "thread_abcdefgh1234", "runId": "run_abcdefgh1234"}
    assert (await call(stack, "POST", path, unknown)).status_code == 404


async def test_llm_query_keeps_a_thread_too(stack: Stack, fake_llm: FakeLlm) -> None:
    channel = "thread-llm"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        ack, _ = await run(stack, sub, run_body(channel, "remember me"))
        body = run_body(channel, "who?", ack["threadId"], provider="openai", model="fake-text")
        r = await call(stack, "POST", "/llm/query", body)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["threadId"] == ack["threadId"] and answer["runId"] != ack["runId"]
        messages = await sub.stream(answer["streamId"], within=20)
        info = next(m for m in messages if m["type"] == "threadInfo")["content"]
        assert info["assistantThreadId"] == ack["threadId"]
        sent = fake_llm.last("/chat/completions").body["messages"]
        assert [m["content"] for m in sent] == ["remember me", "remember me", "who?"]
        # Chat has no threads.
        chat = await call(stack, "POST", "/stream/create", run_body(channel, "x", ack["threadId"]))
        assert chat.status_code == 400
    finally:
        await sub.close()


async def test_a_run_streams_back_as_sse_with_its_thread_and_run(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        r = await client.post(
            "/stream/create/assistants",
            json=run_body("thread-sse", "over sse"),
            headers={"x-api-key": stack.api_key, "accept": "text/event-stream"},
        )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line.removeprefix("data: "))
        for line in r.text.splitlines()
        if line.startswith("data: ")
    ]
    info = events[0]["content"]
    assert events[0]["type"] == "threadInfo" and info["assistantThreadId"].startswith("thread_")
    assert "".join(e["content"] for e in events if e["type"] == "delta") == "over sse"
    assert events[-1]["type"] == "end"
    stored = await history(stack, info["assistantThreadId"])
    assert [m["content"] for m in stored] == ["over sse", "over sse"]
