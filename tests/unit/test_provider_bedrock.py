"""BedrockProvider: Converse translation, event mapping, errors, threading and closing.

The fake client yields the dicts botocore's EventStream yields after parsing the AWS
event-stream frames; that parsing is botocore's job and is not re-tested here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError, EventStreamError, NoCredentialsError
from pydantic import SecretStr

from streaming_proxy.config import Settings
from streaming_proxy.errors import ProviderNotConfigured, UpstreamError, ValidationFailed
from streaming_proxy.events import (
    Finish,
    ProviderEvent,
    RedactedThinking,
    TextDelta,
    ThinkingDelta,
    ThinkingSignature,
    ToolCallDelta,
    Usage,
)
from streaming_proxy.providers.base import LlmRequest
from streaming_proxy.providers.bedrock import BedrockProvider, bedrock_client
from streaming_proxy.providers.converse import converse_request
from tests.fake_bedrock import FakeEventStream
from tests.fake_wire import event_stream_message

from . import tool_history as history
from .providers_fixtures import fixture_bytes
from .settled import settled

SETTINGS = Settings(bedrock_region="eu-central-1", aws_region="us-east-1")
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
HELLO = [{"role": "user", "content": "Bonjour"}]


def _blob(value: dict[str, Any]) -> Any:
    # JSON has no bytes: a blob boto3 would hand over as bytes is {"$base64": ...} on disk.
    return base64.b64decode(value["$base64"]) if set(value) == {"$base64"} else value


def events(name: str) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads(fixture_bytes(f"bedrock/{name}"), object_hook=_blob)
    return loaded


def request(**kwargs: object) -> LlmRequest:
    fields: dict[str, object] = {"model": MODEL, "messages": HELLO, **kwargs}
    return settled(LlmRequest(**fields))  # type: ignore[arg-type]


class FakeClient:
    def __init__(self, stream: FakeEventStream | None = None, error: Exception | None = None):
        self.stream = stream
        self.error = error
        self.calls: list[dict[str, Any]] = []
        self.threads: list[str] = []

    def converse_stream(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        self.threads.append(threading.current_thread().name)
        if self.error is not None:
            raise self.error
        return {"stream": self.stream}


class Factory:
    def __init__(self, client: FakeClient) -> None:
        self.client = client
        self.calls: list[tuple[str, str | None]] = []

    def __call__(self, region: str, endpoint_url: str | None) -> FakeClient:
        self.calls.append((region, endpoint_url))
        return self.client


def provider(client: FakeClient, settings: Settings = SETTINGS) -> tuple[BedrockProvider, Factory]:
    factory = Factory(client)
    return BedrockProvider(settings, client_factory=factory), factory


async def run(client: FakeClient, req: LlmRequest | None = None) -> list[ProviderEvent]:
    adapter, _ = provider(client)
    return [event async for event in adapter.stream(req or request())]


EXPECTED: dict[str, list[ProviderEvent]] = {
    "text.json": [TextDelta("héllo — "), TextDelta("日本語 🎉"), Usage(25, 12), Finish("stop")],
    "tool_call.json": [
        TextDelta("Je regarde — 天気"),
        ToolCallDelta(0, id="tooluse_A", name="get_weather"),
        ToolCallDelta(0, arguments='{"city": "Zü'),
        ToolCallDelta(0, arguments='rich"}'),
        ToolCallDelta(1, id="tooluse_B", name="ui_show_map"),
        ToolCallDelta(1, arguments="{}"),
        Usage(472, 80),
        Finish("tool_calls"),
    ],
    "reasoning.json": [
        ThinkingDelta("Réfléchissons… "),
        ThinkingSignature("EqQBCgIYAhIM"),
        TextDelta("C'est 4 🎉"),
        Usage(12, 64),
        Finish("length"),
    ],
    "reasoning_tool_use.json": [
        ThinkingDelta("Il faut la météo — "),
        ThinkingDelta("天気を調べる。"),
        ThinkingSignature("ErUBCkYIBhgCIkB2Zm9+aGVsbG8="),
        RedactedThinking("EmwKAhgBEgy3va3pzix/LafPsn4="),
        TextDelta("Je regarde."),
        ToolCallDelta(0, id="tooluse_C", name="get_weather"),
        ToolCallDelta(0, arguments='{"city": "Zü'),
        ToolCallDelta(0, arguments='rich"}'),
        Usage(512, 120),
        Finish("tool_calls"),
    ],
    "guardrail.json": [TextDelta("Je ne peux pas"), Finish("content_filter")],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_converse_events_become_normalised_events(name: str) -> None:
    stream = FakeEventStream(events(name))

    assert await run(FakeClient(stream)) == EXPECTED[name]
    assert await asyncio.to_thread(stream.closed.wait, 2)


async def test_the_blocking_call_runs_off_the_event_loop() -> None:
    class SlowClient(FakeClient):
        def converse_stream(self, **kwargs: Any) -> dict[str, Any]:
            time.sleep(0.2)
            return super().converse_stream(**kwargs)

    client = SlowClient(FakeEventStream(events("text.json")))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    result = await run(client)
    task.cancel()

    assert result == EXPECTED["text.json"]
    assert ticks >= 5
    assert client.threads[0] != threading.current_thread().name


async def test_consumer_stopping_early_closes_the_stream_and_ends_the_worker() -> None:
    stream = FakeEventStream(events("text.json")[:2], hold=True)
    adapter, _ = provider(FakeClient(stream))

    events_out = adapter.stream(request())
    async for event in events_out:
        assert event == TextDelta("héllo — ")
        break
    await events_out.aclose()  # type: ignore[attr-defined]

    assert await asyncio.to_thread(stream.closed.wait, 2)  # closed by a thread of its own
    assert await asyncio.to_thread(stream.finished.wait, 2)


async def test_cancelling_the_consumer_closes_the_stream() -> None:
    stream = FakeEventStream(events("text.json")[:2], hold=True)
    adapter, _ = provider(FakeClient(stream))

    async def consume() -> None:
        async for _ in adapter.stream(request()):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await asyncio.to_thread(stream.closed.wait, 2)  # closed by a thread of its own
    assert await asyncio.to_thread(stream.finished.wait, 2)


async def test_in_stream_exception_event_raises_with_status_and_message() -> None:
    stream = FakeEventStream(events("throttled.json"))
    seen: list[ProviderEvent] = []
    adapter, _ = provider(FakeClient(stream))

    with pytest.raises(UpstreamError) as caught:
        async for event in adapter.stream(request()):
            seen.append(event)

    assert seen == [TextDelta("héllo")]
    assert caught.value.upstream_status == 429
    assert caught.value.status == 429
    assert "Too many requests — slow down" in caught.value.message
    assert await asyncio.to_thread(stream.closed.wait, 2)


@pytest.mark.parametrize(
    ("code", "upstream_status", "status"),
    [
        ("throttlingException", 429, 429),
        ("validationException", 400, 400),
        ("serviceUnavailableException", 503, 502),
        ("internalServerException", 500, 502),
        ("modelStreamErrorException", None, 502),
    ],
)
async def test_event_stream_errors_raised_by_botocore_are_mapped(
    code: str, upstream_status: int | None, status: int
) -> None:
    error = EventStreamError({"Error": {"Code": code, "Message": f"boom {code}"}}, "ConverseStream")
    stream = FakeEventStream([events("text.json")[1], error])

    with pytest.raises(UpstreamError) as caught:
        await run(FakeClient(stream))

    assert caught.value.upstream_status == upstream_status
    assert caught.value.status == status
    assert f"boom {code}" in caught.value.message
    assert await asyncio.to_thread(stream.closed.wait, 2)


@pytest.mark.parametrize(
    ("code", "http_status", "status"),
    [
        ("ValidationException", 400, 400),
        ("AccessDeniedException", 403, 403),
        ("ThrottlingException", 429, 429),
    ],
)
async def test_client_error_on_the_call_carries_the_http_status(
    code: str, http_status: int, status: int
) -> None:
    response: Any = {
        "Error": {"Code": code, "Message": f"The call failed: {code}"},
        "ResponseMetadata": {"HTTPStatusCode": http_status},
    }
    error = ClientError(response, "ConverseStream")

    with pytest.raises(UpstreamError) as caught:
        await run(FakeClient(error=error))

    assert caught.value.upstream_status == http_status
    assert caught.value.status == status
    assert f"The call failed: {code}" in caught.value.message


async def test_missing_credentials_mean_not_configured() -> None:
    with pytest.raises(ProviderNotConfigured):
        await run(FakeClient(error=NoCredentialsError()))


async def test_stream_without_message_stop_is_an_error() -> None:
    with pytest.raises(UpstreamError, match="before messageStop"):
        await run(FakeClient(FakeEventStream(events("text.json")[:3])))


ALLOWING = Settings(
    bedrock_region="eu-central-1", aws_region="us-east-1", bedrock_allowed_regions="ap-south-1"
)


@pytest.mark.parametrize(
    ("args", "settings", "region"),
    [
        ({}, SETTINGS, "eu-central-1"),
        ({"region": "eu-central-1"}, SETTINGS, "eu-central-1"),
        ({}, Settings(bedrock_region=None, aws_region="us-west-2"), "us-west-2"),
        ({"region": "ap-south-1"}, ALLOWING, "ap-south-1"),
    ],
)
async def test_region_from_settings_or_an_allowed_request_region(
    args: dict[str, str], settings: Settings, region: str
) -> None:
    client = FakeClient(FakeEventStream(events("text.json")))
    adapter, factory = provider(client, settings)

    async for _ in adapter.stream(request(provider_args=args, api_key=SecretStr("ignored"))):
        pass

    assert factory.calls == [(region, None)]
    assert "region" not in json.dumps(client.calls[0])
    assert "ignored" not in json.dumps(client.calls[0])


@pytest.mark.parametrize("asked", ["ap-south-1", "us-east-1", "", 7])
async def test_a_request_cannot_pick_a_region_the_settings_do_not_allow(asked: object) -> None:
    client = FakeClient(FakeEventStream(events("text.json")))
    adapter, factory = provider(client, SETTINGS)  # pinned to eu-central-1, no allow-list
    req = request(provider_args={"region": asked})
    with pytest.raises(ValidationFailed, match="region is not allowed"):
        adapter.prepare(req)
    with pytest.raises(ValidationFailed):
        async for _ in adapter.stream(req):
            pass
    assert factory.calls == []


def test_clients_are_cached_per_region_and_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")

    first = bedrock_client("eu-west-1", None)

    assert bedrock_client("eu-west-1", None) is first
    assert bedrock_client("eu-west-1", "http://localhost:9") is not first
    assert first.meta.region_name == "eu-west-1"


def test_prepare_requires_a_model() -> None:
    adapter, _ = provider(FakeClient())
    with pytest.raises(ValidationFailed, match="model"):
        adapter.prepare(request(model=None))


def test_translation_of_messages_images_tools_and_results() -> None:
    body = converse_request(
        request(
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Look:"},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,iVBORw=="},
                        }
                    ],
                },
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "t1",
                            "type": "function",
                            "function": {"name": "a", "arguments": '{"x": 1}'},
                        },
                        {
                            "id": "t2",
                            "type": "function",
                            "function": {"name": "b", "arguments": "{}"},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "t1", "content": '{"ok": true}'},
                {"role": "tool", "tool_call_id": "t2", "content": "plain text"},
            ],
            tools=[
                {
                    "type": "function",
                    "function": {"name": "a", "description": "A", "parameters": {"type": "object"}},
                },
                {"type": "function", "function": {"name": "b"}},
            ],
            tool_choice="required",
            provider_args={
                "max_tokens": 300,
                "topP": 0.9,
                "temperature": 0.3,
                "stop": "END",
                "top_k": 50,
                "region": "eu-west-1",
                "guardrail_config": {"guardrailIdentifier": "g", "guardrailVersion": "1"},
            },
        )
    )

    assert body == {
        "modelId": MODEL,
        "system": [{"text": "Be brief."}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": "Look:"},
                    {"image": {"format": "png", "source": {"bytes": b"\x89PNG"}}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"text": "Checking."},
                    {"toolUse": {"toolUseId": "t1", "name": "a", "input": {"x": 1}}},
                    {"toolUse": {"toolUseId": "t2", "name": "b", "input": {}}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"toolResult": {"toolUseId": "t1", "content": [{"json": {"ok": True}}]}},
                    {"toolResult": {"toolUseId": "t2", "content": [{"text": "plain text"}]}},
                ],
            },
        ],
        "inferenceConfig": {
            "maxTokens": 300,
            "temperature": 0.3,
            "topP": 0.9,
            "stopSequences": ["END"],
        },
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "a",
                        "description": "A",
                        "inputSchema": {"json": {"type": "object"}},
                    }
                },
                {
                    "toolSpec": {
                        "name": "b",
                        "inputSchema": {"json": {"type": "object", "properties": {}}},
                    }
                },
            ],
            "toolChoice": {"any": {}},
        },
        "additionalModelRequestFields": {"top_k": 50},
        "guardrailConfig": {"guardrailIdentifier": "g", "guardrailVersion": "1"},
    }


TOOL = [{"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", None),
        ({"type": "function", "function": {"name": "a"}}, {"tool": {"name": "a"}}),
    ],
)
def test_tool_choice(choice: str | dict[str, Any], expected: dict[str, Any] | None) -> None:
    config = converse_request(request(tools=TOOL, tool_choice=choice))["toolConfig"]

    assert config.get("toolChoice") == expected


def test_tool_choice_none_leaves_tools_out() -> None:
    assert "toolConfig" not in converse_request(request(tools=TOOL, tool_choice="none"))


@pytest.mark.parametrize(
    ("url", "match"),
    [("https://img.test/a.png", "data: URLs"), ("data:image/tiff;base64,AAAA", "image/tiff")],
)
def test_unsupported_images_fail_validation(url: str, match: str) -> None:
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
    with pytest.raises(ValidationFailed, match=match):
        converse_request(request(messages=messages))


async def test_a_tool_round_goes_back_in_the_converse_format() -> None:
    client = FakeClient(FakeEventStream(events("text.json")))

    await run(client, request(messages=history.conversation()))

    assert client.calls == [
        {
            "modelId": MODEL,
            "system": [{"text": history.SYSTEM}],
            "messages": [
                {"role": "user", "content": [{"text": history.QUESTION}]},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "reasoningContent": {
                                "reasoningText": {
                                    "text": history.SIGNED["thinking"],
                                    "signature": history.SIGNED["signature"],
                                }
                            }
                        },
                        {
                            "reasoningContent": {
                                "redactedContent": base64.b64decode(history.REDACTED["data"])
                            }
                        },
                        {"text": history.TEXT},
                        {
                            "toolUse": {
                                "toolUseId": "toolu_01",
                                "name": "ui_get_color",
                                "input": history.COLOR_ARGS,
                            }
                        },
                        {
                            "toolUse": {
                                "toolUseId": "toolu_02",
                                "name": "lookup_stock",
                                "input": history.STOCK_ARGS,
                            }
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "toolResult": {
                                "toolUseId": "toolu_01",
                                "content": [{"json": history.COLOR_RESULT}],
                            }
                        },
                        {
                            "toolResult": {
                                "toolUseId": "toolu_02",
                                "content": [{"json": history.STOCK_RESULT}],
                                "status": "error",
                            }
                        },
                    ],
                },
            ],
        }
    ]


def test_a_thinking_block_without_a_signature_goes_without_one() -> None:
    messages = history.conversation()
    messages[2]["reasoning_blocks"] = [{"type": "thinking", "thinking": "unsigned"}]

    assistant = converse_request(request(messages=messages))["messages"][1]

    assert assistant["content"][0] == {"reasoningContent": {"reasoningText": {"text": "unsigned"}}}


def test_redacted_data_that_is_not_base64_fails_validation() -> None:
    messages = history.conversation()
    messages[2]["reasoning_blocks"] = [{"type": "redacted_thinking", "data": "not base64!"}]

    with pytest.raises(ValidationFailed, match="base64"):
        converse_request(request(messages=messages))


class _StallingBedrock:
    """A raw HTTP server answering ConverseStream with one text delta in AWS event-stream
    framing, then nothing until `release` (as a model pausing, or a stalled connection)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.released_by_timeout = False
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self._server.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            head, _, body = request.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
            while len(body) < length:
                body += conn.recv(65536)
            frames = event_stream_message("messageStart", {"role": "assistant"})
            frames += event_stream_message(
                "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hello "}}
            )
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.amazon.eventstream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
                + f"{len(frames):x}\r\n".encode()
                + frames
                + b"\r\n"
            )
            self.released_by_timeout = not self.release.wait(20)
        self._server.close()


async def test_stopping_a_stalled_stream_never_holds_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """boto3 for real, over a socket: botocore's close waits for the read in progress, and
    that read lasts until Bedrock's next bytes (or 60 s). A stop (idle timeout, cancel, a
    caller gone) must not wait for it on the loop, which serves every stream."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    server = _StallingBedrock()
    settings = Settings(bedrock_region="us-east-1", bedrock_endpoint_url=server.url)
    events_out = BedrockProvider(settings).stream(request())
    assert await anext(events_out) == TextDelta("Hello ")
    next_event = asyncio.ensure_future(anext(events_out))
    await asyncio.sleep(0.2)  # the worker is in its read now
    next_event.cancel()
    with pytest.raises(asyncio.CancelledError):
        await next_event
    await events_out.aclose()  # type: ignore[attr-defined]
    # Back on the loop while the upstream still stalls; only now does it send its end.
    server.release.set()
    await asyncio.to_thread(time.sleep, 0.1)
    assert not server.released_by_timeout
