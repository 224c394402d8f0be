"""The stream record over real HTTP: its write runs beside the provider request but gates
the first byte; DynamoDB down is still a 503 with nothing published; resume and stop read
the text back exactly from many segments.

The stack reaches DynamoDB through a fault-injecting proxy (tests/chaos), which delays or
fails the record's PutItem.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from devstack.process import StackProcess, free_port, start_stack
from tests.chaos import ChaosProxy, delay, server_error
from tests.chaos.faults import Action, Call
from tests.delivery import assert_complete
from tests.wsclient import Subscriber

WORDS = " ".join(f"wörd{i}€" for i in range(240))
KEEPALIVE_SECONDS = 1.0


class SlowFailure(Action):
    """Hold the request, then answer 500: a table that hangs, then fails."""

    forwards = False
    name = "slow_failure"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def apply(self, call: Call) -> bool:
        headers = {"Content-Type": "application/json"}
        return await call.pause(self.seconds) and await call.answer(500, headers, b"{}")


@dataclass
class Env:
    stack: StackProcess
    dynamodb: ChaosProxy


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    db = free_port()
    dynamodb = ChaosProxy(f"http://127.0.0.1:{db}")
    dynamodb.start()
    stack = start_stack(
        tmp_path_factory.mktemp("records"),
        {
            "DEV_DYNAMODB_PORT": str(db),
            "DEV_PRODUCT_DYNAMODB_URL": dynamodb.base_url,
            "SNAPSHOT_INTERVAL_SECONDS": "0.1",  # many segments in a short stream
            "KEEPALIVE_SECONDS": str(KEEPALIVE_SECONDS),  # how long SSE headers wait
        },
    )
    try:
        yield Env(stack, dynamodb)
    finally:
        stack.stop()
        dynamodb.stop()


@pytest.fixture
async def sub(env: Env, request: pytest.FixtureRequest) -> AsyncIterator[Subscriber]:
    env.dynamodb.clear_rules()
    channel = f"rec-{request.node.name[-40:]}".replace("[", "-").replace("]", "")
    subscriber = await Subscriber.open(env.stack.ws, env.stack.token(channel))
    subscriber.channel = channel  # type: ignore[attr-defined]
    try:
        yield subscriber
    finally:
        env.dynamodb.clear_rules()
        await subscriber.close()


def body(channel: str, **args: Any) -> dict[str, Any]:
    return {
        "channels": [channel],
        "actionName": "onRecord",
        "options": {"flushIntervalMs": 0},
        "payload": {
            "provider": "mock",
            "messages": [{"role": "user", "content": "x"}],
            "providerArgs": {"text": "hello there", **args},
        },
    }


async def first_event_after(env: Env, data: dict[str, Any]) -> tuple[float, str]:
    """Seconds from sending an SSE request to its first event, and the stream id."""
    started = time.monotonic()
    async with (
        httpx.AsyncClient(base_url=env.stack.http, timeout=30) as client,
        client.stream(
            "POST",
            "/llm/query",
            json=data,
            headers={"x-api-key": env.stack.api_key, "accept": "text/event-stream"},
        ) as r,
    ):
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                return time.monotonic() - started, r.headers["x-stream-id"]
    raise AssertionError("no event")


def meta(env: Env, stream_id: str) -> dict[str, Any] | None:
    got = env.stack.dynamodb_client().get_item(
        TableName=env.stack.table,
        Key={"pk": {"S": f"STREAM#{stream_id}"}, "sk": {"S": "META"}},
        ConsistentRead=True,
    )
    item: dict[str, Any] | None = got.get("Item")
    return item


async def test_the_record_write_overlaps_the_providers_time_to_first_token(
    env: Env, sub: Subscriber
) -> None:
    await first_event_after(env, body(sub.channel, delayMs=0))  # type: ignore[attr-defined]
    put = env.dynamodb.add_rule(delay(0.5), operation="PutItem", times=1)
    elapsed, stream_id = await first_event_after(env, body(sub.channel, delayMs=500))  # type: ignore[attr-defined]
    assert put.fired == 1
    # Both take 0.5 s: one after the other would be 1 s and more.
    assert 0.45 <= elapsed < 0.85, elapsed
    assert_complete(await sub.stream(stream_id), "hello there")


async def test_the_first_byte_waits_for_the_record(env: Env, sub: Subscriber) -> None:
    put = env.dynamodb.add_rule(delay(1.0), operation="PutItem", times=1)
    elapsed, stream_id = await first_event_after(env, body(sub.channel, delayMs=0))  # type: ignore[attr-defined]
    assert put.fired == 1 and elapsed >= 1.0
    assert meta(env, stream_id) is not None
    assert_complete(await sub.stream(stream_id), "hello there")


@pytest.mark.parametrize(
    ("path", "accept"),
    [
        ("/llm/query", "text/event-stream"),
        ("/llm/query", "application/json"),
        ("/v1/chat/completions", "text/event-stream"),
    ],
)
async def test_dynamodb_down_is_a_503_and_nothing_is_published(
    env: Env, sub: Subscriber, path: str, accept: str
) -> None:
    channel: str = sub.channel  # type: ignore[attr-defined]
    data = body(channel, delayMs=0)
    if path.startswith("/v1"):
        data = {
            "model": "mock/mock-echo",
            "stream": True,
            "channels": [channel],
            "actionName": "onRecord",
            "messages": [{"role": "user", "content": "hello there"}],
        }
    rule = env.dynamodb.add_rule(server_error(500), operation="PutItem", times=30)
    async with httpx.AsyncClient(base_url=env.stack.http, timeout=30) as client:
        r = await client.post(
            path, json=data, headers={"x-api-key": env.stack.api_key, "accept": accept}
        )
    assert rule.fired >= 3  # botocore's own tries, then the 503
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert "dependency_unavailable" in r.text
    await asyncio.sleep(0.5)
    assert [m for m in sub.messages if m.get("actionName") == "onRecord"] == []


async def test_a_record_write_slower_than_the_header_wait_that_fails_is_still_a_503(
    env: Env, sub: Subscriber
) -> None:
    """The SSE headers wait for the record's write before their first-byte clock starts:
    three tries of 0.6 s each outlast the header wait, and the answer is still the 503."""
    rule = env.dynamodb.add_rule(SlowFailure(0.6), operation="PutItem", times=30)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=env.stack.http, timeout=30) as client:
        r = await client.post(
            "/llm/query",
            json=body(sub.channel, delayMs=0),  # type: ignore[attr-defined]
            headers={"x-api-key": env.stack.api_key, "accept": "text/event-stream"},
        )
    assert rule.fired >= 3 and time.monotonic() - started > KEEPALIVE_SECONDS
    assert r.status_code == 503 and "dependency_unavailable" in r.text
    await asyncio.sleep(0.3)
    assert [m for m in sub.messages if m.get("actionName") == "onRecord"] == []


async def test_resume_and_stop_read_the_exact_text_back_from_many_segments(
    env: Env, sub: Subscriber
) -> None:
    channel: str = sub.channel  # type: ignore[attr-defined]
    async with httpx.AsyncClient(base_url=env.stack.http, timeout=30) as client:
        r = await client.post(
            "/llm/query",
            json=body(channel, text=WORDS, delayMs=8),
            headers={"x-api-key": env.stack.api_key},
        )
    stream_id = r.json()["streamId"]
    await sub.wait_for(lambda m: m.get("streamId") == stream_id and m.get("seq", 0) > 60)
    await asyncio.sleep(0.3)  # a few more snapshots
    await sub.send({"action": "resume", "streamId": stream_id})
    mid = await sub.wait_for(lambda m: m.get("type") == "snapshot" and m["streamId"] == stream_id)
    assert mid["status"] == "streaming" and WORDS.startswith(mid["content"])
    # The snapshot's text is exactly what its seq covers.
    live = [m for m in sub.of(stream_id) if m["type"] == "delta" and m["seq"] <= mid["seq"]]
    assert "".join(m["content"] for m in live) == mid["content"]
    live = [m for m in await sub.stream(stream_id, within=30) if m["type"] != "snapshot"]
    assert_complete(live, WORDS)
    await asyncio.sleep(0.3)  # the final record lands after `end` is sent
    since = len(sub.messages)
    await sub.send({"action": "resume", "streamId": stream_id})
    done = await sub.wait_for(lambda m: m.get("type") == "snapshot", since=since)
    assert (done["status"], done["content"], done.get("truncated")) == ("done", WORDS, None)
    await sub.send({"action": "stop", "streamId": stream_id})
    stopped = await sub.wait_for(lambda m: m.get("type") == "stopped", since=since)
    assert stopped["streamStatus"] == "done"
    rows = env.stack.dynamodb_client().query(
        TableName=env.stack.table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :text)",
        ExpressionAttributeValues={":pk": {"S": f"STREAM#{stream_id}"}, ":text": {"S": "TEXT#"}},
    )["Items"]
    assert len(rows) >= 10
    record = meta(env, stream_id)
    assert record is not None and "text" not in record
    assert json.loads(record["channels"]["S"]) == [channel]


async def test_thread_and_assistant_routes_answer_503_when_dynamodb_is_down(
    env: Env, sub: Subscriber
) -> None:
    """A thread run, a thread read and an assistant write with the table failing: each is
    a 503 in the Klai shape, and the run publishes nothing."""
    channel: str = sub.channel  # type: ignore[attr-defined]
    headers = {"x-api-key": env.stack.api_key}
    run = body(channel, delayMs=0)
    attempts = {
        "/stream/create/assistants": ("post", run),
        "/threads/thread_nobodyHasThisOne1/messages": ("get", None),
        "/assistants": ("post", {"name": "down", "provider": "mock", "model": "echo"}),
    }
    async with httpx.AsyncClient(base_url=env.stack.http, timeout=30) as client:
        for path, (method, data) in attempts.items():
            rule = env.dynamodb.add_rule(server_error(500), times=30)
            r = await client.request(method, path, json=data, headers=headers)
            env.dynamodb.remove_rule(rule)
            assert rule.fired >= 3, path  # botocore's own tries, then the 503
            assert r.status_code == 503, (path, r.text)
            assert r.json()["error"]["type"] == "dependency_unavailable", path
    await asyncio.sleep(0.5)
    assert [m for m in sub.messages if m.get("actionName") == "onRecord"] == []
