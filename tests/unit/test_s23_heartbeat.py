"""A detached relay's heartbeat: written on its record while it streams, read by the
dead-letter handler to tell a live relay's stream from a lost one, and the relay's own
stop when a dead letter failed its stream all the same (nothing after that `end`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from itertools import pairwise
from typing import Any

from streaming_proxy import aws
from streaming_proxy.deadletter import DeadLetters, InvocationRecord
from streaming_proxy.heartbeat import MAX_RELAY_SECONDS
from streaming_proxy.outcome import unknown_usage
from streaming_proxy.service import StreamService
from streaming_proxy.streams import StreamRecord, StreamStore
from tests.unit.conftest import MOTO_TABLE
from tests.unit.test_lambda_mode import RecordingPoster, lambda_app, request, settings


def store() -> StreamStore:
    return StreamStore(aws.dynamodb("us-east-1", None), MOTO_TABLE)


def claimed(
    stream_id: str, beat_age: float = 0.0, claim_age: float | None = None, beat_seconds: int = 10
) -> None:
    """A streaming record claimed by a relay whose last beat was `beat_age` seconds ago."""
    streams = store()
    streams.create(StreamRecord(stream_id, "app1", "onLlm", ["room"]))
    assert streams.claim(stream_id, beat_seconds=beat_seconds)
    streams.mark_started(stream_id)
    now = time.time()
    aws.dynamodb("us-east-1", None).update_item(
        TableName=MOTO_TABLE,
        Key={"pk": {"S": f"STREAM#{stream_id}"}, "sk": {"S": "META"}},
        UpdateExpression="SET aliveAt = :alive, claimedAt = :claimed",
        ExpressionAttributeValues={
            ":alive": {"N": f"{now - beat_age:.3f}"},
            ":claimed": {"N": f"{now - (beat_age if claim_age is None else claim_age):.3f}"},
        },
    )


def letter(stream_id: str, condition: str = "RetriesExhausted") -> InvocationRecord:
    job = {"stream_id": stream_id, "app_id": "app1", "kind": "llm", "channels": ["room"]}
    record = {
        "requestContext": {"condition": condition, "requestId": "req-1"},
        "requestPayload": {"streamingProxyJob": job},
    }
    return InvocationRecord.model_validate(record)


async def posted_while(stream_id: str) -> tuple[str, list[dict[str, Any]]]:
    """Handle one RetriesExhausted dead letter for `stream_id`: its outcome and what the
    channel's subscriber got."""
    poster = RecordingPoster()
    service = StreamService(settings(), poster=poster)
    service.connections.open("conn1", "app1", ["room"])
    letters = DeadLetters(service.streams, service.publisher, service.db, service.runs)
    handled = await letters.handle(letter(stream_id))
    await service.aclose()
    return handled, [m for _, m in poster.posts]


def test_the_claim_is_the_first_beat_and_a_beat_stops_once_the_stream_is_final(
    aws_env: None,
) -> None:
    streams = store()
    streams.create(StreamRecord("st_b", "app1", "onLlm", ["room"]))
    before = time.time()
    assert streams.claim("st_b", beat_seconds=4)
    record = streams.get("st_b")
    assert record is not None and record.heartbeat is not None
    assert record.heartbeat.every == 4 and record.heartbeat.alive_at >= before - 0.01
    assert streams.beat("st_b") is True
    assert streams.mark_lost("st_b", 0, unknown_usage()) is True
    assert streams.beat("st_b") is False  # the relay learns its stream was ended


def test_a_stream_is_not_failed_over_a_beat_newer_than_the_dead_letter_read(
    aws_env: None,
) -> None:
    """The write's own condition: a relay that beat (or claimed) after the handler read
    the record keeps its stream, whatever the handler concluded from its read."""
    claimed("st_race", beat_age=120)
    streams = store()
    stale_before = time.time() - 60
    assert streams.beat("st_race")  # the relay was only slow: it beats again
    assert streams.mark_lost("st_race", 3, unknown_usage(), stale_before=stale_before) is False
    record = streams.get("st_race")
    assert record is not None and record.status == "streaming"


async def test_a_dead_letter_defers_a_stream_whose_relay_beats(aws_env: None) -> None:
    claimed("st_live", beat_age=2)
    handled, posts = await posted_while("st_live")
    assert (handled, posts) == ("deferred", [])
    record = store().get("st_live")
    assert record is not None and record.status == "streaming"


async def test_a_dead_letter_fails_a_stream_whose_heartbeat_went_stale(aws_env: None) -> None:
    claimed("st_dead", beat_age=61)  # six beats of 10 s missing: the relay died
    handled, posts = await posted_while("st_dead")
    assert handled == "told"
    assert [m["type"] for m in posts] == ["error", "end"]
    record = store().get("st_dead")
    assert record is not None and record.status == "failed"


async def test_a_relay_that_timed_out_is_reported_at_once(aws_env: None) -> None:
    """Its dead letter comes after the 900 s any run can last, with a heartbeat a few
    seconds old: failed at once, not deferred. No record is deferred for ever either."""
    claimed("st_old", beat_age=3, claim_age=MAX_RELAY_SECONDS + 1)
    handled, posts = await posted_while("st_old")
    assert handled == "told" and [m["type"] for m in posts] == ["error", "end"]


