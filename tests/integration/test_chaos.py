"""Chaos: faults injected between the relay and @connections, DynamoDB and the provider.

For every fault, every live subscriber ends with the exact text, contiguous seq and one
`end`, or what it missed is counted; and the counts in the stream's log line match what
the fault-injecting proxy (tests/chaos) did.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from devstack.process import StackProcess, free_port, start_stack
from tests.chaos import (
    ChaosProxy,
    cut_after,
    dynamodb_error,
    gone,
    hang,
    reset,
    server_error,
    throttle,
)
from tests.conftest import FAKE_OPENAI_KEY, assert_no_keys_in
from tests.delivery import assert_complete, covered, replay
from tests.fake_llm import TEXT, FakeLlm
from tests.wsclient import Subscriber

POSTS = "/@connections/"
WORDS = " ".join(f"word{i}" for i in range(60))


@dataclass
class Chaos:
    stack: StackProcess
    management: ChaosProxy
    dynamodb: ChaosProxy
    llm: ChaosProxy

    def clear(self) -> None:
        for proxy in (self.management, self.dynamodb, self.llm):
            proxy.clear_rules()


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeLlm) -> Iterator[Chaos]:
    # The fault proxies are threads of this process. Late in a long suite its heap is large
    # and a full collection pauses them too (over a whole run, the longest measured 1.14 s
    # with 620,000 objects held): what the suite holds by now is set aside from collection
    # while they run.
    gc.collect()
    gc.freeze()
    ws, db = free_port(), free_port()
    management = ChaosProxy(f"http://127.0.0.1:{ws}")
    dynamodb = ChaosProxy(f"http://127.0.0.1:{db}")
    llm = ChaosProxy(fake_llm.base_url)
    for proxy in (management, dynamodb, llm):
        proxy.start()
    stack = start_stack(
        tmp_path_factory.mktemp("chaos"),
        {
            "DEV_WS_PORT": str(ws),
            "DEV_DYNAMODB_PORT": str(db),
            "DEV_PRODUCT_MANAGEMENT_URL": f"{management.base_url}/dev",
            "DEV_PRODUCT_DYNAMODB_URL": dynamodb.base_url,
            "OPENAI_BASE_URL": llm.base_url,
            "OPENAI_API_KEY": FAKE_OPENAI_KEY,
            # The fault proxies run in this (pytest) process: late in a long suite a pause of
            # it outlasted 0.5 s, then 1.5 s (CI, 2 cores), the app retried a post the gateway
            # had delivered, and a healthy page got a duplicate seq (which a page drops,
            # docs/events.md, but these checks count). The product's default, 3 s.
            "POST_TIMEOUT_SECONDS": "3",
            "POST_MAX_RETRIES": "6",
            "DRAIN_TIMEOUT_SECONDS": "8",
        },
    )
    try:
        yield Chaos(stack, management, dynamodb, llm)
    finally:
        stack.stop()
        for proxy in (management, dynamodb, llm):
            proxy.stop()
        gc.unfreeze()
    assert_no_keys_in(stack.logs())


@pytest.fixture
async def subscribers(
    chaos: Chaos, request: pytest.FixtureRequest
) -> AsyncIterator[list[Subscriber]]:
    chaos.clear()
    channel = f"chaos-{request.node.name[-40:]}".replace("[", "-").replace("]", "")
    subs = [await Subscriber.open(chaos.stack.ws, chaos.stack.token(channel)) for _ in range(3)]
    for sub in subs:
        sub.channel = channel  # type: ignore[attr-defined]
    try:
        yield subs
    finally:
        chaos.clear()
        for sub in subs:
            await sub.close()


async def start_stream(chaos: Chaos, channel: str, **args: Any) -> str:
    body = {
        "channels": [channel],
        "actionName": "onChaos",
        "options": {"flushIntervalMs": args.pop("flushIntervalMs", 0)},
        "payload": {
            "provider": "mock",
            "messages": [{"role": "user", "content": "x"}],
            "providerArgs": {"text": WORDS, "delayMs": 5, **args},
        },
    }
    async with httpx.AsyncClient(base_url=chaos.stack.http, timeout=30) as client:
        r = await client.post("/llm/query", json=body, headers={"x-api-key": chaos.stack.api_key})
    assert r.status_code == 200, r.text
    return str(r.json()["streamId"])


async def finished(chaos: Chaos, stream_id: str) -> dict[str, Any]:
    """The stream's 'stream finished' log record (written once its lanes drained)."""
    return await chaos.stack.finished(stream_id)


def openai_body(channel: str, model: str) -> dict[str, Any]:
    """A stream from the fake OpenAI-format upstream behind the chaos proxy."""
    messages = [{"role": "user", "content": "x"}]
    return {
        "channels": [channel],
        "actionName": "onChaos",
        "payload": {"provider": "openai", "model": model, "messages": messages},
    }


