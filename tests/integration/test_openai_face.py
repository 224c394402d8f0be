"""`/v1/chat/completions` through the official `openai` SDK, against the running local stack."""

from __future__ import annotations

import inspect
import json
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import FAKE_ANTHROPIC_KEY, Stack
from tests.delivery import covered
from tests.fake_llm import TEXT, TOOL_ARGS, FakeLlm
from tests.wsclient import Subscriber, text_of

PROMPT = "Echo these words back to me, exactly as written."


def client(stack: Stack) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=f"{stack.http}/v1", api_key=stack.api_key, max_retries=0, timeout=30
    )


async def parsed(raw: Any) -> Any:
    """`with_raw_response(...).parse()`: awaitable for some SDK versions, plain for streams."""
    result = raw.parse()
    return await result if inspect.isawaitable(result) else result


async def collect(stream: openai.AsyncStream) -> tuple[str, dict[int, dict[str, str]], list, list]:  # type: ignore[type-arg]
    text, tools, finishes, usages = "", {}, [], []
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usages.append(chunk.usage)
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                slot = tools.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] = call.id or slot["id"]
                if call.function is not None:
                    slot["name"] = call.function.name or slot["name"]
                    slot["arguments"] += call.function.arguments or ""
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    return text, tools, finishes, usages


async def test_sdk_streams_from_the_mock_provider_with_usage(stack: Stack) -> None:
    stream = await client(stack).chat.completions.create(
        model="mock/echo",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"providerArgs": {"delayMs": 0}},
    )
    text, tools, finishes, usages = await collect(stream)
    assert text == PROMPT
    assert tools == {} and finishes == ["stop"]
    assert len(usages) == 1
    assert usages[0].total_tokens == usages[0].prompt_tokens + usages[0].completion_tokens > 0


async def test_sdk_streams_text_from_anthropic_via_the_fake_upstream(
    stack: Stack, fake_llm: FakeLlm
) -> None:
    stream = await client(stack).chat.completions.create(
        model="anthropic/fake-text",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=256,
    )
    text, _, finishes, usages = await collect(stream)
    assert text.strip() == TEXT
    assert finishes == ["stop"]
    assert (usages[0].prompt_tokens, usages[0].completion_tokens) == (25, 33)
    assert usages[0].model_extra.get("estimated") is False
    sent = fake_llm.last("/messages")
    assert sent.headers["x-api-key"] == FAKE_ANTHROPIC_KEY
    assert sent.body["system"] and sent.body["max_tokens"] == 256
    assert (
        sent.body["messages"] == [{"role": "user", "content": "Hi"}]
        or sent.body["messages"][0]["role"] == "user"
    )


async def test_sdk_gets_anthropic_tool_calls_as_its_own_typed_objects(stack: Stack) -> None:
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    stream = await client(stack).chat.completions.create(
        model="anthropic/fake-tools",
        messages=[{"role": "user", "content": "Weather in Amsterdam?"}],
        tools=tools,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    text, calls, finishes, usages = await collect(stream)
    assert text == ""
    assert calls == {0: {"id": "toolu_fake1", "name": "get_weather", "arguments": TOOL_ARGS}}
    assert json.loads(calls[0]["arguments"])["city"] == "Amsterdam"
    assert finishes == ["tool_calls"]
    assert usages[0].completion_tokens == 33


async def test_a_ui_named_tool_is_the_sdk_callers_own_like_any_other(stack: Stack) -> None:
    """The `ui_` convention belongs to the Klai faces: here the caller runs every tool."""
    tools = [{"type": "function", "function": {"name": "ui_pick", "parameters": {}}}]
    answer = await client(stack).chat.completions.create(
        model="anthropic/fake-tools",
        messages=[{"role": "user", "content": "Weather in Amsterdam?"}],
        tools=tools,  # type: ignore[arg-type]
    )
    assert answer.choices[0].finish_reason == "tool_calls"
    [call] = answer.choices[0].message.tool_calls or []
    assert call.id == "toolu_fake1" and call.function.arguments == TOOL_ARGS


async def test_missing_usage_is_estimated_in_the_usage_chunk_and_on_end(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("face-usage"))
    try:
        raw = await client(stack).chat.completions.with_raw_response.create(
            model="anthropic/fake-nousage",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"channels": ["face-usage"], "actionName": "onFace"},
        )
        stream_id = raw.headers["x-stream-id"]
        _, _, _, usages = await collect(await parsed(raw))
        assert usages[0].model_extra.get("estimated") is True
        assert usages[0].completion_tokens > 0
        messages = await sub.stream(stream_id)
        assert messages[-1]["usage"]["estimated"] is True
    finally:
        await sub.close()


