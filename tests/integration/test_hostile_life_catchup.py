"""Hostile tests of catch-up: a page that joins, leaves and rejoins a running stream's
channels (by `subscribe`, not only at connect) ends with the exact text, contiguous seq
and one `end`: no gap and no duplicate at the seam."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import Stack
from tests.delivery import assert_complete
from tests.integration.test_thread_history import history
from tests.integration.test_threads import run, run_body
from tests.wsclient import Subscriber

TEXT = " ".join(f"t{i}" for i in range(150))


async def start(stack: Stack, channels: list[str], delay: int = 15) -> str:
    body: dict[str, Any] = {
        "channels": channels,
        "actionName": "onLlm",
        "payload": {
            "provider": "mock",
            "messages": [{"role": "user", "content": "x"}],
            "providerArgs": {"text": TEXT, "delayMs": delay},
        },
    }
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        r = await client.post("/llm/query", json=body, headers={"x-api-key": stack.api_key})
    assert r.status_code == 200, r.text
    return str(r.json()["streamId"])


async def ask(sub: Subscriber, message: dict[str, Any], reply: str) -> None:
    since = len(sub.messages)
    await sub.send(message)
    await sub.wait_for(lambda m: m.get("type") == reply and "seq" not in m, since=since)


async def subscribe(stack: Stack, sub: Subscriber, channel: str) -> None:
    """Join `channel` on an open connection, with a token for it."""
    await ask(
        sub,
        {"action": "subscribe", "channel": channel, "token": stack.token(channel)},
        "subscribed",
    )


async def past(sub: Subscriber, stream_id: str, seq: int) -> None:
    await sub.wait_for(lambda m: m.get("streamId") == stream_id and m.get("seq", -1) >= seq)


async def test_a_page_that_subscribes_mid_stream_is_caught_up_at_the_seam(stack: Stack) -> None:
    early = await Subscriber.open(stack.ws, stack.token("cu-early"))
    late = await Subscriber.open(stack.ws, stack.token("cu-other"))
    try:
        sid = await start(stack, ["cu-early", "cu-late"])
        await past(early, sid, 20)
        await subscribe(stack, late, "cu-late")
        messages = await late.stream(sid, within=30)
        assert messages[0]["type"] == "snapshot" and messages[0]["catchUp"] is True
        assert_complete(messages, TEXT)
        assert_complete(await early.stream(sid, within=30), TEXT)
    finally:
        await early.close()
        await late.close()


async def test_a_page_that_leaves_and_rejoins_mid_stream_ends_whole(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("cu-rejoin"))
    try:
        sid = await start(stack, ["cu-rejoin"])
        await past(sub, sid, 10)
        await ask(sub, {"action": "unsubscribe", "channel": "cu-rejoin"}, "unsubscribed")
        await asyncio.sleep(1.5)  # the stream goes on without this page a while
        held = max(m["seq"] for m in sub.of(sid))
        await subscribe(stack, sub, "cu-rejoin")
        await sub.stream(sid, within=30)
        after = [m for m in sub.of(sid) if m["type"] == "snapshot" or m["seq"] > held]
        snapshots = [m for m in after if m["type"] == "snapshot"]
        assert snapshots and snapshots[0]["seq"] > held, "no catch-up on rejoining"
        # What a browser does: everything it held, the catch-up, then the live tail.
        before = [m for m in sub.of(sid) if m["type"] != "snapshot" and m["seq"] <= held]
        assert_complete(before + after, TEXT)
    finally:
        await sub.close()


async def test_joining_a_second_channel_of_the_same_stream_sends_nothing_twice(
    stack: Stack,
) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("cu-one"))
    try:
        sid = await start(stack, ["cu-one", "cu-two"])
        await past(sub, sid, 10)
        await subscribe(stack, sub, "cu-two")
        await asyncio.sleep(1.5)  # a membership refresh or two finds it in both
        await ask(sub, {"action": "unsubscribe", "channel": "cu-one"}, "unsubscribed")
        messages = await sub.stream(sid, within=30)
        assert_complete(messages, TEXT)
    finally:
        await sub.close()


async def test_a_page_joining_after_300_kb_is_caught_up_whole_in_parts(stack: Stack) -> None:
    # 500 KB of UTF-8 in 300 pieces; the late page joins past 300 KB, its catch-up in parts.
    text = "".join(f"{i:07d}é " for i in range(50_000))
    body: dict[str, Any] = {
        "channels": ["cu-big"],
        "actionName": "onLlm",
        "payload": {
            "provider": "mock",
            "messages": [{"role": "user", "content": "x"}],
            "providerArgs": {"text": text, "delayMs": 10, "chunks": 300},
        },
    }
    early = await Subscriber.open(stack.ws, stack.token("cu-big"))
    try:
        async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
            r = await client.post("/llm/query", json=body, headers={"x-api-key": stack.api_key})
        assert r.status_code == 200, r.text[:300]
        sid = r.json()["streamId"]
        await past(early, sid, 120)
        late = await Subscriber.open(stack.ws, stack.token("cu-big"))
        try:
            messages = await late.stream(sid, within=20)
            snapshots = [m for m in messages if m["type"] == "snapshot"]
            assert len(snapshots) >= 2 and all(m["catchUp"] for m in snapshots)
            assert_complete(messages, text)
        finally:
            await late.close()
        assert_complete(await early.stream(sid, within=30), text)
    finally:
        await early.close()


async def test_snapshots_asked_mid_stream_hold_exactly_the_text_up_to_their_seq(
    stack: Stack,
) -> None:
    """With a wide coalescing window, every snapshot a page asks for while the stream runs
    ends on the seq of a message the channel got (never inside a merged one) and holds the
    text of exactly the messages up to it."""
    sub = await Subscriber.open(stack.ws, stack.token("cu-snap"))
    body: dict[str, Any] = {
        "channels": ["cu-snap"],
        "actionName": "onLlm",
        "options": {"flushIntervalMs": 300},
        "payload": {
            "provider": "mock",
            "messages": [{"role": "user", "content": "x"}],
            "providerArgs": {"text": TEXT, "delayMs": 12},
        },
    }
    try:
        async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
            r = await client.post("/llm/query", json=body, headers={"x-api-key": stack.api_key})
        sid = r.json()["streamId"]
        for _ in range(8):
            await asyncio.sleep(0.25)
            await sub.send({"action": "resume", "streamId": sid})
        await sub.stream(sid, within=30)
        await asyncio.sleep(0.5)
        live = [m for m in sub.of(sid) if m["type"] != "snapshot"]
        ends = {m["seq"] for m in live} | {-1}
        snaps = [m for m in sub.of(sid) if m["type"] == "snapshot"]
        assert len(snaps) == 8
        for snap in snaps:
            assert snap["seq"] in ends, f"snapshot seq {snap['seq']} inside a merged message"
            text = "".join(
                m["content"] for m in live if m["type"] == "delta" and m["seq"] <= snap["seq"]
            )
            assert snap["content"] == text
    finally:
        await sub.close()


async def test_a_history_cursor_past_the_end_or_not_a_number_answers_clearly(
    stack: Stack,
) -> None:
    channel = "cu-history"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        ack, _ = await run(stack, sub, run_body(channel, "one"))
        thread = ack["threadId"]
        for past_end in ("2", 2, "999999999", 10**15):
            page = await history(sub, thread, cursor=past_end)
            assert (page["type"], page["count"], page["messages"]) == ("history", 0, [])
            assert page["nextCursor"] is None and page["cursor"] == str(past_end)
        for bad in ("1e3", "", " 1", "0x1", 1.0, True, None, "-1", "1234567890"):
            since = len(sub.messages)
            await sub.send({"action": "history", "threadId": thread, "cursor": bad})
            reply = await sub.wait_for(lambda m: m.get("type") in ("error", "history"), since=since)
            assert reply["type"] == "error", (bad, reply)
            assert [f["field"] for f in reply["error"]["fields"]] == ["cursor"], bad
    finally:
        await sub.close()