async def test_a_detached_relay_beats_on_its_record_while_it_streams(aws_env: None) -> None:
    poster = RecordingPoster()
    service = StreamService(settings(heartbeat_seconds=1), poster=poster)
    service.connections.open("conn1", "app1", ["room"])
    client, _ = await lambda_app(service)
    r = await client.post("/llm/query", json=request(delayMs=900))  # 4 words: ~3.6 s
    stream_id = r.json()["streamId"]
    beats: list[float] = []
    async with asyncio.timeout(10):
        while not poster.posts or poster.posts[-1][1]["type"] != "end":
            record = service.streams.get(stream_id)
            assert record is not None and record.heartbeat is not None
            if record.status == "streaming" and record.heartbeat.alive_at not in beats:
                beats.append(record.heartbeat.alive_at)
            await asyncio.sleep(0.1)
    await client.aclose()
    await service.aclose()
    assert len(beats) >= 3  # the claim's, then one a second
    assert all(later - earlier >= 0.9 for earlier, later in pairwise(beats))


async def ended_under_relay(end_it: Callable[[str], object]) -> tuple[str, RecordingPoster, int]:
    """A Lambda-mode relay streaming to one page; once its first delta is out, `end_it`
    (given the stream id) writes its record as another party would. Returns the stream
    id, what was posted, and how many posts came before `end_it`, once the relay ran out."""
    poster = RecordingPoster()
    service = StreamService(settings(cancel_poll_seconds=0.05), poster=poster)
    service.connections.open("conn1", "app1", ["room"])
    client, _ = await lambda_app(service)
    r = await client.post("/llm/query", json=request(delayMs=600))
    stream_id = r.json()["streamId"]
    async with asyncio.timeout(5):
        while not any(m["type"] == "delta" for _, m in poster.posts):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    end_it(stream_id)
    marked = len(poster.posts)
    async with asyncio.timeout(5):
        while service._running:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    await client.aclose()
    await service.aclose()
    return stream_id, poster, marked


async def test_a_relay_whose_stream_a_dead_letter_failed_publishes_nothing_more(
    aws_env: None,
) -> None:
    """The rare case the heartbeat cannot rule out (a live relay that could not beat for
    a minute): once the record is failed under it, the relay stops at its next poll and
    sends nothing after the dead letter's `end`: no more text, no second `end`."""

    def lost(stream_id: str) -> None:
        assert store().mark_lost(stream_id, 5, unknown_usage())  # as a dead letter does

    stream_id, poster, marked = await ended_under_relay(lost)
    after = [m for _, m in poster.posts[marked:]]
    assert after == [], json.dumps(after)
    assert all(m["type"] != "end" for _, m in poster.posts)
    record = store().get(stream_id)
    assert record is not None and (record.status, record.last_seq) == ("failed", 5)


async def test_a_relay_whose_start_the_ack_failed_still_ends_its_pages(aws_env: None) -> None:
    """The ack fails a stream it gave up on (`mark_start_failed`) and then sets its cancel
    flag. A relay that polls between the two writes must stop as for a stop, with one
    `end` for its pages, not fall silent as for a dead letter's end (nobody else tells
    them)."""

    def start_failed(stream_id: str) -> None:  # the first write only: no cancel flag
        aws.dynamodb("us-east-1", None).update_item(
            TableName=MOTO_TABLE,
            Key={"pk": {"S": f"STREAM#{stream_id}"}, "sk": {"S": "META"}},
            UpdateExpression="SET #status = :failed, startError = :error",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":failed": {"S": "failed"},
                ":error": {"M": {"status": {"N": "503"}, "message": {"S": "try again"}}},
            },
        )

    _, poster, _ = await ended_under_relay(start_failed)
    ends = [m for _, m in poster.posts if m["type"] == "end"]
    assert len(ends) == 1 and ends[0]["finish_reason"] == "cancelled"
    seqs = [m["seq"] for _, m in poster.posts]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_a_beat_the_table_refuses_is_skipped_and_the_next_ones_go_on() -> None:
    """A throttled beat is one beat missed, not the end of the heartbeat (the handler
    allows STALE_BEATS of them): the relay keeps beating, and stops once a beat finds the
    stream final."""
    from streaming_proxy.blocking import BlockingCalls
    from streaming_proxy.recorder import StreamRecorder

    answers: list[bool | Exception] = [RuntimeError("throttled"), True, RuntimeError("x"), False]
    beaten: list[str] = []

    class Streams:
        def beat(self, stream_id: str) -> bool:
            beaten.append(stream_id)
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    db = BlockingCalls(1, "beats")
    try:
        recorder = StreamRecorder(Streams(), "st_b", db, heartbeat_seconds=0.01)  # type: ignore[arg-type]
        async with asyncio.timeout(2):
            await recorder.keep_alive()  # returns once a beat finds the stream final
    finally:
        db.shutdown()
    assert beaten == ["st_b"] * 4 and answers == []
