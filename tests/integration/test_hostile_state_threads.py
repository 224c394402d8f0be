"""Hostile cases on threads and runs through the real stack: a run whose messages are too
large for its thread, concurrent runs, forged cursors and ids."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from streaming_proxy.outcome import unknown_usage
from streaming_proxy.streams import StreamRecord, StreamStore, new_stream_id
from streaming_proxy.threads import RunStart, ThreadStore, new_run_id
from tests.conftest import RIVAL_KEY, Stack
from tests.integration.test_threads import call, history, run, run_body
from tests.wsclient import Subscriber


async def post_raw(stack: Stack, path: str, body: Any) -> httpx.Response:
    """A body sent as UTF-8 JSON (not ASCII-escaped): the byte count the limit sees."""
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    headers = {"x-api-key": stack.api_key, "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=stack.http, timeout=60) as client:
        return await client.post(path, content=data, headers=headers)


async def test_a_message_too_large_for_its_thread_is_refused_and_the_thread_stays_free(
    stack: Stack,
) -> None:
    channel = "hostile-huge-run"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        ack, _ = await run(stack, sub, run_body(channel, "small"))
        thread = ack["threadId"]
        # Under the body limit as UTF-8, but stored ASCII-escaped (12 characters an emoji).
        huge = run_body(channel, "\U0001f600" * 260_000, thread)
        huge["payload"]["providerArgs"] = {"text": "ok", "delayMs": 0}
        r = await post_raw(stack, "/stream/create/assistants", huge)
        assert r.status_code == 413, r.text[:300]
        assert r.json()["success"] is False
        # Nothing was published and the thread is free for the next run at once.
        _, after = await run(stack, sub, run_body(channel, "next", thread))
        assert [m["content"] for m in await history(stack, thread)] == [
            "small",
            "small",
            "next",
            "next",
        ]
        assert after[-1]["type"] == "end"
    finally:
        await sub.close()


async def test_an_answer_too_large_for_its_thread_still_frees_the_thread(stack: Stack) -> None:
    channel = "hostile-huge-answer"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        ack, _ = await run(stack, sub, run_body(channel, "small"))
        thread = ack["threadId"]
        # A short question, an answer that takes more than a run stores (ASCII-escaped).
        huge = run_body(channel, "tell me", thread, stream=False)
        huge["payload"]["providerArgs"] = {"text": "\U0001f600" * 260_000, "chunks": 4}
        r = await post_raw(stack, "/stream/create/assistants", huge)
        assert r.status_code == 200, r.text[:300]
        assert len(r.json()["data"][0]["text"]["value"]) == 260_000  # the caller had it all
        # The thread is free at once; the run is recorded failed, its question kept.
        ids = {"threadId": thread, "runId": r.json()["runId"]}
        stop = await call(stack, "POST", "/stream/create/assistants/stop", ids)
        assert stop.json()["status"] == "failed", stop.text
        await run(stack, sub, run_body(channel, "next", thread))
        stored = await history(stack, thread)
        assert [(m["content"], m.get("status")) for m in stored] == [
            ("small", None),
            ("small", None),
            ("tell me", None),
            ("", "failed"),
            ("next", None),
            ("next", None),
        ]
    finally:
        await sub.close()


async def test_stopping_a_run_whose_relay_was_lost_frees_its_thread(stack: Stack) -> None:
    """A detached relay Lambda gave up on: the dead letter marks its stream failed, but the
    run still holds its thread (RUN# `running`, the lease for 15 minutes). Stop, the remedy
    the 409 names, must say how the stream ended and free the thread."""
    channel = "hostile-lost-relay"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        ack, _ = await run(stack, sub, run_body(channel, "before"))
        thread = ack["threadId"]
        db = stack.dynamodb_client()
        streams, threads = StreamStore(db, stack.table), ThreadStore(db, stack.table)
        stream_id, run_id = new_stream_id(), new_run_id()
        streams.create(StreamRecord(stream_id, stack.app_id, "onRun", [channel]))
        lease = int(time.time()) + 900
        threads.start_run(stack.app_id, RunStart(thread, run_id, stream_id, False, lease, 3600))
        assert streams.mark_lost(stream_id, 1, unknown_usage())  # what the dead letter does

        blocked = await call(
            stack, "POST", "/stream/create/assistants", run_body(channel, "x", thread)
        )
        assert blocked.status_code == 409
        ids = {"threadId": thread, "runId": run_id}
        stopped = await call(stack, "POST", "/stream/create/assistants/stop", ids)
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["status"] == "failed"
        again = await call(stack, "POST", "/stream/create/assistants/stop", ids)
        assert again.json()["status"] == "failed"
        _, after = await run(stack, sub, run_body(channel, "after", thread))
        assert after[-1]["type"] == "end"
        assert [m["content"] for m in await history(stack, thread)] == [
            "before",
            "before",
            "after",
            "after",
        ]
    finally:
        await sub.close()


async def test_runs_started_at_once_on_one_thread_get_one_thread_and_409s(stack: Stack) -> None:
    channel = "hostile-race"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        ack, _ = await run(stack, sub, run_body(channel, "first"))
        thread = ack["threadId"]
        bodies = [run_body(channel, f"racer {i}", thread) for i in range(6)]
        answers = await asyncio.gather(
            *(call(stack, "POST", "/stream/create/assistants", b) for b in bodies)
        )
        won = [r for r in answers if r.status_code == 200]
        lost = [r for r in answers if r.status_code != 200]
        assert len(won) == 1, [r.status_code for r in answers]
        assert {r.status_code for r in lost} == {409}
        assert all(r.json()["error"]["type"] == "conflict" for r in lost)
        await sub.stream(won[0].json()["streamId"], within=20)
        stored = [m["content"] for m in await history(stack, thread)]
        assert stored[:2] == ["first", "first"] and len(stored) == 4
        assert stored[2] == stored[3] and stored[2].startswith("racer ")
    finally:
        await sub.close()


async def test_a_page_of_huge_messages_ends_at_its_size_bound_and_pages_on(stack: Stack) -> None:
    """Runs of 700 KB questions: a page of 50 messages would be one reply of megabytes per
    request (the WebSocket `history` posts it in hundreds of parts); it ends past 1 MB."""
    big = [c * 700_000 for c in "abc"]
    thread = None
    for text in big:
        body = run_body("hostile-huge-page", text, thread, stream=False)
        body["payload"]["providerArgs"] = {"text": "ok", "delayMs": 0}
        r = await post_raw(stack, "/stream/create/assistants", body)
        assert r.status_code == 200, r.text[:300]
        thread = r.json()["threadId"]
    first = await call(stack, "GET", f"/threads/{thread}/messages")
    assert first.status_code == 200 and len(first.content) < 1_600_000
    page = first.json()
    assert [m["content"] for m in page["messages"]] == [big[0], "ok", big[1]]
    assert page["nextCursor"] == "3"
    rest = (await call(stack, "GET", f"/threads/{thread}/messages?cursor=3")).json()
    assert [m["content"] for m in rest["messages"]] == ["ok", big[2], "ok"]
    assert rest["nextCursor"] is None


async def test_a_deleted_thread_leaves_nothing_a_page_can_read_back(stack: Stack) -> None:
    """Erasing a thread (the right to be forgotten) erases what its runs streamed too: a
    page with a token for the run's channel gets `not_found` from `resume`, not the text."""
    channel = "hostile-forget"
    secret = "my card number is 4111 1111 1111 1111"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        first, _ = await run(stack, sub, run_body(channel, secret))  # the mock echoes it
        second, _ = await run(stack, sub, run_body(channel, secret, first["threadId"]))
        db = stack.dynamodb_client()
        for ack in (first, second):
            assert StreamStore(db, stack.table).get(ack["streamId"], text=True) is not None
        deleted = await call(stack, "DELETE", f"/threads/{first['threadId']}")
        assert deleted.status_code == 200, deleted.text
    finally:
        await sub.close()
    page = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        for ack in (first, second):
            since = len(page.messages)
            await page.send({"action": "resume", "streamId": ack["streamId"]})
            reply = await page.wait_for(lambda m: m.get("type") != "pong", 10, since=since)
            assert reply["type"] == "not_found", reply
            leftovers = db.query(
                TableName=stack.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": f"STREAM#{ack['streamId']}"}},
            )["Items"]
            assert leftovers == []
    finally:
        await page.close()


def _age(stack: Stack, thread: str, seconds: int) -> None:
    """Every item of the thread `seconds` past its TTL, as DynamoDB leaves them for a while
    after THREAD_TTL_DAYS of silence (it deletes expired items late)."""
    db = stack.dynamodb_client()
    past = {"N": str(int(time.time()) - seconds)}
    items = db.query(
        TableName=stack.table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"THREAD#{stack.app_id}#{thread}"}},
    )["Items"]
    for item in items:
        key = {"pk": item["pk"], "sk": item["sk"]}
        db.update_item(
            TableName=stack.table,
            Key=key,
            UpdateExpression="SET expiresAt = :past",
            ExpressionAttributeValues={":past": past},
        )


