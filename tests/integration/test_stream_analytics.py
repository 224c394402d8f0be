"""Analytics per stream through the local stack: the "stream finished" log line and the EMF
record of a Klai stream with channels and subscribers and of `/v1` streams, usage
estimated or reported, priced or not (docs/operations.md, "Analytics per stream")."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from tests.conftest import PRICES, Stack
from tests.integration.test_tool_loop import ASK_COLOUR, SAY_COLOUR, answer, query, tool_call
from tests.wsclient import Subscriber, text_of

ANSWER = "Analytics count what a stream did, never what it said: no text in the records."
PROMPT = "a prompt that must not reach the logs"


async def finished(stack: Stack, stream_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stream's log line and its EMF record (written just after the line)."""
    deadline = time.monotonic() + 15
    while True:
        line = stack.finished_record(stream_id)
        emf = [r for r in stack.log_records() if "_aws" in r and r.get("stream_id") == stream_id]
        if line is not None and emf:
            assert len(emf) == 1, "one EMF record per stream"
            return line, emf[0]
        assert time.monotonic() < deadline, f"no log line or EMF record for {stream_id}"
        await asyncio.sleep(0.05)


def metric(emf: dict[str, Any], name: str) -> Any:
    """A metric's value, which the record must also declare, with the stream's dimensions."""
    by_app = emf["_aws"]["CloudWatchMetrics"][0]
    assert name in {m["Name"] for m in by_app["Metrics"]}
    value = emf[name]
    return value[0] if isinstance(value, list) else value


def assert_common_emf(emf: dict[str, Any], line: dict[str, Any]) -> None:
    """Dimensions app and provider (model a property), the alarms' aggregate, and the same
    numbers as the log line."""
    by_app, aggregate = emf["_aws"]["CloudWatchMetrics"]
    assert by_app["Dimensions"] == [["app", "provider", "service"]]
    assert aggregate["Dimensions"] == [["service"]]
    assert [m["Name"] for m in aggregate["Metrics"]] == [
        "PostFailures",
        "MessagesDropped",
        "StreamErrors",
        "RecordFailures",
    ]
    assert (emf["app"], emf["provider"], emf["service"]) == (
        line["app_id"],
        line["provider"],
        "streaming-proxy",
    )
    assert (emf["kind"], emf["status"], emf["finish_reason"]) == (
        line["kind"],
        line["status"],
        line["finish_reason"],
    )
    assert emf["model"] == line.get("model") and emf["tokens_estimated"] is line["tokens_estimated"]
    assert metric(emf, "PromptTokens") == line["prompt_tokens"]
    assert metric(emf, "OutputTokens") == line["completion_tokens"]
    assert metric(emf, "TotalTokens") == line["total_tokens"]
    assert metric(emf, "StreamErrors") == (1 if line["status"] == "failed" else 0)
    assert metric(emf, "RecordFailures") == (1 if line["record_failed"] else 0)
    assert metric(emf, "Channels") == line["channels"]
    assert metric(emf, "SubscribersReached") == line["subscribers"]
    assert metric(emf, "FanoutPosts") == line["posts"]
    assert metric(emf, "PostFailures") == line["post_failures"]
    assert metric(emf, "MessagesDropped") == line["dropped"]
    assert metric(emf, "MessagesMerged") == line["merged"]
    assert metric(emf, "ToolRounds") == line["tool_rounds"]
    assert metric(emf, "TimeToFirstToken") == pytest.approx(line["ttft_ms"], abs=0.1)
    assert metric(emf, "GenerationTime") == pytest.approx(line["generation_ms"], abs=0.1)
    if line["generation_ms"] >= 1:
        tokens_per_second = line["completion_tokens"] / (line["generation_ms"] / 1000)
        assert line["output_tokens_per_second"] == pytest.approx(tokens_per_second, rel=0.01)
        assert metric(emf, "OutputTokensPerSecond") == line["output_tokens_per_second"]
    else:  # the whole answer came at once: no rate to report
        assert "output_tokens_per_second" not in line and "OutputTokensPerSecond" not in emf
    for record in (line, emf):  # what the stream said is never in its records
        assert PROMPT not in json.dumps(record) and ANSWER[:30] not in json.dumps(record)


