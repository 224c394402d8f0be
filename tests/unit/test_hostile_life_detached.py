"""Hostile tests of a detached relay's ack (DETACH_MODE=lambda): a table hiccup while the
ack waits for the first byte must not tell the caller "failed, try again" about a stream
that runs all the same (its pages would get a stream the backend retries beside it, and a
run on a thread would lose its thread to that retry)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from botocore.exceptions import ClientError

from streaming_proxy import aws
from streaming_proxy.errors import DependencyUnavailable
from streaming_proxy.service import StreamService
from streaming_proxy.streams import StreamRecord, StreamStore
from tests.unit.conftest import MOTO_TABLE
from tests.unit.test_lambda_mode import RecordingPoster, lambda_app, request, settings


def hiccup(fn: Any, times: int = 1) -> Any:
    """`fn`, failing its first `times` calls as DynamoDB does when throttled."""
    left = [times]

    def call(*args: Any, **kwargs: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise ClientError({"Error": {"Code": "ThrottlingException"}}, "GetItem")
        return fn(*args, **kwargs)

    return call


async def ended(poster: RecordingPoster) -> list[dict[str, Any]]:
    async with asyncio.timeout(5):
        while not poster.posts or poster.posts[-1][1]["type"] != "end":  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    return [m for _, m in poster.posts]


async def test_a_failed_poll_of_the_ack_still_answers_the_stream_that_runs(
    aws_env: None,
) -> None:
    poster = RecordingPoster()
    service = StreamService(settings(), poster=poster)
    service.connections.open("conn1", "app1", ["room"])
    client, _ = await lambda_app(service)
    service.streams.get = hiccup(service.streams.get)  # type: ignore[method-assign]
    r = await client.post("/llm/query", json=request(delayMs=200))
    assert r.status_code == 200, r.text
    assert r.json()["streamStatus"] == "streaming"
    messages = await ended(poster)
    assert messages[-1]["finish_reason"] == "stop"
    await client.aclose()
    await service.aclose()


async def test_a_failed_ack_mark_still_answers_the_stream_that_runs(aws_env: None) -> None:
    """The wait ran out before the first byte and marking the caller answered failed once:
    the stream still runs, so the caller is told `pending`, and an early failure of the
    relay after that still reaches the pages (the mark landed on a retry)."""
    poster = RecordingPoster()
    service = StreamService(settings(ack_wait_seconds=0.3), poster=poster)
    service.connections.open("conn1", "app1", ["room"])
    client, _ = await lambda_app(service)
    service.streams.mark_acked = hiccup(service.streams.mark_acked)  # type: ignore[method-assign]
    r = await client.post("/llm/query", json=request(delayMs=1000, failAfter=0, failStatus=500))
    assert r.status_code == 200, r.text
    assert r.json()["streamStatus"] == "pending"
    messages = await ended(poster)
    assert [m["type"] for m in messages] == ["threadInfo", "error", "end"]
    await client.aclose()
    await service.aclose()


async def test_an_ack_the_table_never_marks_is_a_503_and_its_stream_is_stopped(
    aws_env: None,
) -> None:
    poster = RecordingPoster()
    service = StreamService(settings(ack_wait_seconds=0.3), poster=poster)
    service.connections.open("conn1", "app1", ["room"])
    client, invoked = await lambda_app(service)
    service.streams.mark_acked = hiccup(service.streams.mark_acked, 99)  # type: ignore[method-assign]
    r = await client.post("/llm/query", json=request(delayMs=1500))
    assert r.status_code == 503, r.text
    assert r.json()["error"]["type"] == "dependency_unavailable"
    messages = await ended(poster)  # the caller will retry: this one does not run on
    assert [m["type"] for m in messages] == ["threadInfo", "end"]
    assert messages[-1]["finish_reason"] == "cancelled"
    record = service.streams.get(invoked[0]["streamingProxyJob"]["stream_id"])
    assert record is not None and record.status == "cancelled"
    await client.aclose()
    await service.aclose()


async def test_an_event_lambda_took_though_the_invoke_failed_runs_no_stream(
    aws_env: None,
) -> None:
    """The invoke raised (the connection dropped after Lambda had queued the event): the
    caller is told 503 and its record says failed, so the event's relay, coming after
    that, must not run a stream beside the caller's retry."""
    poster = RecordingPoster()
    service = StreamService(settings(), poster=poster)
    service.connections.open("conn1", "app1", ["room"])
    client, invoked = await lambda_app(service)
    deliver = service.lambda_detach.invoke_self
    queued: list[bytes] = []

    def invoke_then_drop(event: bytes) -> None:
        queued.append(event)
        raise DependencyUnavailable("could not start the stream (ReadTimeoutError)")

    service.lambda_detach.invoke_self = invoke_then_drop  # type: ignore[method-assign]
    r = await client.post("/llm/query", json=request(delayMs=50))
    assert r.status_code == 503, r.text
    deliver(queued[0])  # Lambda delivers the event it had queued
    await asyncio.sleep(1.0)
    assert poster.posts == []
    record = service.streams.get(invoked[0]["streamingProxyJob"]["stream_id"])
    assert record is not None and record.status == "failed"
    await client.aclose()
    await service.aclose()