async def test_channels_in_the_body_also_reach_websocket_subscribers(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("face-room"))
    try:
        raw = await client(stack).chat.completions.with_raw_response.create(
            model="mock/echo",
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            extra_body={"channels": ["face-room"], "actionName": "onFace"},
        )
        text, _, _, _ = await collect(await parsed(raw))
        messages = await sub.stream(raw.headers["x-stream-id"])
        assert text == PROMPT == text_of(messages)
        assert covered(messages) == list(range(messages[-1]["seq"] + 1))
        assert all(m["actionName"] == "onFace" and m["channel"] == "face-room" for m in messages)
    finally:
        await sub.close()


async def test_channel_headers_fan_out_a_non_streaming_call(stack: Stack) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("face-headers"))
    try:
        raw = await client(stack).chat.completions.with_raw_response.create(
            model="mock/echo",
            messages=[{"role": "user", "content": PROMPT}],
            extra_headers={"X-Channels": "face-headers", "X-Action-Name": "onFace"},
        )
        result = await parsed(raw)
        assert result.object == "chat.completion"
        assert result.choices[0].message.content == PROMPT
        assert result.choices[0].finish_reason == "stop"
        messages = await sub.stream(raw.headers["x-stream-id"])
        assert text_of(messages) == PROMPT
    finally:
        await sub.close()


async def test_sdk_raises_typed_errors(stack: Stack) -> None:
    with pytest.raises(openai.AuthenticationError):
        await AsyncOpenAI(
            base_url=f"{stack.http}/v1", api_key="wrong", max_retries=0
        ).chat.completions.create(model="mock/echo", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError) as no_key:
        await client(stack).chat.completions.create(
            model="gemini/gemini-2.5-flash",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
        )
    assert "gemini" in str(no_key.value)
    # OpenAI answers 400 invalid_request_error for an invalid request, naming the field.
    with pytest.raises(openai.BadRequestError) as empty:
        await client(stack).chat.completions.create(model="mock/echo", messages=[], stream=True)
    assert empty.value.param == "messages" and empty.value.code == "invalid_request"
    with pytest.raises(openai.BadRequestError):
        await client(stack).chat.completions.create(
            model="mock/echo",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"channels": ["c"]},
        )
    with pytest.raises(openai.RateLimitError):
        await client(stack).chat.completions.create(
            model="mock/echo",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            extra_body={"providerArgs": {"failBeforeFirstByte": True, "failStatus": 429}},
        )


async def test_failure_mid_stream_raises_an_api_error_in_the_sdk(stack: Stack) -> None:
    stream = await client(stack).chat.completions.create(
        model="mock/echo",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        extra_body={"providerArgs": {"failAfter": 2, "delayMs": 0}},
    )
    with pytest.raises(openai.APIError, match="mock failure"):
        await collect(stream)


async def test_hanging_up_stops_a_stream_nobody_else_receives(stack: Stack) -> None:
    """No channels and no thread: the rest of the answer would go nowhere and the provider
    would still bill it, so a caller hanging up stops the stream, as closing a provider's
    own stream does. (With channels it goes on for them: test_streaming.py.)"""
    words = " ".join(f"w{i}" for i in range(400))
    raw = await client(stack).chat.completions.with_raw_response.create(
        model="mock/echo",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        extra_body={"providerArgs": {"text": words, "delayMs": 20}},  # 8 s in all
    )
    stream = await parsed(raw)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break  # the caller hangs up after its first token
    await stream.close()
    record = await stack.finished(raw.headers["x-stream-id"])
    assert record["finish_reason"] == "cancelled"
    assert record["messages"] < 100  # stopped within a few tokens, not after 400
    stopped = [
        r
        for r in stack.log_records()
        if r.get("stream_id") == raw.headers["x-stream-id"]
        and r.get("message") == "caller hung up on a stream nobody else receives: stopped"
    ]
    assert len(stopped) == 1
