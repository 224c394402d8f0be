"""Hostile tests of a stream's life after it started: stop, resume, catch-up.

Every page must end with the exact text, contiguous seq and one `end`; a stop or a resume
of a stream that is over (or stopped twice, or racing its end) answers and changes nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from streaming_proxy.tablekeys import stream_key
from tests.conftest import Stack
from tests.conftest import app_post as post
from tests.delivery import assert_complete, replay
from tests.wsclient import Subscriber

WORDS = " ".join(f"w{i}" for i in range(60))


def body(channels: list[str], text: str = WORDS, delay: int = 20, **args: Any) -> Any:
    return {
        "channels": channels,
        "actionName": "onLlm",
        "payload": {
            "provider": "mock",
            "messages": [{"role": "user", "content": "x"}],
            "providerArgs": {"text": text, "delayMs": delay, **args},
        },
    }


async def start(stack: Stack, channel: str, **kw: Any) -> str:
    r = await post(stack, "/llm/query", body([channel], **kw))
    assert r.status_code == 200, r.text
    return str(r.json()["streamId"])


async def resumed(sub: Subscriber, stream_id: str) -> dict[str, Any]:
    """The whole snapshot `resume` answers (its parts joined)."""
    since = len(sub.messages)
    await sub.send({"action": "resume", "streamId": stream_id})
    first = await sub.wait_for(
        lambda m: (
            m.get("type") == "snapshot" and m.get("streamId") == stream_id and not m.get("catchUp")
        ),
        since=since,
    )
    parts = first.get("parts", 1)
    while True:
        got = [
            m
            for m in sub.messages[since:]
            if m.get("type") == "snapshot"
            and m.get("streamId") == stream_id
            and not m.get("catchUp")
        ]
        if len(got) >= parts:
            break
        await asyncio.sleep(0.05)
    got.sort(key=lambda m: m.get("part", 0))
    return {**got[0], "content": "".join(m["content"] for m in got[:parts])}


async def test_a_finished_stream_resumes_as_its_end_said(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("life-done"))
    try:
        sid = await start(stack, "life-done", delay=1)
        messages = await sub.stream(sid)
        state = assert_complete(messages, WORDS)
        await stack.finished(sid)  # the final record is written after `end` is sent
        snap = await resumed(sub, sid)
        assert state.end is not None
        assert (snap["status"], snap["seq"], snap["content"]) == ("done", state.end["seq"], WORDS)
        assert snap["finish_reason"] == state.end["finish_reason"] == "stop"
        assert snap["usage"] == state.end["usage"]
    finally:
        await sub.close()


async def test_stop_of_an_ended_stream_changes_nothing_on_every_route(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("life-ended"))
    try:
        sid = await start(stack, "life-ended", delay=1)
        await sub.stream(sid)
        await stack.finished(sid)
        http = await post(stack, "/llm/query/stop", {"streamId": sid})
        token = await post(
            stack,
            "/llm/query/stop",
            {"streamId": sid, "token": stack.token("life-ended")},
            **{"x-api-key": ""},
        )
        for answer in (http, token):
            assert answer.status_code == 200, answer.text
            assert answer.json() == {
                "success": True,
                "status": "stopped",
                "streamId": sid,
                "streamStatus": "done",
            }
        since = len(sub.messages)
        await sub.send({"action": "stop", "streamId": sid})
        reply = await sub.wait_for(lambda m: m.get("type") == "stopped", since=since)
        assert reply == {"type": "stopped", "streamId": sid, "streamStatus": "done"}
        snap = await resumed(sub, sid)
        assert (snap["status"], snap["finish_reason"]) == ("done", "stop")
        row = stack.dynamodb_client().get_item(TableName=stack.table, Key=stream_key(sid))
        assert row.get("Item", {}).get("cancelRequested", {}).get("BOOL") is False
    finally:
        await sub.close()


async def test_a_stop_twice_and_a_stop_racing_the_end_give_one_end(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("life-race"))
    try:
        for delay in (0, 2, 5):
            sid = await start(stack, "life-race", text="a b c d e f", delay=delay)
            stops = [post(stack, "/llm/query/stop", {"streamId": sid}) for _ in range(3)]
            answers = await asyncio.gather(*stops)
            assert all(a.status_code == 200 and a.json()["status"] == "stopped" for a in answers)
            messages = await sub.stream(sid)
            await stack.finished(sid)
            state = replay(sub.of(sid))
            assert state.ends == 1 and messages[-1]["type"] == "end"
            reason = messages[-1]["finish_reason"]
            assert reason in ("stop", "cancelled")
            snap = await resumed(sub, sid)
            expected = "done" if reason == "stop" else "cancelled"
            assert (snap["status"], snap["seq"]) == (expected, messages[-1]["seq"])
            assert snap["content"] == state.text
    finally:
        await sub.close()


async def test_a_stopped_stream_resumes_with_exactly_what_pages_got(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("life-stopped"))
    try:
        sid = await start(stack, "life-stopped", delay=30)
        await sub.wait_for(lambda m: m.get("streamId") == sid and m.get("seq", 0) >= 5)
        await sub.send({"action": "stop", "streamId": sid})
        messages = await sub.stream(sid)
        await stack.finished(sid)
        state = replay(messages)
        assert state.end is not None and state.end["finish_reason"] == "cancelled"
        snap = await resumed(sub, sid)
        assert (snap["status"], snap["seq"]) == ("cancelled", state.end["seq"])
        assert snap["content"] == state.text and snap["finish_reason"] == "cancelled"
        again = await post(stack, "/llm/query/stop", {"streamId": sid})
        assert again.json()["streamStatus"] == "cancelled"
    finally:
        await sub.close()


async def test_two_resumes_at_once_on_one_connection_both_answer_whole(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("life-twice"))
    big = "x" * 200_000 + " end"
    try:
        sid = await start(stack, "life-twice", text=big, delay=0)
        await sub.stream(sid, within=30)
        await stack.finished(sid)
        since = len(sub.messages)
        await asyncio.gather(
            sub.send({"action": "resume", "streamId": sid}),
            sub.send({"action": "resume", "streamId": sid, "afterSeq": 3}),
        )
        await asyncio.sleep(2)
        parts = [
            m
            for m in sub.messages[since:]
            if m.get("type") == "snapshot" and m.get("streamId") == sid
        ]
        assert len(parts) == 2 * parts[0]["parts"]
        for i in range(parts[0]["parts"]):
            got = {m["content"] for m in parts if m["part"] == i}
            assert len(got) == 1
        text = "".join(
            next(m["content"] for m in parts if m["part"] == i) for i in range(parts[0]["parts"])
        )
        assert text == big
    finally:
        await sub.close()


async def test_resume_with_a_bad_after_seq_is_refused_clearly(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("life-badseq"))
    try:
        sid = await start(stack, "life-badseq", delay=1)
        await sub.stream(sid)
        await stack.finished(sid)
        for bad in ("3", 1.5, None, True, [1], {"n": 1}):
            since = len(sub.messages)
            await sub.send({"action": "resume", "streamId": sid, "afterSeq": bad})
            try:
                reply = await sub.wait_for(lambda m: "seq" not in m, since=since, within=3)
            except TimeoutError:
                got = sub.messages[since:]
                raise AssertionError(f"no reply to afterSeq {bad!r}: {got}") from None
            assert reply["type"] == "error", (bad, reply)
            assert reply["error"]["type"] == "invalid_request", (bad, reply)
        for odd in (-7, 10**6, 10**40):  # ignored: a snapshot is always whole
            since = len(sub.messages)
            await sub.send({"action": "resume", "streamId": sid, "afterSeq": odd})
            reply = await sub.wait_for(
                lambda m: m.get("type") in ("snapshot", "error"), since=since
            )
            assert reply["type"] == "snapshot" and reply["content"] == WORDS, (odd, reply)
    finally:
        await sub.close()


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        (b"[]", 400, "bad_request"),
        (b"null", 400, "bad_request"),
        (b'"st_x"', 400, "bad_request"),
        (b"{}", 400, "invalid_request"),
        (b'{"streamId": 5}', 400, "invalid_request"),
        (b'{"streamId": ""}', 400, "invalid_request"),
        (b'{"streamId": "' + b"s" * 129 + b'"}', 400, "invalid_request"),
        (b'{"streamId": "st_\\ud800"}', 400, "bad_request"),
        (b'{"streamId": "st_x", "token": 5}', 400, "invalid_request"),
    ],
)
def test_a_malformed_stop_is_a_4xx_in_the_klai_shape(
    stack: Stack, body: bytes, status: int, kind: str
) -> None:
    r = httpx.post(
        f"{stack.http}/llm/query/stop",
        content=body,
        headers={"x-api-key": stack.api_key, "content-type": "application/json"},
        timeout=10,
    )
    assert r.status_code == status, r.text
    assert r.json()["success"] is False and r.json()["error"]["type"] == kind
    assert r.json()["error"]["code"] == status


@pytest.mark.parametrize(
    ("token", "status"), [("not-a-token", 403), ("", 401), ("eyJ.eyJ.sig", 403)]
)
def test_a_stop_with_a_bad_page_token_and_no_key_is_refused(
    stack: Stack, token: str, status: int
) -> None:
    r = httpx.post(
        f"{stack.http}/llm/query/stop", json={"streamId": "st_x", "token": token}, timeout=10
    )
    assert r.status_code == status, r.text
    assert r.json()["success"] is False


async def test_a_failed_stream_resumes_with_what_pages_got_and_its_end(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("life-failed"))
    try:
        sid = await start(stack, "life-failed", delay=5, failAfter=20, failStatus=502)
        messages = await sub.stream(sid)
        await stack.finished(sid)
        state = replay(messages)
        assert state.end is not None and state.end["finish_reason"] == "error"
        assert [m["type"] for m in messages][-2:] == ["error", "end"]
        snap = await resumed(sub, sid)
        assert (snap["status"], snap["seq"], snap["finish_reason"]) == (
            "failed",
            state.end["seq"],
            "error",
        )
        assert snap["content"] == state.text and snap["usage"] == state.end["usage"]
    finally:
        await sub.close()
