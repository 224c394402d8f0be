"""A page reads its thread's history over the WebSocket (`history` action) with the
subscribe token it connected with: only a thread that published to one of its channels,
only its own app's, page by page, cut in parts when large (real client, local gateway)."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import RIVAL_KEY, Stack
from tests.integration.test_threads import call, run, run_body
from tests.wsclient import Subscriber

# Stored twice (question and echoed answer), ASCII-escaped: several WebSocket messages' worth.
LONG = "long" + "ü" * 70_000 + "end"


async def history(sub: Subscriber, thread_id: str, **fields: Any) -> dict[str, Any]:
    """Ask for a page and join its parts: the reply's fields, with `messages` parsed."""
    since = len(sub.messages)
    await sub.send({"action": "history", "threadId": thread_id, **fields})

    def answers(m: dict[str, Any]) -> bool:
        return m.get("threadId") == thread_id and m.get("type") in ("history", "not_found")

    first = await sub.wait_for(answers, 10, since=since)
    if first["type"] == "not_found":
        return first
    parts = first.get("parts", 1)
    replies = [m for m in sub.messages[since:] if answers(m)]
    while len(replies) < parts:  # nothing arrives between the count and the wait
        await sub.wait_for(answers, 10, since=len(sub.messages))
        replies = [m for m in sub.messages[since:] if answers(m)]
    assert [m.get("part", 0) for m in replies] == list(range(parts))
    page = {k: v for k, v in replies[0].items() if k not in ("content", "part")}
    text = "".join(m["content"] for m in replies)
    page["messages"] = [json.loads(line) for line in text.splitlines()]
    page["sizes"] = [len(json.dumps(m, ensure_ascii=False).encode()) for m in replies]
    return page


async def test_a_page_reads_its_thread_page_by_page(stack: Stack) -> None:
    channel = "history-pages"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        ack, _ = await run(stack, sub, run_body(channel, "one"))
        thread = ack["threadId"]
        await run(stack, sub, run_body(channel, "two", thread))
        page = await history(sub, thread)
        assert [(m["role"], m["content"]) for m in page["messages"]] == [
            ("user", "one"),
            ("assistant", "one"),
            ("user", "two"),
            ("assistant", "two"),
        ]
        assert page["nextCursor"] is None and page["count"] == 4
        assert page["activeRun"] is None and page["createdAt"] <= page["updatedAt"]

        first = await history(sub, thread, limit=3)
        assert [m["content"] for m in first["messages"]] == ["one", "one", "two"]
        rest = await history(sub, thread, cursor=first["nextCursor"])
        assert [m["content"] for m in rest["messages"]] == ["two"]
        assert rest["nextCursor"] is None
    finally:
        await sub.close()


async def test_a_long_history_comes_in_parts_that_fit_a_websocket_message(stack: Stack) -> None:
    channel = "history-long"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        body = run_body(channel, LONG)
        body["payload"]["providerArgs"]["delayMs"] = 0
        ack, _ = await run(stack, sub, body)
        page = await history(sub, ack["threadId"])
        assert [m["content"] for m in page["messages"]] == [LONG, LONG]
        assert len(page["sizes"]) >= 3 and max(page["sizes"]) <= 128 * 1024
    finally:
        await sub.close()


async def test_other_channels_other_apps_and_unknown_threads_are_not_found(
    stack: Stack,
) -> None:
    channel = "history-mine"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        ack, _ = await run(stack, sub, run_body(channel, "private"))
    finally:
        await sub.close()
    thread = ack["threadId"]
    elsewhere = await Subscriber.open(stack.ws, stack.token("history-elsewhere"))
    rival = await Subscriber.open(stack.ws, stack.token(channel, api_key=RIVAL_KEY))
    try:
        for reader in (elsewhere, rival):
            answer = await history(reader, thread)
            assert answer == {"type": "not_found", "threadId": thread}
        unknown = await history(elsewhere, "thread_nobodyHasThisOne")
        assert unknown["type"] == "not_found"
        await elsewhere.send({"action": "history", "threadId": "not-a-thread"})
        refused = await elsewhere.wait_for(lambda m: m.get("type") == "error", 10)
        assert refused["error"]["type"] == "invalid_request"
        assert refused["error"]["fields"][0]["field"] == "threadId"
        # Once the page joins a channel the thread published to, it may read it.
        await elsewhere.send(
            {"action": "subscribe", "channel": channel, "token": stack.token(channel)}
        )
        await elsewhere.wait_for(lambda m: m.get("type") == "subscribed", 10)
        joined = await history(elsewhere, thread)
        assert [m["content"] for m in joined["messages"]] == ["private", "private"]
    finally:
        await elsewhere.close()
        await rival.close()


async def test_a_negative_cursor_is_refused_as_the_http_route_refuses_it(stack: Stack) -> None:
    channel = "history-negative"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        ack, _ = await run(stack, sub, run_body(channel, "one"))
        thread = ack["threadId"]
        over_http = await call(stack, "GET", f"/threads/{thread}/messages?cursor=-1")
        assert over_http.status_code == 400
        assert [f["field"] for f in over_http.json()["error"]["fields"]] == ["cursor"]
        since = len(sub.messages)
        await sub.send({"action": "history", "threadId": thread, "cursor": -1})
        refused = await sub.wait_for(
            lambda m: m.get("type") in ("error", "history"), 10, since=since
        )
        assert refused["type"] == "error", refused
        assert refused["error"]["type"] == "invalid_request"
        assert [f["field"] for f in refused["error"]["fields"]] == ["cursor"]
        # A cursor of digits still reads the page, as the `nextCursor` a page hands back is one.
        assert [m["content"] for m in (await history(sub, thread, cursor="1"))["messages"]] == [
            "one"
        ]
    finally:
        await sub.close()