def posts_received(subs: list[Subscriber], stream_id: str) -> int:
    return sum(len(sub.of(stream_id)) for sub in subs)


@pytest.mark.parametrize(
    ("fault", "schedule"),
    [
        (server_error(500), {"every": 3}),
        (server_error(503), {"times": 10}),
        (throttle(), {"every": 2}),
        (reset(), {"every": 4}),
    ],
    ids=["500-every-3rd", "503-burst", "429-every-2nd", "reset-every-4th"],
)
async def test_transient_post_failures_are_retried_and_every_subscriber_ends_exact(
    chaos: Chaos, subscribers: list[Subscriber], fault: Any, schedule: dict[str, int]
) -> None:
    rule = chaos.management.add_rule(fault, method="POST", path=POSTS, **schedule)
    stream_id = await start_stream(chaos, subscribers[0].channel)  # type: ignore[attr-defined]
    for sub in subscribers:
        assert_complete(await sub.stream(stream_id, within=30), WORDS)
    record = await finished(chaos, stream_id)
    assert rule.fired > 0
    assert record["retries"] == rule.fired
    assert (record["post_failures"], record["dropped"], record["gone"]) == (0, 0, 0)
    assert record["posts"] == posts_received(subscribers, stream_id)


async def test_posts_that_hang_past_their_timeout_are_retried(
    chaos: Chaos, subscribers: list[Subscriber]
) -> None:
    rule = chaos.management.add_rule(hang(), method="POST", path=POSTS, times=3)
    stream_id = await start_stream(chaos, subscribers[0].channel)  # type: ignore[attr-defined]
    for sub in subscribers:
        assert_complete(await sub.stream(stream_id, within=30), WORDS)
    record = await finished(chaos, stream_id)
    assert rule.fired == 3 and record["retries"] == 3
    assert (record["post_failures"], record["dropped"]) == (0, 0)


async def test_a_connection_that_is_gone_is_counted_and_the_others_end_exact(
    chaos: Chaos, subscribers: list[Subscriber]
) -> None:
    ghost = await subscribers[2].connection_id()
    rule = chaos.management.add_rule(gone(), method="POST", path=ghost.replace("=", "%3D"))
    stream_id = await start_stream(chaos, subscribers[0].channel)  # type: ignore[attr-defined]
    for sub in subscribers[:2]:
        assert_complete(await sub.stream(stream_id, within=30), WORDS)
    record = await finished(chaos, stream_id)
    assert rule.fired == 1 and record["gone"] == 1
    assert (record["post_failures"], record["dropped"]) == (0, 0)
    assert subscribers[2].of(stream_id) == []


async def test_a_connection_that_keeps_failing_is_counted_seq_for_seq(
    chaos: Chaos, subscribers: list[Subscriber]
) -> None:
    broken = await subscribers[2].connection_id()
    chaos.management.add_rule(
        server_error(500), method="POST", path=broken.replace("=", "%3D"), after=4
    )
    stream_id = await start_stream(chaos, subscribers[0].channel)  # type: ignore[attr-defined]
    for sub in subscribers[:2]:
        assert_complete(await sub.stream(stream_id, within=30), WORDS)
    record = await finished(chaos, stream_id)
    end_seq = replay(subscribers[0].of(stream_id)).last_seq
    missed = end_seq + 1 - len(covered(subscribers[2].of(stream_id)))
    assert missed > 0
    assert record["post_failures"] == 1 and record["dropped"] == missed


async def test_dynamodb_faults_lose_no_text_and_the_final_record_lands(
    chaos: Chaos, subscribers: list[Subscriber]
) -> None:
    # Membership refreshes and progress snapshots fail for a while; botocore's own tries
    # run out, the relay carries on with what it knows, and the final record is retried.
    refresh = chaos.dynamodb.add_rule(
        dynamodb_error("ProvisionedThroughputExceededException"),
        operation="Query",
        after=1,  # the membership read at start succeeds; the refreshes fail
        times=12,
    )
    writes = chaos.dynamodb.add_rule(server_error(500), operation="UpdateItem", times=6)
    # Long enough (2.4 s) for refreshes (1 s) and progress snapshots (1 s) to happen.
    channel = subscribers[0].channel  # type: ignore[attr-defined]
    stream_id = await start_stream(chaos, channel, delayMs=40)
    received = [await sub.stream(stream_id, within=30) for sub in subscribers]
    record = await finished(chaos, stream_id)
    for messages in received:
        try:
            assert_complete(messages, WORDS)
        except AssertionError as e:  # whether a post was retried says where to look
            counts = f"retries {record['retries']}, posts {record['posts']}"
            raise AssertionError(f"{e} (the stream's record: {counts})") from e
    assert refresh.fired > 0 and writes.fired > 0
    assert (record["post_failures"], record["dropped"]) == (0, 0)
    assert record["record_failed"] is False
    chaos.clear()
    await subscribers[0].send({"action": "resume", "streamId": stream_id})
    snapshot = await subscribers[0].wait_for(lambda m: m.get("type") == "snapshot")
    assert (snapshot["status"], snapshot["content"]) == ("done", WORDS)


