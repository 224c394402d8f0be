"""OpenAI Chat Completions adapter (and Azure, which reuses it): wire in, normalised events out."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from streaming_proxy.config import CompatEndpoint, Settings
from streaming_proxy.errors import (
    ProviderNotConfigured,
    UpstreamError,
    UpstreamTimeout,
    ValidationFailed,
)
from streaming_proxy.events import (
    Finish,
    ProviderEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    Usage,
)
from streaming_proxy.providers.azure import AzureOpenAIProvider
from streaming_proxy.providers.base import LlmRequest, Provider
from streaming_proxy.providers.openai import OpenAIProvider
from streaming_proxy.providers.registry import ProviderRegistry

from . import tool_history as history
from .providers_fixtures import SPLITS, FakeUpstream, fixture_bytes
from .settled import settled

MESSAGES = [{"role": "user", "content": "Hi"}]


def request(**overrides: Any) -> LlmRequest:
    fields: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES}
    return settled(LlmRequest(**(fields | overrides)))


def openai(upstream: FakeUpstream, key: str | None = "server-key") -> OpenAIProvider:
    server_key = SecretStr(key) if key else None
    return OpenAIProvider("openai", upstream.client(), "https://api.openai.com/v1", server_key)


async def collect(
    provider: Provider, llm_request: LlmRequest
) -> tuple[list[ProviderEvent], UpstreamError | None]:
    """Every event until the end, and the UpstreamError that ended the stream, if one did."""
    events: list[ProviderEvent] = []
    try:
        async for event in provider.stream(llm_request):
            events.append(event)
    except UpstreamError as e:
        return events, e
    return events, None


def sse(*frames: str) -> list[bytes]:
    return ["".join(f"{frame}\n\n" for frame in frames).encode()]


def chunk(delta: dict[str, Any], finish_reason: str | None = None, index: int = 0) -> str:
    """A `data:` frame holding one chat.completion.chunk with one choice."""
    choice = {"index": index, "delta": delta, "finish_reason": finish_reason}
    body = {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}
    return "data: " + json.dumps(body)


EXPECTED: dict[str, tuple[list[ProviderEvent], str | None]] = {
    "text.sse": (
        [
            TextDelta("héllo"),
            TextDelta(" — 日本語"),
            TextDelta(" 🎉"),
            TextDelta('\nLine two with "quotes".'),
            Finish("stop"),
            Usage(prompt_tokens=12, completion_tokens=9),
        ],
        None,
    ),
    "tool_call.sse": (
        [
            ToolCallDelta(0, id="call_Wx9kQ2", name="get_weather"),
            *(
                ToolCallDelta(0, arguments=part)
                for part in ['{"', "city", '":"', "Zürich", '","unit', '":"c', '"}']
            ),
            Finish("tool_calls"),
            Usage(prompt_tokens=80, completion_tokens=18),
        ],
        None,
    ),
    "parallel_tool_calls.sse": (
        [
            TextDelta("Checking both."),
            ToolCallDelta(0, id="call_A", name="get_weather"),
            ToolCallDelta(0, arguments='{"city": '),
            ToolCallDelta(0, arguments='"Paris"}'),
            ToolCallDelta(1, id="call_B", name="get_time"),
            ToolCallDelta(1, arguments='{"tz": '),
            ToolCallDelta(1, arguments='"Europe/Paris"}'),
            Finish("tool_calls"),
            Usage(prompt_tokens=95, completion_tokens=40),
        ],
        None,
    ),
    "reasoning_vllm.sse": (
        [
            ThinkingDelta("The user greets"),
            ThinkingDelta(" me; answer briefly."),
            TextDelta("Hi there!"),
            Finish("stop"),
            Usage(prompt_tokens=7, completion_tokens=18),
        ],
        None,
    ),
    "reasoning_openrouter.sse": (
        [
            ThinkingDelta("Thinking about"),
            ThinkingDelta(" it."),
            TextDelta("Done."),
            Finish("length"),
            Usage(prompt_tokens=10, completion_tokens=64),
        ],
        None,
    ),
    "keepalive_unknown_event.sse": (
        [TextDelta("One"), TextDelta(" two"), Finish("content_filter")],
        None,
    ),
    "azure.sse": (
        [TextDelta("Hallo Welt"), Finish("stop"), Usage(prompt_tokens=9, completion_tokens=3)],
        None,
    ),
    "error_in_stream.sse": ([TextDelta("Partial")], "The server had an error"),
    "no_done.sse": ([TextDelta("Cut"), TextDelta(" off")], "stream ended early"),
}


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("fixture", EXPECTED)
async def test_fixture_gives_the_same_events_however_the_bytes_are_split(
    fixture: str, split: str
) -> None:
    data = fixture_bytes(f"openai/{fixture}")
    reads = SPLITS[split](data)
    assert b"".join(reads).replace(b"\r\n", b"\n") == data
    upstream = FakeUpstream(reads)
    expected_events, expected_error = EXPECTED[fixture]

    events, error = await collect(openai(upstream), request())

    assert events == expected_events
    if expected_error is None:
        assert error is None
    else:
        assert error is not None and expected_error in error.message
    assert upstream.body.closed


async def test_tool_call_fragments_reassemble_to_the_arguments_json() -> None:
    upstream = FakeUpstream(SPLITS["byte_by_byte"](fixture_bytes("openai/tool_call.sse")))

    events, _ = await collect(openai(upstream), request())

    arguments = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
    assert json.loads(arguments) == {"city": "Zürich", "unit": "c"}


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("function_call", "tool_calls"),
        ("content_filter", "content_filter"),
        ("end_turn", "stop"),
    ],
)
async def test_finish_reasons_are_mapped(reason: str, expected: str) -> None:
    upstream = FakeUpstream(sse(chunk({}, reason), "data: [DONE]"))

    events, error = await collect(openai(upstream), request())

    assert (events, error) == ([Finish(expected)], None)  # type: ignore[arg-type]


async def test_other_choices_than_the_first_are_ignored() -> None:
    upstream = FakeUpstream(
        sse(
            chunk({"content": "B"}, index=1),
            chunk({"content": "A"}, "stop"),
            "data: [DONE]",
        )
    )

    events, _ = await collect(openai(upstream), request())

    assert events == [TextDelta("A"), Finish("stop")]


async def test_both_reasoning_fields_in_one_delta_are_not_doubled() -> None:
    delta = {"reasoning_content": "hm", "reasoning": "hm"}
    upstream = FakeUpstream(sse(chunk(delta, "stop"), "data: [DONE]"))

    events, _ = await collect(openai(upstream), request())

    assert events == [ThinkingDelta("hm"), Finish("stop")]


async def test_a_stream_that_ends_after_a_finish_but_without_done_is_complete() -> None:
    upstream = FakeUpstream(sse(chunk({"content": "ok"}, "stop")))

    events, error = await collect(openai(upstream), request())

    assert (events, error) == ([TextDelta("ok"), Finish("stop")], None)


async def test_invalid_json_in_a_frame_is_an_upstream_error() -> None:
    upstream = FakeUpstream(sse(chunk({"content": "a"}), "data: {not json"))

    events, error = await collect(openai(upstream), request())

    assert events == [TextDelta("a")]
    assert error is not None and "not a JSON chunk" in error.message
    assert upstream.body.closed


async def test_a_named_error_frame_is_an_upstream_error() -> None:
    upstream = FakeUpstream(sse('event: error\ndata: {"error":{"message":"overloaded"}}'))

    _, error = await collect(openai(upstream), request())

    assert error is not None and "overloaded" in error.message


async def test_an_in_stream_error_with_an_http_code_keeps_that_status() -> None:
    upstream = FakeUpstream(
        sse('data: {"id":"gen-1","error":{"code":429,"message":"Rate limit exceeded"}}')
    )

    _, error = await collect(openai(upstream), request())

    assert error is not None
    assert (error.upstream_status, error.status) == (429, 429)
    assert "Rate limit exceeded" in error.message


@pytest.mark.parametrize(
    ("status", "our_status", "message"),
    [
        (401, 401, "Incorrect API key provided: bad-ke***"),
        (429, 429, "Rate limit reached for gpt-4o-mini"),
        (500, 502, "The server had an error processing your request."),
    ],
)
async def test_http_errors_carry_the_status_and_the_providers_message(
    status: int, our_status: int, message: str
) -> None:
    upstream = FakeUpstream.error(
        status, {"error": {"message": message, "type": "x", "param": None, "code": None}}
    )

    events, error = await collect(openai(upstream), request())

    assert events == []
    assert error is not None
    assert (error.upstream_status, error.status) == (status, our_status)
    assert message in error.message
    assert upstream.body.closed


async def test_a_success_that_is_not_an_event_stream_is_an_upstream_error() -> None:
    upstream = FakeUpstream([b'{"error": "model not found"}'], content_type="application/json")

    _, error = await collect(openai(upstream), request())

    assert error is not None and "model not found" in error.message
    assert upstream.body.closed


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (httpx.ConnectError("refused"), UpstreamError),
        (httpx.ReadTimeout("slow"), UpstreamTimeout),
    ],
)
async def test_transport_failures_become_upstream_errors(
    failure: httpx.HTTPError, expected: type[UpstreamError]
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise failure

    http = httpx.AsyncClient(transport=httpx.MockTransport(fail))
    provider = OpenAIProvider("openai", http, "https://api.openai.com/v1", SecretStr("sk"))

    _, error = await collect(provider, request())

    assert type(error) is expected


async def test_a_consumer_that_stops_early_closes_the_response() -> None:
    upstream = FakeUpstream(SPLITS["every_64_bytes"](fixture_bytes("openai/text.sse")))

    async with aclosing(openai(upstream).stream(request())) as events:
        async for event in events:
            assert event == TextDelta("héllo")
            break

    assert upstream.body.closed
    assert upstream.body.sent < len(upstream.body.reads)


async def test_a_cancelled_consumer_closes_the_response() -> None:
    upstream = FakeUpstream(sse(chunk({"content": "a"})), hang=True)
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in openai(upstream).stream(request()):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert upstream.body.closed


async def test_the_request_sent_upstream() -> None:
    upstream = FakeUpstream(sse("data: [DONE]"))
    args = {"temperature": 0.2, "max_tokens": 50, "stream": False, "model": "x", "messages": []}

    await collect(openai(upstream), request(provider_args=args))

    sent = upstream.request
    assert sent.method == "POST"
    assert str(sent.url) == "https://api.openai.com/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer server-key"
    assert sent.headers["accept"] == "text/event-stream"
    assert upstream.sent_json() == {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "max_completion_tokens": 50,
    }


async def test_tools_and_tool_choice_are_forwarded() -> None:
    upstream = FakeUpstream(sse("data: [DONE]"))
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]

    await collect(openai(upstream), request(tools=tools, tool_choice="required"))

    body = upstream.sent_json()
    assert (body["tools"], body["tool_choice"]) == (tools, "required")


async def test_the_requests_own_key_wins_over_the_server_key() -> None:
    upstream = FakeUpstream(sse("data: [DONE]"))

    await collect(openai(upstream), request(api_key=SecretStr("caller-key")))

    assert upstream.request.headers["authorization"] == "Bearer caller-key"


async def test_prepare_requires_a_model() -> None:
    with pytest.raises(ValidationFailed) as caught:
        openai(FakeUpstream([])).prepare(request(model=None))

    assert caught.value.status == 400 and "model" in caught.value.message


async def test_prepare_requires_a_key_for_openai() -> None:
    with pytest.raises(ProviderNotConfigured) as caught:
        openai(FakeUpstream([]), key=None).prepare(request())

    assert caught.value.status == 401


async def test_a_compat_endpoint_without_a_key_sends_no_authorization() -> None:
    upstream = FakeUpstream(sse("data: [DONE]"))
    settings = Settings(
        compat_endpoints={"ollama": CompatEndpoint(base_url="http://ollama:11434/v1/")}
    )
    provider = ProviderRegistry(settings, upstream.client()).resolve("ollama")

    provider.prepare(request(model="llama3.2"))
    await collect(provider, request(model="llama3.2"))

    assert str(upstream.request.url) == "http://ollama:11434/v1/chat/completions"
    assert "authorization" not in upstream.request.headers


def azure(upstream: FakeUpstream, endpoint: str | None = "https://res.openai.azure.com/") -> Any:
    settings = Settings(
        azure_openai_endpoint=endpoint,
        azure_openai_api_key=SecretStr("az-server"),
        azure_openai_api_version="2024-10-21",
    )
    return ProviderRegistry(settings, upstream.client()).resolve("azure")


async def test_azure_calls_the_deployment_with_an_api_key_header() -> None:
    upstream = FakeUpstream(SPLITS["every_7_bytes"](fixture_bytes("openai/azure.sse")))
    provider = azure(upstream)
    assert isinstance(provider, AzureOpenAIProvider)

    events, error = await collect(provider, request(model="gpt-4o-prod"))

    assert (events, error) == EXPECTED["azure.sse"]
    sent = upstream.request
    assert str(sent.url) == (
        "https://res.openai.azure.com/openai/deployments/gpt-4o-prod/chat/completions"
        "?api-version=2024-10-21"
    )
    assert sent.headers["api-key"] == "az-server"
    assert "authorization" not in sent.headers
    assert upstream.sent_json()["stream"] is True


async def test_azure_uses_the_requests_own_key() -> None:
    upstream = FakeUpstream(sse("data: [DONE]"))

    await collect(azure(upstream), request(api_key=SecretStr("az-caller")))

    assert upstream.request.headers["api-key"] == "az-caller"


async def test_azure_without_an_endpoint_is_not_configured() -> None:
    with pytest.raises(ProviderNotConfigured) as caught:
        azure(FakeUpstream([]), endpoint=None).prepare(request())

    assert caught.value.status == 401


@pytest.mark.parametrize("model", [None, "", "../other", "a/b", "dep?x=1"])
async def test_azure_rejects_a_missing_or_unsafe_deployment(model: str | None) -> None:
    with pytest.raises(ValidationFailed):
        azure(FakeUpstream([])).prepare(request(model=model))


def compat(upstream: FakeUpstream) -> Any:
    settings = Settings(compat_endpoints={"vllm": CompatEndpoint(base_url="http://vllm:8000/v1")})
    return ProviderRegistry(settings, upstream.client()).resolve("vllm")


@pytest.mark.parametrize("make", [openai, azure, compat], ids=["openai", "azure", "compat"])
async def test_a_tool_round_goes_back_without_the_proxys_extension_fields(make: Any) -> None:
    upstream = FakeUpstream(sse("data: [DONE]"))
    messages = history.conversation()
    sent_before = json.dumps(messages)

    await collect(make(upstream), request(model="gpt-4o", messages=messages))

    assert upstream.sent_json() == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": history.SYSTEM},
            {"role": "user", "content": history.QUESTION},
            {
                "role": "assistant",
                "content": history.TEXT,
                "tool_calls": [
                    history.tool_call("toolu_01", "ui_get_color", history.COLOR_ARGS),
                    history.tool_call("toolu_02", "lookup_stock", history.STOCK_ARGS),
                ],
            },
            messages[3],
            messages[4],
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert json.dumps(messages) == sent_before  # the caller's conversation is left as it was


@pytest.mark.parametrize("make", [openai, azure, compat], ids=["openai", "azure", "compat"])
async def test_history_arguments_given_as_an_object_go_out_as_the_json_string_openai_wants(
    make: Any,
) -> None:
    upstream = FakeUpstream(sse("data: [DONE]"))
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": "ü"}}}
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]
    await collect(make(upstream), request(model="gpt-4o", messages=messages))
    [sent] = upstream.sent_json()["messages"][1]["tool_calls"]
    assert sent["function"] == {"name": "f", "arguments": '{"a": "ü"}'}
    assert call["function"]["arguments"] == {"a": "ü"}  # the caller's copy is untouched
