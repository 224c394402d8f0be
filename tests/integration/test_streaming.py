"""The relay through the real local stack: Klai endpoints, channel fan-out, SSE, stop, failures."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from tests.conftest import FAKE_OPENAI_KEY, Stack
from tests.conftest import app_post as post
from tests.delivery import assert_complete, covered
from tests.fake_llm import TEXT, TOOL_ARGS, FakeLlm
from tests.wsclient import Subscriber, text_of

ANSWER = "The quick brown fox jumps over the lazy dog, twice: the quick brown fox jumps again."


def body(channels: list[str], text: str = ANSWER, **payload: Any) -> dict[str, Any]:
    args = payload.pop("providerArgs", {"text": text, "delayMs": 5})
    return {
        "channels": channels,
        "actionName": "onLlmMessage",
        "payload": {
            "provider": "mock",
            "messages": [{"role": "user", "content": "say something"}],
            "providerArgs": args,
            **payload,
        },
    }


def assert_well_formed(messages: list[dict[str, Any]], channel: str) -> None:
    assert covered(messages) == list(range(messages[-1]["seq"] + 1))
    assert messages[0]["type"] == "threadInfo"
    assert messages[0]["content"] == {"streamId": messages[0]["streamId"]}
    assert messages[-1]["type"] == "end"
    assert all(m["channel"] == channel and m["actionName"] == "onLlmMessage" for m in messages)


async def test_llm_query_fans_out_to_every_subscriber_of_the_channel(stack: Stack) -> None:
    a1 = await Subscriber.open(stack.ws, stack.token("room-a"))
    a2 = await Subscriber.open(stack.ws, stack.token("room-a"))
    b = await Subscriber.open(stack.ws, stack.token("room-b"))
    try:
        started = time.monotonic()
        r = await post(stack, "/llm/query", body(["room-a"]))
        ack_seconds = time.monotonic() - started
        assert r.status_code == 200, r.text
        ack = r.json()
        assert ack["success"] is True and ack["data"]["message"] == "Streaming setup complete"
        stream_id = ack["streamId"]
        assert ack_seconds < 5  # acked on the first upstream byte, not at the end
        for sub in (a1, a2):
            messages = await sub.stream(stream_id)
            assert_well_formed(messages, "room-a")
            assert text_of(messages) == ANSWER
            end = messages[-1]
            assert end["finish_reason"] == "stop"
            assert set(end["usage"]) == {
                "prompt_tokens",
                "completion_tokens",
                "total_tokens",
                "estimated",
            }
        await asyncio.sleep(0.3)
        assert b.of(stream_id) == []
    finally:
        for sub in (a1, a2, b):
            await sub.close()


async def test_sse_caller_reads_the_same_events_as_subscribers(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("room-sse"))
    try:
        frames: list[tuple[str, dict[str, Any]]] = []
        async with (
            httpx.AsyncClient(base_url=stack.http, timeout=30) as client,
            client.stream(
                "POST",
                "/llm/query",
                json=body(["room-sse"]),
                headers={"x-api-key": stack.api_key, "accept": "text/event-stream"},
            ) as r,
        ):
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            event = ""
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    frames.append((event, json.loads(line[6:])))
        assert [e for e, _ in frames] == [d["type"] for _, d in frames]
        sse = [d for _, d in frames]
        stream_id = sse[0]["streamId"]
        received = await sub.stream(stream_id)
        # The same numbered messages (a lagging lane may merge deltas: same seqs, same text).
        assert covered(received) == [d["seq"] for d in sse]
        unmerged = [{k: v for k, v in m.items() if k != "channel"} for m in received]
        by_seq = {d["seq"]: d for d in sse}
        assert all(m == by_seq[m["seq"]] for m in unmerged if "firstSeq" not in m)
        assert text_of(received) == text_of(sse) == ANSWER
    finally:
        await sub.close()


async def test_the_caller_gets_every_delta_at_once_while_the_channel_gets_them_joined(
    stack: Stack,
) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("room-window"))
    request = body(["room-window"], providerArgs={"text": ANSWER, "chunks": 30, "delayMs": 3})
    request["options"] = {"flushIntervalMs": 100}
    try:
        sse: list[dict[str, Any]] = []
        async with (
            httpx.AsyncClient(base_url=stack.http, timeout=30) as client,
            client.stream(
                "POST",
                "/llm/query",
                json=request,
                headers={"x-api-key": stack.api_key, "accept": "text/event-stream"},
            ) as r,
        ):
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    sse.append(json.loads(line[6:]))
        received = await sub.stream(sse[0]["streamId"])
        caller_deltas = [d for d in sse if d["type"] == "delta"]
        channel_deltas = [m for m in received if m["type"] == "delta"]
        assert len(caller_deltas) == 30 and not any("firstSeq" in d for d in caller_deltas)
        assert len(channel_deltas) < 15 and any("firstSeq" in m for m in channel_deltas)
        assert text_of(received) == text_of(sse) == ANSWER
        assert received[-1]["seq"] == sse[-1]["seq"] and received[-1]["type"] == "end"
        assert received[-1]["usage"] == sse[-1]["usage"]
    finally:
        await sub.close()


async def test_chat_endpoint_answers_the_klai_chat_ack_and_streams_deltas(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("room-chat"))
    try:
        r = await post(stack, "/stream/create", body(["room-chat"]))
        assert r.status_code == 200
        assert r.json()["message"] == "Streaming setup complete"
        messages = await sub.stream(r.json()["streamId"])
        assert messages[0]["type"] == "delta" and messages[-1]["type"] == "end"
        assert text_of(messages) == ANSWER
    finally:
        await sub.close()


async def test_stream_false_returns_the_whole_klai_result(stack: Stack) -> None:
    r = await post(stack, "/llm/query", body([], stream=False))
    assert r.status_code == 200
    data = r.json()
    assert data["success"] is True and data["actionName"] == "onLlmMessage"
    choice = data["data"]["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": ANSWER}
    assert choice["finish_reason"] == "stop"
    usage = data["data"]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_openai_provider_streams_text_tool_calls_and_usage(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("room-openai"))
    try:
        openai_body = body(["room-openai"], providerArgs={}, provider="openai", model="fake-text")
        r = await post(stack, "/llm/query", openai_body)
        assert r.status_code == 200, r.text
        messages = await sub.stream(r.json()["streamId"])
        assert text_of(messages) == TEXT
        assert messages[-1]["usage"] == {
            "prompt_tokens": 12,
            "completion_tokens": 30,
            "total_tokens": 42,
            "estimated": False,
        }
        sent = fake_llm.last("/chat/completions")
        assert sent.headers["authorization"] == f"Bearer {FAKE_OPENAI_KEY}"
        assert sent.body["stream"] is True and sent.body["stream_options"] == {
            "include_usage": True
        }

        tools_body = body(["room-openai"], providerArgs={}, provider="openai", model="fake-tools")
        tools_body["payload"]["tools"] = [
            {
                "type": "function",
                "function": {"name": "get_weather", "parameters": {"type": "object"}},
            }
        ]
        r = await post(stack, "/llm/query", tools_body)
        messages = await sub.stream(r.json()["streamId"])
        call = next(m for m in messages if m["type"] == "function_call")
        [entry] = call["content"]["functions"]
        assert entry == {
            "name": "get_weather",
            "userMessage": "Checking the weather",
            "arguments": json.loads(TOOL_ARGS),
            "toolCallId": entry["toolCallId"],
        }
        assert entry["toolCallId"].startswith("tc_")  # the proxy's id (no webhook: not run)
        assert messages[-1]["finish_reason"] == "tool_calls"
        assert messages[-1]["usage"]["total_tokens"] == 38

        r = await post(
            stack,
            "/llm/query",
            {**tools_body, "payload": {**tools_body["payload"], "stream": False}},
        )
        [left] = r.json()["data"]["choices"][0]["message"]["tool_calls"]
        assert left["id"].startswith("tc_") and left["type"] == "function"
        assert left["function"]["name"] == "get_weather"
        assert json.loads(left["function"]["arguments"]) == json.loads(TOOL_ARGS)
    finally:
        await sub.close()


async def test_request_api_key_overrides_the_server_key(stack: Stack, fake_llm: FakeLlm) -> None:
    override = "request-override-key-abcdef"
    r = await post(
        stack,
        "/llm/query",
        body(
            [], stream=False, providerArgs={}, provider="openai", model="fake-text", apiKey=override
        ),
    )
    assert r.status_code == 200
    assert fake_llm.last("/chat/completions").headers["authorization"] == f"Bearer {override}"


async def test_a_gone_subscriber_is_removed_after_its_first_410(stack: Stack) -> None:
    db = stack.dynamodb_client()
    ghost = "GhostConnId0="  # in the table, unknown to the gateway: a missed $disconnect
    channel = f"CHANNEL#{stack.app_id}#room-gone"
    for pk, sk in ((channel, f"CONN#{ghost}"), (f"CONN#{ghost}", channel)):
        db.put_item(
            TableName=stack.table,
            Item={
                "pk": {"S": pk},
                "sk": {"S": sk},
                "expiresAt": {"N": str(int(time.time()) + 600)},
            },
        )
    live = await Subscriber.open(stack.ws, stack.token("room-gone"))
    leaving = await Subscriber.open(stack.ws, stack.token("room-gone"))
    leaving_id = await leaving.connection_id()
    try:
        r = await post(
            stack, "/llm/query", body(["room-gone"], providerArgs={"text": ANSWER, "delayMs": 20})
        )
        stream_id = r.json()["streamId"]
        await leaving.wait_for(lambda m: m.get("type") == "delta")
        await leaving.close()
        messages = await live.stream(stream_id)
        assert_well_formed(messages, "room-gone")
        assert text_of(messages) == ANSWER
        await asyncio.sleep(0.3)
        for conn in (ghost, leaving_id):
            rows = db.query(
                TableName=stack.table,
                KeyConditionExpression="pk = :p",
                ExpressionAttributeValues={":p": {"S": f"CONN#{conn}"}},
            )["Items"]
            assert rows == []
        finished = stack.finished_record(stream_id)
        assert finished is not None and finished["gone"] >= 1
    finally:
        await live.close()


@pytest.mark.parametrize("how", ["endpoint", "token", "websocket"])
async def test_stop_mid_stream_ends_cancelled_and_closes_upstream(
    stack: Stack, fake_llm: FakeLlm, how: str
) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("room-stop"))
    try:
        r = await post(
            stack,
            "/llm/query",
            body(["room-stop"], providerArgs={}, provider="openai", model="fake-slow"),
        )
        stream_id = r.json()["streamId"]
        await sub.wait_for(lambda m: m.get("streamId") == stream_id and m.get("type") == "delta")
        upstream = fake_llm.last("/chat/completions")
        stopped_at = time.monotonic()
        if how != "websocket":
            # A page stops over HTTPS with its subscribe token (Klai's llmQueryStop).
            key = {"x-api-key": stack.api_key} if how == "endpoint" else {"x-api-key": ""}
            proof = {"token": stack.token("room-stop")} if how == "token" else {}
            stop = await post(stack, "/llm/query/stop", {"streamId": stream_id, **proof}, **key)
            assert stop.status_code == 200, stop.text
            assert stop.json() == {
                "success": True,
                "status": "stopped",
                "streamId": stream_id,
                "streamStatus": "streaming",
            }
        else:
            await sub.send({"action": "stop", "streamId": stream_id})
            await sub.wait_for(
                lambda m: m.get("type") == "stopped" and m.get("streamId") == stream_id
            )
        messages = await sub.stream(stream_id, within=5)
        took = time.monotonic() - stopped_at
        assert messages[-1]["finish_reason"] == "cancelled"
        assert took < 3, f"stop took {took:.2f}s"
        assert covered(messages) == list(range(messages[-1]["seq"] + 1))
        assert upstream.disconnected.wait(3), "the upstream request was not closed"
    finally:
        await sub.close()


async def test_stop_of_an_unknown_stream_is_not_found_with_200(stack: Stack) -> None:
    r = await post(stack, "/llm/query/stop", {"streamId": "st_nope"})
    assert r.status_code == 200
    assert r.json() == {"success": True, "status": "not_found", "streamId": "st_nope"}


async def test_a_token_stops_only_streams_on_its_channels(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("room-guarded"))
    try:
        r = await post(stack, "/llm/query", body(["room-guarded"], providerArgs={"delayMs": 30}))
        stream_id = r.json()["streamId"]
        elsewhere = stack.token("room-elsewhere")
        # In the header as well as the body; no app key: the stream is not revealed.
        for how in ({"x-subscribe-token": elsewhere}, {}):
            proof = {} if how else {"token": elsewhere}
            refused = await post(
                stack,
                "/llm/query/stop",
                {"streamId": stream_id, **proof},
                **{"x-api-key": ""},
                **how,
            )
            assert refused.status_code == 200, refused.text
            assert refused.json() == {"success": True, "status": "not_found", "streamId": stream_id}
        messages = await sub.stream(stream_id)
        assert messages[-1]["finish_reason"] == "stop"  # never stopped
        anonymous = await post(
            stack, "/llm/query/stop", {"streamId": stream_id}, **{"x-api-key": ""}
        )
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["type"] == "unauthorized"
    finally:
        await sub.close()


async def test_failure_mid_stream_publishes_error_then_end(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("room-fail"))
    try:
        r = await post(
            stack, "/llm/query", body(["room-fail"], providerArgs={"failAfter": 3, "delayMs": 5})
        )
        assert r.status_code == 200
        messages = await sub.stream(r.json()["streamId"])
        assert [m["type"] for m in messages][-2:] == ["error", "end"]
        assert messages[-1]["finish_reason"] == "error"
        error = messages[-2]["error"]
        assert error["message"] and error["type"] == "upstream_error"
        assert error["code"] == 500 and isinstance(error["details"], str)  # the provider's
        assert covered(messages) == list(range(messages[-1]["seq"] + 1))
    finally:
        await sub.close()


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream"])
async def test_failure_before_first_byte_is_the_http_answer(stack: Stack, accept: str) -> None:
    args = {"failBeforeFirstByte": True, "failStatus": 429}
    r = await post(stack, "/llm/query", body(["room-x"], providerArgs=args), accept=accept)
    assert r.status_code == 429
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()
    assert error["success"] is False and error["actionName"] == "onLlmMessage"
    assert error["error"]["message"] and "Traceback" not in r.text


async def test_upstream_http_error_keeps_status_and_provider_message(stack: Stack) -> None:
    r = await post(
        stack,
        "/llm/query",
        body(["room-x"], providerArgs={}, provider="openai", model="fake-unauthorized"),
    )
    assert r.status_code == 401
    error = r.json()["error"]
    assert "Incorrect API key provided" in error["message"]
    assert error["code"] == 401 and error["type"] == "upstream_error"


async def test_an_upstream_5xx_answers_502_with_the_providers_own_code(stack: Stack) -> None:
    r = await post(
        stack,
        "/llm/query",
        body(["room-x"], providerArgs={}, provider="openai", model="fake-echo-text"),
    )
    assert r.status_code == 502
    error = r.json()["error"]
    assert error["code"] == 500 and error["type"] == "upstream_error"


INVALID: list[tuple[str, Any, dict[str, str], int]] = [
    ("malformed json", b"{not json", {}, 400),
    ("not an object", b"[1, 2]", {}, 400),
    ("no app key", body(["room-bad"]), {"x-api-key": ""}, 401),
    ("wrong app key", body(["room-bad"]), {"x-api-key": "wrong"}, 401),
    ("stream without channels", body([]), {}, 400),
    ("stream without actionName", {**body(["room-bad"]), "actionName": None}, {}, 400),
    (
        "no messages",
        {**body(["room-bad"]), "payload": {"provider": "mock", "messages": []}},
        {},
        400,
    ),
    (
        "flush interval out of range",
        {**body(["room-bad"]), "options": {"flushIntervalMs": 5000}},
        {},
        400,
    ),
    ("unknown provider", body(["room-bad"], provider="nope"), {}, 400),
    ("bad mock args", body(["room-bad"], providerArgs={"delayMs": -4}), {}, 400),
    ("too large", {**body(["room-bad"]), "padding": "x" * 1_200_000}, {}, 413),
]


async def test_invalid_requests_get_their_status_and_publish_nothing(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("room-bad"))
    try:
        async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
            for name, payload, headers, status in INVALID:
                content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                r = await client.post(
                    "/llm/query",
                    content=content,
                    headers={
                        "x-api-key": stack.api_key,
                        "content-type": "application/json",
                        **headers,
                    },
                )
                assert r.status_code == status, f"{name}: {r.status_code} {r.text}"
                error = r.json()
                assert error["success"] is False, name
                assert error["error"]["message"] and error["error"]["code"] == status, name
                assert isinstance(error["error"]["details"], str), name
        await asyncio.sleep(0.5)
        assert [m for m in sub.messages if "streamId" in m] == []
    finally:
        await sub.close()


async def test_provider_without_any_key_is_refused_with_401(stack: Stack) -> None:
    r = await post(
        stack,
        "/llm/query",
        body(["room-bad"], providerArgs={}, provider="gemini", model="gemini-2.5-flash"),
    )
    assert r.status_code == 401
    assert "apiKey" in r.json()["error"]["message"]


async def test_secrets_never_reach_the_logs(stack: Stack) -> None:
    override = "another-secret-request-key-777"
    await post(
        stack,
        "/llm/query",
        body(
            [], stream=False, providerArgs={}, provider="openai", model="fake-text", apiKey=override
        ),
    )
    await post(stack, "/llm/query", body(["room-log"], providerArgs={"failAfter": 1, "delayMs": 0}))
    await asyncio.sleep(0.5)
    product_lines = [line for line in stack.logs().splitlines() if line.startswith("{")]
    assert product_lines, "the stack logged nothing structured"
    joined = "\n".join(product_lines)
    for secret in (FAKE_OPENAI_KEY, override, stack.api_key):
        assert secret not in joined


async def test_token_endpoint_needs_a_valid_app_key(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.http, timeout=10) as client:
        r = await client.post("/channels/token", json={"channels": ["c"]})
        assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized"
        r = await client.post(
            "/channels/token", json={"channels": ["c"]}, headers={"authorization": "Bearer nope"}
        )
        assert r.status_code == 401
        r = await client.post("/channels/token", json={"channels": ["c"], "apiKey": stack.api_key})
        assert r.status_code == 200
        token = r.json()["token"]
        assert r.json()["expiresAt"] > time.time()
    sub = await Subscriber.open(stack.ws, token)
    try:
        assert await sub.connection_id()
    finally:
        await sub.close()


async def test_an_sse_caller_hanging_up_does_not_stop_the_fan_out(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("room-hangup"))
    try:
        args = {"text": ANSWER, "delayMs": 25}
        async with (
            httpx.AsyncClient(base_url=stack.http, timeout=30) as client,
            client.stream(
                "POST",
                "/llm/query",
                json=body(["room-hangup"], providerArgs=args),
                headers={"x-api-key": stack.api_key, "accept": "text/event-stream"},
            ) as r,
        ):
            stream_id = r.headers["x-stream-id"]
            async for line in r.aiter_lines():
                if line.startswith("event: delta"):
                    break  # the caller hangs up after the first token
        messages = await sub.stream(stream_id)
        assert text_of(messages) == ANSWER
        assert messages[-1]["finish_reason"] == "stop"
    finally:
        await sub.close()


async def test_a_tab_that_connects_mid_stream_is_caught_up_without_asking(stack: Stack) -> None:
    early = await Subscriber.open(stack.ws, stack.token("room-late"))
    text = " ".join(f"w{i}" for i in range(120))
    try:
        r = await post(
            stack, "/llm/query", body(["room-late"], providerArgs={"text": text, "delayMs": 15})
        )
        stream_id = r.json()["streamId"]
        await early.wait_for(lambda m: m.get("streamId") == stream_id and m.get("seq", 0) > 10)
        late = await Subscriber.open(stack.ws, stack.token("room-late"))  # a reloaded tab
        try:
            messages = await late.stream(stream_id)
            first = messages[0]
            assert first["type"] == "snapshot" and first["catchUp"] is True
            assert first["status"] == "streaming" and first["seq"] > 10
            assert_complete(messages, text)  # gapless: snapshot, then every live seq after it
            assert not [m for m in late.messages if m.get("type") == "not_found"]
        finally:
            await late.close()
        assert_complete(await early.stream(stream_id), text)
    finally:
        await early.close()