async def test_a_final_record_that_never_lands_is_counted(
    chaos: Chaos, subscribers: list[Subscriber]
) -> None:
    # Every UpdateItem fails: marks, snapshots and each try of the final write. The live
    # subscribers still get the whole stream; the stream's record says what it could not
    # write, for the RecordFailures metric and its alarm.
    writes = chaos.dynamodb.add_rule(server_error(500), operation="UpdateItem")
    channel = subscribers[0].channel  # type: ignore[attr-defined]
    stream_id = await start_stream(chaos, channel)
    for sub in subscribers:
        assert_complete(await sub.stream(stream_id, within=30), WORDS)
    record = await finished(chaos, stream_id)
    assert writes.fired >= 5  # the final write's five tries, at least
    assert record["record_failed"] is True
    assert (record["post_failures"], record["dropped"]) == (0, 0)


async def test_a_provider_cut_mid_frame_ends_every_subscriber_with_what_was_said(
    chaos: Chaos, subscribers: list[Subscriber]
) -> None:
    chaos.llm.add_rule(cut_after(700), path="/chat/completions", times=1)
    body = openai_body(subscribers[0].channel, "fake-slow")  # type: ignore[attr-defined]
    async with httpx.AsyncClient(base_url=chaos.stack.http, timeout=30) as client:
        r = await client.post("/llm/query", json=body, headers={"x-api-key": chaos.stack.api_key})
    assert r.status_code == 200, r.text
    stream_id = r.json()["streamId"]
    texts = set()
    for sub in subscribers:
        messages = await sub.stream(stream_id, within=30)
        state = replay(messages)
        assert state.ends == 1 and state.end is not None
        assert state.end["finish_reason"] == "error" and "error" in state.types
        assert TEXT.startswith(state.text[: len(TEXT)]) or state.text == ""
        texts.add(state.text)
    assert len(texts) == 1  # every subscriber got the same text
    record = await finished(chaos, stream_id)
    assert record["finish_reason"] == "error"
    assert FAKE_OPENAI_KEY not in chaos.stack.logs()


async def test_a_provider_reset_before_the_first_byte_is_the_callers_and_publishes_nothing(
    chaos: Chaos, subscribers: list[Subscriber]
) -> None:
    chaos.llm.add_rule(reset(), path="/chat/completions", times=1)
    body = openai_body(subscribers[0].channel, "fake-text")  # type: ignore[attr-defined]
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=chaos.stack.http, timeout=30) as client:
        r = await client.post("/llm/query", json=body, headers={"x-api-key": chaos.stack.api_key})
    assert r.status_code == 502 and time.monotonic() - started < 10
    assert r.json()["error"]["type"] == "upstream_error"
    await asyncio.sleep(0.5)
    assert all(
        not [m for m in sub.messages if m.get("actionName") == "onChaos"] for sub in subscribers
    )
    assert json.dumps(r.json()).find(FAKE_OPENAI_KEY) == -1


async def test_membership_unreadable_at_start_is_a_503_to_the_caller_and_nothing_is_sent(
    chaos: Chaos, subscribers: list[Subscriber]
) -> None:
    rule = chaos.dynamodb.add_rule(server_error(500), operation="Query", times=30)
    body = {
        "channels": [subscribers[0].channel],  # type: ignore[attr-defined]
        "actionName": "onChaos",
        "payload": {"provider": "mock", "messages": [{"role": "user", "content": "x"}]},
    }
    async with httpx.AsyncClient(base_url=chaos.stack.http, timeout=30) as client:
        r = await client.post("/llm/query", json=body, headers={"x-api-key": chaos.stack.api_key})
    assert rule.fired >= 3  # botocore's own tries, then the relay gives up
    assert r.status_code == 503 and r.json()["error"]["type"] == "dependency_unavailable"
    await asyncio.sleep(0.3)
    assert all(
        not [m for m in sub.messages if m.get("actionName") == "onChaos"] for sub in subscribers
    )


# -- the tool loop under faults ---------------------------------------------------------------