async def test_a_klai_stream_with_channels_reports_its_fan_out_and_estimated_usage(
    stack: Stack,
) -> None:
    subs = [
        await Subscriber.open(stack.ws, stack.token("stats-room")),
        await Subscriber.open(stack.ws, stack.token("stats-room")),
        await Subscriber.open(stack.ws, stack.token("stats-side")),
    ]
    try:
        body = {
            "channels": ["stats-room", "stats-side"],
            "actionName": "onStats",
            "payload": {
                "provider": "mock",
                "model": "echo",
                "messages": [{"role": "user", "content": PROMPT}],
                "providerArgs": {"text": ANSWER, "delayMs": 10, "usage": False},
            },
        }
        async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
            r = await client.post("/llm/query", json=body, headers={"x-api-key": stack.api_key})
        assert r.status_code == 200, r.text
        stream_id = r.json()["streamId"]
        received = [await sub.stream(stream_id) for sub in subs]
        line, emf = await finished(stack, stream_id)
    finally:
        for sub in subs:
            await sub.close()
    assert all(text_of(messages) == ANSWER for messages in received)
    usage = received[0][-1]["usage"]
    assert usage["estimated"] is True  # the mock said nothing: tokens.py estimated them
    assert line["message"] == "stream finished"
    assert (line["app_id"], line["provider"], line["model"], line["kind"]) == (
        stack.app_id,
        "mock",
        "echo",
        "llm",
    )
    assert (line["status"], line["finish_reason"]) == ("done", "stop") and "error" not in line
    assert (line["prompt_tokens"], line["completion_tokens"], line["total_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
        usage["total_tokens"],
    )
    assert line["tokens_estimated"] is True
    assert "cost_usd" not in line and "EstimatedCost" not in emf  # no price for the mock
    assert (line["channels"], line["channel_names"]) == (2, ["stats-room", "stats-side"])
    assert line["subscribers"] == 3
    assert line["posts"] == sum(len(messages) for messages in received)
    assert (line["post_failures"], line["dropped"], line["gone"]) == (0, 0, 0)
    assert line["merged"] >= 0 and line["tool_rounds"] == 0
    # The mock waits 10 ms between words: generation spans them, after the first token.
    assert 0 < line["ttft_ms"] <= line["duration_ms"]
    assert 0 < line["generation_ms"] < line["duration_ms"]
    assert_common_emf(emf, line)
    assert "stats-room" not in json.dumps(emf)  # channel names are app data: log line only


async def v1_stream(stack: Stack, model: str) -> tuple[str, list[dict[str, Any]]]:
    """A streamed `/v1/chat/completions`; its stream id and its chunks."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks: list[dict[str, Any]] = []
    headers = {"authorization": f"Bearer {stack.api_key}"}
    async with (
        httpx.AsyncClient(base_url=stack.http, timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r,
    ):
        assert r.status_code == 200
        async for text in r.aiter_lines():
            if text.startswith("data: {"):
                chunks.append(json.loads(text.removeprefix("data: ")))
    return "st_" + str(chunks[0]["id"]).removeprefix("chatcmpl-"), chunks


async def test_a_v1_stream_reports_provider_usage_and_its_cost_from_the_price_table(
    stack: Stack,
) -> None:
    stream_id, chunks = await v1_stream(stack, "openai/fake-text")
    line, emf = await finished(stack, stream_id)
    usage = chunks[-1]["usage"]
    assert (line["app_id"], line["provider"], line["model"], line["kind"]) == (
        stack.app_id,
        "openai",
        "fake-text",
        "openai",
    )
    assert (line["prompt_tokens"], line["completion_tokens"]) == (12, 30)  # as the fake says
    assert usage["prompt_tokens"] == 12 and usage["completion_tokens"] == 30
    assert line["total_tokens"] == 42 and line["tokens_estimated"] is False
    price = PRICES["openai"]["fake-text"]
    cost = (12 * price["input"] + 30 * price["output"]) / 1_000_000
    assert line["cost_usd"] == pytest.approx(cost)
    assert metric(emf, "EstimatedCost") == pytest.approx(cost)
    assert (line["channels"], line["channel_names"], line["subscribers"], line["posts"]) == (
        0,
        [],
        0,
        0,
    )
    assert (line["status"], line["finish_reason"]) == ("done", "stop")
    assert_common_emf(emf, line)


async def test_a_failed_stream_counts_in_stream_errors_and_an_unpriced_model_costs_nothing(
    stack: Stack,
) -> None:
    stream_id, _ = await v1_stream(stack, "openai/fake-error")
    line, emf = await finished(stack, stream_id)
    assert (line["status"], line["finish_reason"], line["error"]) == (
        "failed",
        "error",
        "upstream_error",
    )
    assert metric(emf, "StreamErrors") == 1 and emf["error"] == "upstream_error"
    assert "cost_usd" not in line and "EstimatedCost" not in emf  # no price: no cost, not 0
    assert_common_emf(emf, line)


async def test_generation_time_leaves_out_the_wait_for_a_browsers_tool_answer(
    stack: Stack,
) -> None:
    sub = await Subscriber.open(stack.ws, stack.token("stats-tools"))
    try:
        async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
            r = await client.post(
                "/llm/query",
                json=query("stats-tools", [ASK_COLOUR, SAY_COLOUR]),
                headers={"x-api-key": stack.api_key},
            )
        stream_id = r.json()["streamId"]
        call = await tool_call(sub, stream_id)
        await asyncio.sleep(1.0)  # the page takes its time to answer
        await answer(sub, call["toolCallId"], "red")
        await sub.stream(stream_id)
        line, emf = await finished(stack, stream_id)
    finally:
        await sub.close()
    assert (line["tool_rounds"], line["tool_calls"]) == (1, 1)
    assert line["duration_ms"] > 1000
    # Two rounds of a few 2 ms words: the second's time counts, the second of waiting not.
    assert 0 < line["generation_ms"] < line["duration_ms"] - 900
    assert_common_emf(emf, line)
