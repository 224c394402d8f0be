"""DeadLetterFunction: a detached relay Lambda gave up on is told to its channels.

The handler runs as Lambda runs it (an SQS batch of on-failure invocation records) against
moto's DynamoDB server and the gateway emulator, where a real WebSocket subscriber listens.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from devstack.gateway_events import LambdaContext
from devstack.stack import load_function_module
from streaming_proxy import aws
from streaming_proxy.api.app import create_app
from streaming_proxy.auth import key_digest
from streaming_proxy.config import get_settings
from streaming_proxy.contract import Payload
from streaming_proxy.deadletter import DeadLetters
from streaming_proxy.runs import ThreadRuns
from streaming_proxy.service import StreamService
from streaming_proxy.streams import StreamRecord, StreamStore
from tests.integration import test_gateway as gateway_tests
from tests.integration.test_gateway import TABLE, Gateway, connection_id_of, open_client, token
from tests.wsclient import nothing_more, until_end

moto_endpoint = gateway_tests.moto_endpoint
env = gateway_tests.env
gateway = gateway_tests.gateway

DEADLETTER = load_function_module("deadletter")
PROVIDER_KEY = "provider-key-inside-a-dead-letter"
UNREAD = "dead letter without a readable job dropped; its stream was not told"
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
Client = tuple[httpx.AsyncClient, StreamService]
APP_KEY = "app-key-for-dead-letter-tests"
ASSISTANTS = "/stream/create/assistants"


@pytest.fixture
def handle(gateway: Gateway) -> Iterator[Callable[..., Any]]:
    """Run the deployed handler (in a thread: it owns its event loop, as in Lambda)."""
    DEADLETTER.default_dead_letters.cache_clear()

    async def call(*bodies: str) -> dict[str, Any]:
        records = [{"messageId": f"m{i}", "body": body} for i, body in enumerate(bodies)]
        answer: dict[str, Any] = await asyncio.to_thread(
            DEADLETTER.handler, {"Records": records}, LambdaContext()
        )
        return answer

    yield call
    DEADLETTER.default_dead_letters.cache_clear()


def streams() -> StreamStore:
    return StreamStore(aws.dynamodb("us-east-1", get_settings().dynamodb_endpoint_url), TABLE)


def registered(stream_id: str, status: str = "pending", beat_age: float = 0.0) -> None:
    """A stream record; a `streaming` one claimed by a relay whose last heartbeat was
    `beat_age` seconds ago (over a minute: that relay died)."""
    streams().create(StreamRecord(stream_id, "app1", "onLlm", ["room"]))
    if status == "streaming":
        streams().claim(stream_id, beat_seconds=10)
        streams().mark_started(stream_id)
        streams().save_progress(stream_id, "Half an ans", 4)
        if beat_age:
            last_beat_at(stream_id, time.time() - beat_age)


def last_beat_at(stream_id: str, when: float) -> None:
    """Set the relay's last heartbeat (`aliveAt`) as if it had beaten at `when`."""
    aws.dynamodb("us-east-1", get_settings().dynamodb_endpoint_url).update_item(
        TableName=TABLE,
        Key={"pk": {"S": f"STREAM#{stream_id}"}, "sk": {"S": "META"}},
        UpdateExpression="SET aliveAt = :at",
        ExpressionAttributeValues={":at": {"N": f"{when:.3f}"}},
    )


