"""One tool round trip: a frontend tool called, a page answering at once, the next round."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from .common import ACTION, Result, Subscriber, close_all, http_client, open_subscribers, summary
from .stack import Stack

ROUNDS = 15
WARMUP = 2
TOOL = "ui_bench_tool"
SCRIPT = [
    {"text": "asking ", "toolCalls": [{"name": TOOL, "arguments": {"n": 1}}]},
    {"text": "answered {{message:" + TOOL + "}}"},
]


def body(channel: str) -> dict[str, Any]:
    return {
        "channels": [channel],
        "actionName": ACTION,
        "options": {"flushIntervalMs": 0},
        "payload": {
            "provider": "mock",
            "messages": [{"role": "user", "content": "benchmark"}],
            "tools": [{"type": "function", "function": {"name": TOOL}}],
            "providerArgs": {"delayMs": 0, "script": SCRIPT},
        },
    }


async def _round(
    stack: Stack, client: httpx.AsyncClient, page: Subscriber, channel: str, over: str
) -> dict[str, float]:
    """Start a stream; answer its call as soon as the page gets it; time each leg."""
    r = await client.post("/llm/query", json=body(channel))
    r.raise_for_status()
    stream_id = r.json()["streamId"]
    called_at, call = await page.wait_for(
        lambda m: m.get("streamId") == stream_id and m.get("type") == "llmToolCall", 15
    )
    answer = {"toolCallId": call["toolCallId"], "success": True, "message": "ok"}
    sent_at = time.perf_counter()
    if over == "websocket":
        await page.ws.send(json.dumps({"action": "llmToolCallResponse", **answer}))
        acked_at, _ = await page.wait_for(
            lambda m: m.get("type") == "ack" and m.get("toolCallId") == call["toolCallId"], 15
        )
    else:
        accepted = await client.post("/llm/tool-response", json=answer)
        accepted.raise_for_status()
        acked_at = time.perf_counter()
    resumed_at, _ = await page.wait_for(
        lambda m: (
            m.get("streamId") == stream_id
            and m.get("type") == "delta"
            and m.get("seq", 0) > call["seq"]
        ),
        15,
    )
    await page.first(stream_id, "end", 15)
    return {
        "ack": acked_at - sent_at,
        "resume": resumed_at - sent_at,
        "round_trip": resumed_at - called_at,
    }


async def _measure(stack: Stack) -> dict[str, list[dict[str, float]]]:
    runs: dict[str, list[dict[str, float]]] = {}
    async with http_client(stack) as client:
        for over in ("websocket", "https"):
            channel = f"bench-tools-{over}"
            [page] = await open_subscribers(stack, channel, 1)
            try:
                series = [
                    await _round(stack, client, page, channel, over) for _ in range(WARMUP + ROUNDS)
                ]
            finally:
                await close_all([page])
            runs[over] = series[WARMUP:]
    return runs


def run(stack: Stack) -> Result:
    runs = asyncio.run(asyncio.wait_for(_measure(stack), 120))
    result = Result(
        key="tool_round",
        title="One frontend tool round trip",
        method=(
            "A stream of the scripted mock (`delayMs` 0): round 1 calls a frontend tool, round 2 "
            "quotes its answer. One WebSocket page answers each `llmToolCall` the moment it "
            "arrives, either with the WebSocket action `llmToolCallResponse` (handled by the "
            "connections handler, as in AWS where it is another function: the stream finds the "
            "answer by polling its record, first look after 0.1 s, backing off to 1 s) or with "
            "`POST /llm/tool-response` (here it lands in the process running the stream, which "
            f"hands it over without a read). {ROUNDS} streams each after {WARMUP} warm-ups. "
            "'answer acknowledged' runs from sending the answer to its ack (or 200); 'next round "
            "at the page' from sending the answer to the first delta of round 2 at the page "
            "(the answer recorded, noticed, the provider called again, the delta published); "
            "'round trip' from the page receiving `llmToolCall` to that delta."
        ),
        columns=["answered over", "measure", "median ms", "p95 ms", "max ms"],
    )
    labels = {
        "ack": "answer acknowledged",
        "resume": "next round at the page",
        "round_trip": "round trip (call received -> next round)",
    }
    for over, series in runs.items():
        for key, label in labels.items():
            stats = summary([run[key] for run in series])
            result.rows.append(
                [
                    over,
                    label,
                    f"{stats['median'] * 1000:.1f}",
                    f"{stats['p95'] * 1000:.1f}",
                    f"{stats['max'] * 1000:.1f}",
                ]
            )
        result.data[over] = series
    return result
