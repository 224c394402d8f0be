"""Time to first token through the proxy itself (mock provider, no upstream delay)."""

from __future__ import annotations

import asyncio
import time

import httpx

from .common import (
    Result,
    Subscriber,
    close_all,
    http_client,
    ms,
    open_subscribers,
    query_body,
    summary,
    text_of_words,
)
from .stack import Stack

REPS = 20
WARMUP = 3
CHANNEL = "bench-ttft"
TEXT = text_of_words(20)


async def _health(stack: Stack) -> list[float]:
    async with http_client(stack) as client:
        for _ in range(WARMUP):
            (await client.get("/health")).raise_for_status()
        times = []
        for _ in range(REPS):
            started = time.perf_counter()
            (await client.get("/health")).raise_for_status()
            times.append(time.perf_counter() - started)
    return times


async def _sse_once(client: httpx.AsyncClient, sub: Subscriber) -> tuple[float, float, float]:
    """(headers, first SSE delta, first WebSocket delta), seconds after the POST was sent."""
    body = query_body([CHANNEL], text=TEXT, delay_ms=0)
    started = time.perf_counter()
    async with client.stream(
        "POST", "/llm/query", json=body, headers={"accept": "text/event-stream"}
    ) as r:
        headers = time.perf_counter() - started
        r.raise_for_status()
        stream_id = r.headers["x-stream-id"]
        first_delta = None
        async for line in r.aiter_lines():
            if first_delta is None and line == "event: delta":
                first_delta = time.perf_counter() - started
    if first_delta is None:
        raise AssertionError("the SSE answer carried no delta frame")
    ws_delta = await sub.first(stream_id, "delta") - started
    await sub.first(stream_id, "end")
    return headers, first_delta, ws_delta


async def _ack_once(client: httpx.AsyncClient, sub: Subscriber) -> tuple[float, float]:
    """(ack answered, first WebSocket delta), seconds after the POST was sent."""
    body = query_body([CHANNEL], text=TEXT, delay_ms=0)
    started = time.perf_counter()
    r = await client.post("/llm/query", json=body)
    ack = time.perf_counter() - started
    r.raise_for_status()
    stream_id = r.json()["streamId"]
    ws_delta = await sub.first(stream_id, "delta") - started
    await sub.first(stream_id, "end")
    return ack, ws_delta


async def _measure(stack: Stack) -> dict[str, list[float]]:
    series: dict[str, list[float]] = {k: [] for k in ("health", "headers", "sse", "ws_sse")}
    series.update({"ack": [], "ws_ack": []})
    series["health"] = await _health(stack)
    (sub,) = await open_subscribers(stack, CHANNEL, 1)
    try:
        async with http_client(stack) as client:
            for _ in range(WARMUP):
                await _sse_once(client, sub)
                await _ack_once(client, sub)
            for _ in range(REPS):
                headers, sse, ws = await _sse_once(client, sub)
                series["headers"].append(headers)
                series["sse"].append(sse)
                series["ws_sse"].append(ws)
                ack, ws = await _ack_once(client, sub)
                series["ack"].append(ack)
                series["ws_ack"].append(ws)
    finally:
        await close_all([sub])
    return series


def run(stack: Stack) -> Result:
    series = asyncio.run(asyncio.wait_for(_measure(stack), 120))
    labels = {
        "health": "GET /health round trip (HTTP floor)",
        "headers": "SSE: response headers",
        "sse": "SSE: first `delta` frame at the caller",
        "ws_sse": "SSE request: first `delta` at a WebSocket subscriber",
        "ack": "non-SSE: ack answered",
        "ws_ack": "non-SSE request: first `delta` at a WebSocket subscriber",
    }
    result = Result(
        key="ttft",
        title="Time to first token overhead",
        method=(
            f"Mock provider, `delayMs` 0, {len(TEXT.split())} words, one channel with one "
            "WebSocket subscriber, one keep-alive HTTP client (as a backend holds). The clock "
            "starts just before the POST `/llm/query` is sent. "
            f"{WARMUP} warm-up rounds, then {REPS} rounds of one SSE request "
            "(`Accept: text/event-stream`) and one plain request (JSON ack, relay detached). "
            "Everything runs on loopback, DynamoDB is moto: this is the proxy's own "
            "overhead, not a provider's."
        ),
        columns=["measure", "median ms", "p95 ms", "max ms"],
    )
    for key, label in labels.items():
        stats = summary(series[key])
        result.data[key] = stats
        result.rows.append([label, ms(stats["median"]), ms(stats["p95"]), ms(stats["max"])])
    return result