def dead_letter(
    stream_id: str,
    condition: str = "EventAgeExceeded",
    kind: str = "llm",
    thread: dict[str, Any] | None = None,
) -> str:
    """Lambda's on-failure invocation record for our self-invoke event (the SQS body)."""
    job: dict[str, Any] = {
        "stream_id": stream_id,
        "app_id": "app1",
        "kind": kind,
        "action_name": "onLlm",
        "channels": ["room"],
        "payload": {"provider": "openai", "apiKey": PROVIDER_KEY, "messages": []},
        "flush_interval_ms": 20,
        "thread": thread,
    }
    record = {
        "version": "1.0",
        "timestamp": "2026-11-21T20:00:00.000Z",
        "requestContext": {
            "requestId": "e4b46cbf-b738-4a1e-8880-a18cdf61200e",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:stack-relay:$LATEST",
            "condition": condition,
            "approximateInvokeCount": 1 if condition == "RetriesExhausted" else 0,
        },
        "requestPayload": {"streamingProxyJob": job},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
        "responsePayload": {"errorMessage": "Task timed out after 900.00 seconds"},
    }
    if condition == "RetriesExhausted":
        record["responseContext"]["functionError"] = "Unhandled"  # type: ignore[index]
    return json.dumps(record)


async def test_an_event_that_aged_out_fails_the_stream_and_tells_the_subscribers(
    gateway: Gateway, handle: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    registered("st_aged")
    async with open_client(gateway, token("room")) as ws:
        await connection_id_of(ws)
        with caplog.at_level(logging.INFO):
            # The same dead letter twice in one batch, then once more: told once.
            assert await handle(dead_letter("st_aged"), dead_letter("st_aged")) == {
                "batchItemFailures": []
            }
            assert await handle(dead_letter("st_aged")) == {"batchItemFailures": []}
        messages = await until_end(ws)
        await nothing_more(ws)
    assert [(m["type"], m["seq"]) for m in messages] == [
        ("threadInfo", 0),
        ("error", 1),
        ("end", 2),
    ]
    assert all(m["streamId"] == "st_aged" and m["channel"] == "room" for m in messages)
    assert messages[0]["content"] == {"streamId": "st_aged"}
    error = messages[1]["error"]
    assert (error["type"], error["code"]) == ("dependency_unavailable", 503)
    assert "lost" in error["message"] and error["details"] == "lambda: EventAgeExceeded"
    assert messages[2]["finish_reason"] == "error" and messages[2]["usage"]["estimated"] is True
    record = streams().get("st_aged")
    assert record is not None
    assert (record.status, record.last_seq, record.finish_reason) == ("failed", 2, "error")
    assert PROVIDER_KEY not in caplog.text


async def test_a_relay_that_died_mid_stream_ends_after_what_it_sent(
    gateway: Gateway, handle: Callable[..., Any]
) -> None:
    registered("st_died", "streaming", beat_age=61)  # six 10 s heartbeats missed
    async with open_client(gateway, token("room")) as ws:
        await connection_id_of(ws)
        assert await handle(dead_letter("st_died", "RetriesExhausted")) == {"batchItemFailures": []}
        messages = await until_end(ws)
    # No second threadInfo: the relay sent one. seq goes on from the last snapshot.
    assert [(m["type"], m["seq"]) for m in messages] == [("error", 5), ("end", 6)]
    record = streams().get("st_died", text=True)
    assert record is not None and (record.status, record.text) == ("failed", "Half an ans")


async def test_a_relay_that_dies_just_before_its_dead_letter_is_told_in_that_invocation(
    gateway: Gateway, handle: Callable[..., Any]
) -> None:
    # Its heartbeat is still fresh when the record comes (57 s old, stale at 60): the
    # handler waits the 3 s, in the same invocation (the context leaves it the time), and
    # looks again, instead of deferring the record to the queue's visibility timeout.
    registered("st_dying", "streaming", beat_age=57)
    async with open_client(gateway, token("room")) as ws:
        await connection_id_of(ws)
        answer = await handle(dead_letter("st_dying", "RetriesExhausted"))
        messages = await until_end(ws)
    assert answer == {"batchItemFailures": []}
    assert [(m["type"], m["seq"]) for m in messages] == [("error", 5), ("end", 6)]
    record = streams().get("st_dying")
    assert record is not None and record.status == "failed"


async def test_a_chat_stream_gets_no_thread_info(
    gateway: Gateway, handle: Callable[..., Any]
) -> None:
    registered("st_chat")
    async with open_client(gateway, token("room")) as ws:
        await connection_id_of(ws)
        await handle(dead_letter("st_chat", kind="chat"))
        messages = await until_end(ws)
    assert [m["type"] for m in messages] == ["error", "end"]


@pytest.mark.parametrize("case", ["finished", "aged-out-copy-of-a-running-job", "expired"])
async def test_a_stream_that_is_not_lost_is_left_alone(
    gateway: Gateway, handle: Callable[..., Any], case: str
) -> None:
    stream_id = "st_" + case.replace("-", "_")
    if case == "finished":
        registered(stream_id)
        usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
        streams().save_final(stream_id, "All done", 3, "done", finish_reason="stop", usage=usage)
        condition = "RetriesExhausted"
    elif case == "aged-out-copy-of-a-running-job":
        registered(stream_id, "streaming")  # another delivery claimed it and runs it
        condition = "EventAgeExceeded"
    else:
        condition = "EventAgeExceeded"  # no record at all (its TTL passed)
    before = streams().get(stream_id)
    async with open_client(gateway, token("room")) as ws:
        await connection_id_of(ws)
        assert await handle(dead_letter(stream_id, condition)) == {"batchItemFailures": []}
        await nothing_more(ws)
    assert streams().get(stream_id) == before


async def test_malformed_records_are_logged_and_dropped_and_the_rest_handled(
    gateway: Gateway, handle: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    registered("st_among_bad")
    no_job = json.dumps({"requestContext": {"condition": "EventAgeExceeded"}, "requestPayload": {}})
    no_id = dead_letter("").replace('"stream_id": ""', '"streamId": 1')
    async with open_client(gateway, token("room")) as ws:
        await connection_id_of(ws)
        with caplog.at_level(logging.INFO):
            answer = await handle("not json", no_job, no_id, dead_letter("st_among_bad"))
        messages = await until_end(ws)
    assert answer == {"batchItemFailures": []}
    assert [m["type"] for m in messages] == ["threadInfo", "error", "end"]
    dropped = [r for r in caplog.records if r.getMessage() == UNREAD]
    assert len(dropped) == 3 and all(r.levelname == "ERROR" for r in dropped)
    assert PROVIDER_KEY not in caplog.text


async def test_a_dead_letter_lambda_sent_without_its_payload_is_logged_and_counted(
    gateway: Gateway,
    handle: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A record too large for the queue arrives without `requestPayload` (and without
    `responsePayload`): nobody can be told, but it is not lost without a trace."""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    record = json.loads(dead_letter("st_payload_dropped", "RetriesExhausted"))
    del record["requestPayload"], record["responsePayload"]
    capsys.readouterr()
    with caplog.at_level(logging.INFO):
        assert await handle(json.dumps(record)) == {"batchItemFailures": []}
    (logged,) = [r for r in caplog.records if r.getMessage() == UNREAD]
    assert logged.levelname == "ERROR"
    assert logged.request_id == "e4b46cbf-b738-4a1e-8880-a18cdf61200e"  # type: ignore[attr-defined]
    assert logged.condition == "RetriesExhausted"  # type: ignore[attr-defined]
    (emf,) = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and "_aws" in line
    ]
    (metrics,) = emf["_aws"]["CloudWatchMetrics"]
    assert metrics["Namespace"] == "StreamingProxy" and metrics["Dimensions"] == [["service"]]
    assert (emf["service"], emf["DeadLettersUnread"]) == ("streaming-proxy", [1.0])


async def test_a_record_the_table_cannot_take_is_reported_for_a_retry(gateway: Gateway) -> None:
    """Only that record: SQS sends it again; the batch's other records are done."""
    service = StreamService(get_settings())
    missing_table = StreamStore(service.streams._db, "no-such-table")
    broken = DeadLetters(missing_table, service.publisher, service.db, service.runs)
    handler = DEADLETTER.make_handler(lambda: broken)
    event = {"Records": [{"messageId": "m-down", "body": dead_letter("st_any")}]}
    try:
        answer = await asyncio.to_thread(handler, event, LambdaContext())
    finally:
        await asyncio.to_thread(DEADLETTER.runner().run, service.aclose())
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-down"}]}


async def test_a_gateway_that_cannot_be_reached_fails_the_stream_without_a_retry(
    gateway: Gateway,
) -> None:
    """Posts that fail are counted as any stream's are, not retried as a batch failure: the
    stream is `failed` already, so a second copy could tell nobody more (a page's `resume`
    answers the `failed` snapshot)."""
    registered("st_unreachable")
    with socket.socket() as free:  # a port nothing listens on: every post is refused
        free.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{free.getsockname()[1]}"
    update = {"ws_management_endpoint": closed, "post_max_retries": 1}
    service = StreamService(get_settings().model_copy(update=update))
    tried: list[str] = []
    post = service.poster.post

    async def counted(connection_id: str, data: bytes) -> None:
        tried.append(connection_id)
        await post(connection_id, data)

    service.poster.post = counted  # type: ignore[method-assign]
    handler = DEADLETTER.make_handler(
        lambda: DeadLetters(service.streams, service.publisher, service.db, service.runs)
    )
    event = {"Records": [{"messageId": "m-unreachable", "body": dead_letter("st_unreachable")}]}
    async with open_client(gateway, token("room")) as ws:
        await connection_id_of(ws)
        try:
            answer = await asyncio.to_thread(handler, event, LambdaContext())
        finally:
            await asyncio.to_thread(DEADLETTER.runner().run, service.aclose())
        await nothing_more(ws)
    assert tried, "the subscriber's posts were tried (and refused)"
    assert answer == {"batchItemFailures": []}
    record = streams().get("st_unreachable")
    assert record is not None and (record.status, record.last_seq) == ("failed", 2)


async def test_an_event_that_is_not_an_sqs_batch_is_dropped_without_quoting_it(
    gateway: Gateway, handle: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    event = {"Records": [{"body": dead_letter("st_no_message_id")}]}
    with caplog.at_level(logging.INFO):
        answer = await asyncio.to_thread(DEADLETTER.handler, event, LambdaContext())
    assert answer == {"batchItemFailures": []}
    assert "not an SQS batch" in caplog.text and PROVIDER_KEY not in caplog.text


@pytest.fixture
async def app_client(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Client]:
    """The stream function's routes (in this process, over the same table) and its service."""
    apps = {"app1": {"keySha256": key_digest(APP_KEY), "tokenSecret": gateway_tests.SECRET}}
    monkeypatch.setenv("APPS", json.dumps(apps))
    gateway_tests.clear_caches()
    DEADLETTER.default_dead_letters.cache_clear()
    service = StreamService(get_settings())
    app = create_app()
    app.state.service = service
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fn") as client:
        yield client, service
    await service.aclose()


def assistants_run(text: str, thread_id: str | None = None) -> dict[str, Any]:
    """An Assistants run (`stream:false`), on a new thread without `thread_id`."""
    payload: dict[str, Any] = {
        "provider": "mock",
        "stream": False,
        "messages": [{"role": "user", "content": text}],
        "providerArgs": {"delayMs": 0},
    }
    if thread_id is not None:
        payload["thread_id"] = thread_id
    return {"apiKey": APP_KEY, "channels": ["room"], "actionName": "onLlm", "payload": payload}


async def test_a_lost_run_frees_its_thread_at_once_and_is_recorded_failed(
    app_client: Client, handle: Callable[..., Any]
) -> None:
    client, service = app_client
    first = await client.post(ASSISTANTS, json=assistants_run("hello"))
    assert first.status_code == 200, first.text
    thread_id = first.json()["threadId"]
    # A detached run takes the thread, then its relay is lost (its event aged out).
    payload = Payload.model_validate(assistants_run("lost", thread_id)["payload"])
    begun = await service.runs.begin("app1", payload, "st_lost_run", ["room"])
    registered("st_lost_run")
    held = await client.post(ASSISTANTS, json=assistants_run("meanwhile", thread_id))
    assert held.status_code == 409, held.text
    thread = begun.thread.model_dump(mode="json")
    lost_letter = dead_letter("st_lost_run", kind="assistants", thread=thread)
    assert await handle(lost_letter) == {"batchItemFailures": []}

    lost = service.threads.run("app1", thread_id, begun.thread.run_id)
    assert lost is not None and lost.status == "failed"
    after = await client.post(ASSISTANTS, json=assistants_run("again", thread_id))
    assert after.status_code == 200, after.text  # at once: no 409, no lease to wait out
    assert after.json()["threadId"] == thread_id
    # A copy of the same dead letter changes nothing, even while a new run holds the thread.
    payload = Payload.model_validate(assistants_run("next", thread_id)["payload"])
    running = await service.runs.begin("app1", payload, "st_next_run", ["room"])
    before = service.threads.meta("app1", thread_id)
    assert await handle(lost_letter) == {"batchItemFailures": []}
    assert service.threads.meta("app1", thread_id) == before
    assert before is not None and before.active_run == running.thread.run_id
    lost_again = service.threads.run("app1", thread_id, begun.thread.run_id)
    assert lost_again is not None and lost_again.status == "failed"


async def test_a_dead_letter_for_a_finished_thread_run_leaves_the_thread_alone(
    app_client: Client, handle: Callable[..., Any]
) -> None:
    """Its stream is not lost: the run that holds the thread (the same one, its relay still
    finishing) keeps it."""
    client, service = app_client
    first = await client.post(ASSISTANTS, json=assistants_run("hello"))
    thread_id = first.json()["threadId"]
    payload = Payload.model_validate(assistants_run("running", thread_id)["payload"])
    begun = await service.runs.begin("app1", payload, "st_claimed_run", ["room"])
    registered("st_claimed_run", "streaming")  # claimed: another delivery runs it
    before = service.threads.meta("app1", thread_id)
    thread = begun.thread.model_dump(mode="json")
    letter = dead_letter("st_claimed_run", kind="assistants", thread=thread)
    assert await handle(letter) == {"batchItemFailures": []}
    assert service.threads.meta("app1", thread_id) == before
    assert before is not None and before.active_run == begun.thread.run_id


async def test_a_lost_run_whose_thread_cannot_be_released_is_still_told_to_its_channels(
    gateway: Gateway,
    app_client: Client,
    handle: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The table refusing the release leaves the thread to its lease (logged), but the
    stream is failed and its pages get `error` and `end` all the same."""
    client, service = app_client
    first = await client.post(ASSISTANTS, json=assistants_run("hello"))
    thread_id = first.json()["threadId"]
    payload = Payload.model_validate(assistants_run("lost", thread_id)["payload"])
    begun = await service.runs.begin("app1", payload, "st_unreleased", ["room"])
    registered("st_unreleased")

    async def table_down(*args: Any, **kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": "InternalServerError"}}, "TransactWriteItems")

    monkeypatch.setattr(ThreadRuns, "abandon", table_down)
    thread = begun.thread.model_dump(mode="json")
    async with open_client(gateway, token("room")) as ws:
        await connection_id_of(ws)
        with caplog.at_level(logging.INFO):
            letter = dead_letter("st_unreleased", kind="assistants", thread=thread)
            assert await handle(letter) == {"batchItemFailures": []}
        messages = await until_end(ws)
    assert [m["type"] for m in messages] == ["threadInfo", "error", "end"]
    record = streams().get("st_unreleased")
    assert record is not None and record.status == "failed"
    assert "lost run's thread not released" in caplog.text
    meta = service.threads.meta("app1", thread_id)
    assert meta is not None and meta.active_run == begun.thread.run_id  # its lease frees it
