"""Hostile OpenAI-format upstreams (OpenAI, Azure, every COMPAT_ENDPOINTS server): escapes
pydantic's parser refuses, error bodies labelled event streams, huge and many events."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from streaming_proxy.errors import UpstreamError
from streaming_proxy.events import Finish, ProviderEvent, TextDelta, ToolCallDelta
from streaming_proxy.providers.base import LlmRequest
from streaming_proxy.providers.openai import OpenAIProvider
from streaming_proxy.upstream import valid

from .providers_fixtures import SPLITS, FakeUpstream
from .settled import settled

REQUEST = settled(LlmRequest(model="llama3", messages=[{"role": "user", "content": "Hi"}]))
DONE = b"data: [DONE]\n\n"


def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n"


async def read(reads: list[bytes]) -> list[ProviderEvent]:
    upstream = FakeUpstream(reads)
    server_key = SecretStr("compat-key")
    adapter = OpenAIProvider("vllm", upstream.client(), "http://vllm/v1", server_key)
    return [valid(event) async for event in adapter.stream(REQUEST)]  # type: ignore[misc]


@pytest.mark.parametrize("split", ["whole", "byte_by_byte"])
async def test_a_lone_surrogate_escape_is_repaired_as_every_adapter_repairs_it(split: str) -> None:
    # pydantic's JSON parser refuses `\ud800`: the whole answer failed as "not a JSON
    # chunk", where Anthropic's and Gemini's adapters keep the text with U+FFFD.
    body = (
        chunk({"content": "ok "})
        + b'data: {"choices": [{"index": 0, "delta": {"content": "a\\ud800b"}}]}\n\n'
        + b'data: {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1",'
        b' "function": {"name": "f", "arguments": "{\\"q\\": \\"\\udfff\\"}"}}]}}]}\n\n'
        + chunk({}, "tool_calls")
        + DONE
    )
    events = await read(SPLITS[split](body))
    assert events == [
        TextDelta("ok "),
        TextDelta("a\ufffdb"),
        ToolCallDelta(0, id="c1", name="f", arguments='{"q": "\ufffd"}'),
        Finish("tool_calls"),
    ]


async def test_a_chunk_that_is_not_json_is_still_an_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="not a JSON chunk"):
        await read([chunk({"content": "a"}), b"data: {not json\n\n"])
    with pytest.raises(UpstreamError, match="not a JSON chunk"):
        await read([b'data: {"choices": [], "usage": {"prompt_tokens": NaN}}\n\n'])


@pytest.mark.parametrize("split", ["whole", "byte_by_byte"])
async def test_a_json_error_body_labelled_an_event_stream_says_the_providers_message(
    split: str,
) -> None:
    # Some gateways answer 200 `text/event-stream` with a plain JSON error: read as SSE it
    # is no event at all, and the caller learnt only "stream ended early".
    body = b'  {"error": {"message": "model llama9 not found", "type": "not_found"}}'
    with pytest.raises(UpstreamError) as raised:
        await read(SPLITS[split](body))
    assert "model llama9 not found (not_found)" in raised.value.message
    assert "instead of an event stream" in raised.value.message


async def test_a_one_megabyte_event_and_ten_thousand_tiny_ones_arrive_whole() -> None:
    big = "x" * 1_048_576
    events = await read([chunk({"content": big}), chunk({}, "stop"), DONE])
    assert events == [TextDelta(big), Finish("stop")]
    many = b"".join(chunk({"content": "ab"}) for _ in range(10_000)) + chunk({}, "stop")
    events = await read(SPLITS["every_64_bytes"](many + DONE))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "ab" * 10_000
    assert events[-1] == Finish("stop")
