"""Detached relays run once, and their ack says how the stream stands.

Lambda may deliver an async event more than once: the relay claims the job on the stream
record first, so a second delivery is dropped. The ack waits up to ACK_WAIT_SECONDS for the
first byte and then says `pending` (not "complete") when it has not come.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

import httpx
import pytest

from streaming_proxy.service import StreamService
from streaming_proxy.streams import StreamRecord, StreamStore
from tests.unit.conftest import MOTO_TABLE
from tests.unit.test_lambda_mode import RecordingPoster, lambda_app, request, settings


def store() -> StreamStore:
    from streaming_proxy import aws

    return StreamStore(aws.dynamodb("us-east-1", None), MOTO_TABLE)


def test_a_job_is_claimed_once_and_the_claim_leaves_the_status_alone(aws_env: None) -> None:
    streams = store()
    streams.create(StreamRecord("st_claim", "app1", "onLlm", ["room"]))
    assert streams.claim("st_claim") is True
    assert streams.claim("st_claim") is False
    record = streams.get("st_claim")
    assert record is not None and record.claimed and record.status == "pending"
    # The ack still learns first byte vs early failure from the status.
    assert streams.mark_started("st_claim") is True
    assert streams.claim("st_unknown") is False


def test_a_lost_stream_is_failed_once_and_a_finished_one_never(aws_env: None) -> None:
    streams = store()
    streams.create(StreamRecord("st_lost", "app1", "onLlm", ["room"]))
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "estimated": True}
    assert streams.mark_lost("st_lost", 2, usage) is True
    record = streams.get("st_lost")
    assert record is not None
    assert (record.status, record.last_seq, record.finish_reason) == ("failed", 2, "error")
    assert streams.mark_lost("st_lost", 2, usage) is False
    streams.create(StreamRecord("st_done", "app1", "onLlm", ["room"]))
    streams.save_final("st_done", "hi", 3, "done", finish_reason="stop", usage=usage)
    assert streams.mark_lost("st_done", 9, usage) is False
    done = streams.get("st_done")
    assert done is not None and (done.status, done.last_seq) == ("done", 3)


async def deliver_twice(
    client: httpx.AsyncClient, event: dict[str, Any], *, together: bool
) -> list[httpx.Response]:
    if together:
        return list(await asyncio.gather(*(client.post("/events", json=event) for _ in "ab")))
    return [await client.post("/events", json=event), await client.post("/events", json=event)]


@pytest.mark.parametrize("together", [True, False], ids=["concurrently", "one-after-another"])
async def test_the_same_event_twice_runs_the_stream_once(
    aws_env: None, together: bool, caplog: pytest.LogCaptureFixture
) -> None:
    poster = RecordingPoster()
    service = StreamService(settings(ack_wait_seconds=0), poster=poster)
    service.connections.open("conn1", "app1", ["room"])
    client, _ = await lambda_app(service)
    events: list[bytes] = []
    service.lambda_detach.invoke_self = events.append  # type: ignore[method-assign]  # we deliver it, twice
    ack = await client.post("/llm/query", json=request())
    assert ack.status_code == 200, ack.text
    event = json.loads(events[0])
    # Threads switch as often as they can, so the two claims really overlap.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with caplog.at_level(logging.WARNING):
            answers = await deliver_twice(client, event, together=together)
    finally:
        sys.setswitchinterval(interval)
    bodies = sorted((r.json() for r in answers), key=lambda b: "duplicate" in b)
    assert [r.status_code for r in answers] == [200, 200]
    assert bodies[0]["finish_reason"] == "stop" and bodies[1]["duplicate"] is True
    types = [m["type"] for _, m in poster.posts]
    assert types.count("threadInfo") == 1 and types.count("end") == 1
    assert "".join(m["content"] for _, m in poster.posts if m["type"] == "delta") == (
        "one two three four"
    )
    dropped = [
        r for r in caplog.records if r.getMessage() == "duplicate detached relay event dropped"
    ]
    assert len(dropped) == 1 and "provider-key-travels" not in caplog.text
    await client.aclose()
    await service.aclose()


@pytest.mark.parametrize("mode", ["lambda", "task"])
async def test_the_ack_says_pending_when_the_first_byte_has_not_come(
    aws_env: None, mode: str
) -> None:
    service = StreamService(
        settings(detach_mode=mode, ack_wait_seconds=0.3), poster=RecordingPoster()
    )
    client, _ = await lambda_app(service)
    if mode == "lambda":  # the event is never delivered: the record stays `pending`
        service.lambda_detach.invoke_self = lambda event: None  # type: ignore[method-assign]
    slow = await client.post("/llm/query", json=request(delayMs=1500))
    chat_body = {**request(delayMs=1500), "actionName": "onChat"}
    slow_chat = await client.post("/stream/create", json=chat_body)
    assert slow.status_code == 200 and slow_chat.status_code == 200
    assert slow.json()["streamStatus"] == "pending"
    assert slow.json()["data"] == {
        "message": "Streaming setup pending",
        "streamId": slow.json()["streamId"],
        "streamStatus": "pending",
    }
    assert slow_chat.json()["message"] == "Streaming setup pending"
    assert slow_chat.json()["streamStatus"] == "pending"
    await client.aclose()
    await service.aclose()


@pytest.mark.parametrize("mode", ["lambda", "task"])
async def test_the_ack_says_complete_once_the_first_byte_came(aws_env: None, mode: str) -> None:
    service = StreamService(
        settings(detach_mode=mode, ack_wait_seconds=3), poster=RecordingPoster()
    )
    client, _ = await lambda_app(service)
    fast = await client.post("/llm/query", json=request())
    assert fast.status_code == 200
    assert fast.json()["data"]["message"] == "Streaming setup complete"
    assert fast.json()["streamStatus"] in {"streaming", "done"}
    await client.aclose()
    await service.aclose()