async def test_a_relay_that_claimed_before_its_invoke_failed_stops_at_once(
    aws_env: None,
) -> None:
    """The same, with the event's relay quicker than the failed invoke's answer: it had
    claimed the job and waits for its provider when the ack fails the stream; it stops
    there (nothing but its cancelled `end` reaches the pages), never streams the answer."""
    poster = RecordingPoster()
    service = StreamService(settings(), poster=poster)
    service.connections.open("conn1", "app1", ["room"])
    client, invoked = await lambda_app(service)
    deliver = service.lambda_detach.invoke_self

    def invoke_claimed_then_drop(event: bytes) -> None:
        deliver(event)
        stream_id = invoked[-1]["streamingProxyJob"]["stream_id"]
        for _ in range(200):  # in the worker thread, as the boto3 call would wait
            record = service.streams.get(stream_id)
            if record is not None and record.claimed:
                break
            time.sleep(0.01)
        raise DependencyUnavailable("could not start the stream (ReadTimeoutError)")

    service.lambda_detach.invoke_self = invoke_claimed_then_drop  # type: ignore[method-assign]
    r = await client.post("/llm/query", json=request(delayMs=1500))
    assert r.status_code == 503, r.text
    messages = await ended(poster)
    assert [m["type"] for m in messages] == ["threadInfo", "end"]
    assert messages[-1]["finish_reason"] == "cancelled"
    record = service.streams.get(invoked[0]["streamingProxyJob"]["stream_id"])
    assert record is not None and record.status == "failed"
    await client.aclose()
    await service.aclose()


async def test_a_throttled_claim_is_retried_and_the_stream_runs(aws_env: None) -> None:
    """A throttle at the claim was the relay's 503, which the dead-letter handler turns
    into a failed stream: it is retried instead, and the stream reaches its pages whole."""
    poster = RecordingPoster()
    service = StreamService(settings(), poster=poster)
    service.connections.open("conn1", "app1", ["room"])
    client, _ = await lambda_app(service)
    service.streams.claim = hiccup(service.streams.claim, 2)  # type: ignore[method-assign]
    r = await client.post("/llm/query", json=request())
    assert r.status_code == 200, r.text
    messages = await ended(poster)
    assert "".join(m["content"] for m in messages if m["type"] == "delta") == "one two three four"
    assert messages[-1]["finish_reason"] == "stop"
    await client.aclose()
    await service.aclose()


def test_a_claim_whose_answer_was_lost_is_still_its_claimants(aws_env: None) -> None:
    """The claim landed but its answer did not (a timeout): the same delivery's retry is
    its own claim again, while another delivery's is refused."""
    streams = StreamStore(aws.dynamodb("us-east-1", None), MOTO_TABLE)
    streams.create(StreamRecord("st_c", "app1", "onLlm", ["room"]))
    assert streams.claim("st_c", "delivery-1") is True
    assert streams.claim("st_c", "delivery-1") is True
    assert streams.claim("st_c", "delivery-2") is False
    assert streams.claim("st_c") is False