def tool_loop_body(channel: str) -> dict[str, Any]:
    """fake-tool-loop on the OpenAI wire: round 1 says "Let me look. " and asks the page for
    ui_get_color; round 2 quotes the answer ("The colour is <message>.")."""
    body = openai_body(channel, "fake-tool-loop")
    body["options"] = {"flushIntervalMs": 0}
    body["payload"]["tools"] = [
        {"type": "function", "function": {"name": "ui_get_color", "parameters": {"type": "object"}}}
    ]
    return body


async def post_stream(chaos: Chaos, body: dict[str, Any]) -> str:
    async with httpx.AsyncClient(base_url=chaos.stack.http, timeout=30) as client:
        r = await client.post("/llm/query", json=body, headers={"x-api-key": chaos.stack.api_key})
    assert r.status_code == 200, r.text
    return str(r.json()["streamId"])


async def test_tool_calls_that_cannot_be_opened_end_every_subscriber_with_the_error(
    chaos: Chaos, subscribers: list[Subscriber]
) -> None:
    # Recording the round's frontend calls (BatchWriteItem) fails past botocore's own tries.
    rule = chaos.dynamodb.add_rule(server_error(500), operation="BatchWriteItem", times=30)
    stream_id = await post_stream(chaos, tool_loop_body(subscribers[0].channel))  # type: ignore[attr-defined]
    for sub in subscribers:
        state = replay(await sub.stream(stream_id, within=30))  # contiguous seq, or it raises
        assert state.ends == 1 and state.end is not None
        assert state.end["finish_reason"] == "error" and "error" in state.types
        assert state.text == "Let me look. "
        error = next(m for m in sub.of(stream_id) if m["type"] == "error")
        assert error["error"]["message"]
    assert rule.fired > 0
    record = await finished(chaos, stream_id)
    assert record["finish_reason"] == "error"
    assert (record["post_failures"], record["dropped"]) == (0, 0)


async def test_a_provider_cut_in_round_two_ends_every_subscriber_with_both_rounds_text(
    chaos: Chaos, subscribers: list[Subscriber]
) -> None:
    # Round 2's stream is cut in its fourth frame: "The ", "colour " are out, "is " is not.
    rule = chaos.llm.add_rule(cut_after(600), path="/chat/completions", after=1, times=1)
    stream_id = await post_stream(chaos, tool_loop_body(subscribers[0].channel))  # type: ignore[attr-defined]
    call = await subscribers[0].wait_for(
        lambda m: m.get("streamId") == stream_id and m.get("type") == "llmToolCall"
    )
    await subscribers[0].send(
        {
            "action": "llmToolCallResponse",
            "toolCallId": call["toolCallId"],
            "success": True,
            "message": "red",
        }
    )
    for sub in subscribers:
        state = replay(await sub.stream(stream_id, within=30))
        assert state.ends == 1 and state.end is not None
        assert state.end["finish_reason"] == "error" and "error" in state.types
        assert state.text == "Let me look. The colour "
    assert rule.fired == 1
    record = await finished(chaos, stream_id)
    assert record["finish_reason"] == "error"


async def publish(chaos: Chaos, channel: str) -> httpx.Response:
    body = {"channels": [channel], "actionName": "onChaos", "message": {"step": 3, "of": 5}}
    async with httpx.AsyncClient(base_url=chaos.stack.http, timeout=30) as client:
        return await client.post(
            "/message/send", json=body, headers={"x-api-key": chaos.stack.api_key}
        )


async def test_a_published_message_is_retried_through_throttling_and_a_broken_tab_is_counted(
    chaos: Chaos, subscribers: list[Subscriber]
) -> None:
    broken = await subscribers[2].connection_id()
    chaos.management.add_rule(server_error(500), method="POST", path=broken.replace("=", "%3D"))
    throttled = chaos.management.add_rule(throttle(), method="POST", path=POSTS, times=1)
    r = await publish(chaos, subscribers[0].channel)  # type: ignore[attr-defined]
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["subscribers"], answer["delivered"], answer["failed"]) == (3, 2, 1)
    assert throttled.fired == 1
    message_id = answer["messageId"]
    for sub in subscribers[:2]:
        await sub.wait_for(lambda m: m.get("streamId") == message_id)
        assert len([m for m in sub.messages if m.get("streamId") == message_id]) == 1


async def test_a_publish_with_membership_unreadable_is_a_503_and_sends_nothing(
    chaos: Chaos, subscribers: list[Subscriber]
) -> None:
    rule = chaos.dynamodb.add_rule(server_error(500), operation="Query", times=30)
    r = await publish(chaos, subscribers[0].channel)  # type: ignore[attr-defined]
    assert rule.fired >= 3
    assert r.status_code == 503 and r.json()["error"]["type"] == "dependency_unavailable"
    await asyncio.sleep(0.3)
    assert all(not [m for m in s.messages if m.get("type") == "message"] for s in subscribers)