async def test_a_thread_past_its_ttl_is_gone_though_its_items_linger(stack: Stack) -> None:
    channel = "hostile-aged"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        ack, _ = await run(stack, sub, run_body(channel, "old words"))
        thread = ack["threadId"]
        _age(stack, thread, 3600)
        read = await call(stack, "GET", f"/threads/{thread}/messages")
        assert read.status_code == 404, read.text
        assert read.json()["error"]["type"] == "not_found"
        again = await call(
            stack, "POST", "/stream/create/assistants", run_body(channel, "x", thread)
        )
        assert again.status_code == 404, again.text
        query = await call(stack, "POST", "/llm/query", run_body(channel, "x", thread))
        assert query.status_code == 404, query.text
        # Erasing it still takes what DynamoDB left.
        assert (await call(stack, "DELETE", f"/threads/{thread}")).status_code == 200
        left = stack.dynamodb_client().query(
            TableName=stack.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"THREAD#{stack.app_id}#{thread}"}},
        )["Items"]
        assert left == []
    finally:
        await sub.close()


async def test_a_message_may_not_set_the_status_a_thread_marks_answers_with(
    stack: Stack,
) -> None:
    """`status` on a stored message is the proxy's mark of an answer that did not end well
    (later runs leave such an empty answer out); a caller's own would be taken for it."""
    channel = "hostile-status"
    body = run_body(channel, "q")
    body["payload"]["messages"] = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "", "status": "cancelled"},
        {"role": "user", "content": "q", "status": "whatever"},
    ]
    refused = await call(stack, "POST", "/stream/create/assistants", body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert [f["field"] for f in error["fields"]] == [
        "payload.messages.1.status",
        "payload.messages.2.status",
    ]
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:  # nothing was taken or stored: the same messages without it run
        for message in body["payload"]["messages"]:
            message.pop("status", None)
        body["payload"]["messages"][1]["content"] = "an answer"
        ack, events = await run(stack, sub, body)
        assert events[-1]["type"] == "end"
        assert [m.get("status") for m in await history(stack, ack["threadId"])] == [None] * 4
    finally:
        await sub.close()


async def test_stopping_a_run_whose_stream_record_is_gone_ends_it_failed(stack: Stack) -> None:
    """A run lost so long ago that its stream's record aged out (a day): stop answers how
    the run ended, `failed` (one of the statuses it may answer), and frees the thread."""
    channel = "hostile-gone-stream"
    sub = await Subscriber.open(stack.ws, stack.token(channel))
    try:
        ack, _ = await run(stack, sub, run_body(channel, "before"))
        thread = ack["threadId"]
        threads = ThreadStore(stack.dynamodb_client(), stack.table)
        run_id = new_run_id()
        lease = int(time.time()) + 900
        start = RunStart(thread, run_id, new_stream_id(), False, lease, 3600)
        threads.start_run(stack.app_id, start)  # no stream record: it is gone
        ids = {"threadId": thread, "runId": run_id}
        for _ in range(2):
            stopped = await call(stack, "POST", "/stream/create/assistants/stop", ids)
            assert stopped.status_code == 200, stopped.text
            assert stopped.json()["status"] == "failed"
        record = threads.run(stack.app_id, thread, run_id)
        assert record is not None and record.status == "failed"
        _, after = await run(stack, sub, run_body(channel, "after", thread))
        assert after[-1]["type"] == "end"
    finally:
        await sub.close()


async def test_deleting_a_thread_erases_no_other_apps_thread_or_stream(stack: Stack) -> None:
    """The streams an erase deletes are the ones its own thread's runs name: another app's
    run on a channel of the same name, and its thread, stay readable to that app."""
    channel = "hostile-forget-shared-name"
    mine, theirs = await Subscriber.open(stack.ws, stack.token(channel)), None
    try:
        theirs = await Subscriber.open(stack.ws, stack.token(channel, api_key=RIVAL_KEY))
        r = await call(
            stack, "POST", "/stream/create/assistants", run_body(channel, "keep"), RIVAL_KEY
        )
        assert r.status_code == 200, r.text
        kept = r.json()
        await theirs.stream(kept["streamId"], within=20)
        ack, _ = await run(stack, mine, run_body(channel, "erase me"))
        assert (await call(stack, "DELETE", f"/threads/{ack['threadId']}")).status_code == 200
        read = await call(stack, "GET", f"/threads/{kept['threadId']}/messages", key=RIVAL_KEY)
        assert [m["content"] for m in read.json()["messages"]] == ["keep", "keep"]
        since = len(theirs.messages)
        await theirs.send({"action": "resume", "streamId": kept["streamId"]})
        reply = await theirs.wait_for(lambda m: m.get("type") != "pong", 10, since=since)
        assert reply["type"] == "snapshot" and reply["content"] == "keep", reply
    finally:
        await mine.close()
        if theirs is not None:
            await theirs.close()
