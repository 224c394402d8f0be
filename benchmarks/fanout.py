"""Fan-out: one stamped stream to N subscribers of one channel, token -> socket latency."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from typing import Any

import httpx

from .common import (
    ACTION,
    Result,
    Subscriber,
    check_delivery,
    close_all,
    http_client,
    open_subscribers,
    percentile,
)
from .stack import UPSTREAM_PROVIDER, Stack
from .upstream import MODEL, StampedRequest, latencies_ms

SUBSCRIBER_COUNTS = (1, 10, 50, 100, 200)
CHUNKS = 200
DELAY_MS = 5
REPS = 2
STREAM_TIMEOUT_SECONDS = 60.0


@dataclass
class FanoutRun:
    """One stream seen from every subscriber, with the CPU each process spent on it."""

    subscribers: int
    latencies_ms: list[float]  # one per token per subscriber
    messages: list[int]  # per subscriber (a lagging lane merges, so it gets fewer)
    wall: float  # POST sent -> every subscriber has `end`
    app_cpu: float
    gateway_cpu: float
    bench_cpu: float  # this process (the subscribers) over the same span

    @property
    def posts(self) -> int:
        """Messages received over all subscribers = successful PostToConnection calls."""
        return sum(self.messages)


def stamped_query(channel: str, ask: StampedRequest) -> dict[str, Any]:
    """A `/llm/query` body streaming the stamped upstream to `channel`."""
    return {
        "channels": [channel],
        "actionName": ACTION,
        "payload": {"provider": UPSTREAM_PROVIDER, "model": MODEL, "messages": ask.as_messages()},
    }


async def _stream(
    stack: Stack, client: httpx.AsyncClient, subs: list[Subscriber], channel: str, tag: str
) -> FanoutRun:
    """One detached stream (plain POST, JSON ack); every subscriber must end with exactly
    what the upstream sent, seq contiguous, one `end` (BenchmarkFailure if not)."""
    ask = StampedRequest(tag=tag, chunks=CHUNKS, delay_ms=DELAY_MS)
    await stack.quiet()
    app0, gateway0 = stack.cpu()
    bench0, started = time.process_time(), time.perf_counter()
    r = await client.post("/llm/query", json=stamped_query(channel, ask))
    r.raise_for_status()
    stream_id = r.json()["streamId"]
    await asyncio.gather(*(s.first(stream_id, "end", STREAM_TIMEOUT_SECONDS) for s in subs))
    wall, bench = time.perf_counter() - started, time.process_time() - bench0
    app1, gateway1 = stack.cpu()
    text = await stack.upstream.sent(client, tag)
    run = FanoutRun(len(subs), [], [], wall, app1 - app0, gateway1 - gateway0, bench)
    for i, sub in enumerate(subs):
        arrivals = sub.arrivals(stream_id)
        check_delivery([m for _, m in arrivals], text, f"subscriber {i} of {len(subs)}")
        run.messages.append(len(arrivals))
        for arrived, m in arrivals:
            if m["type"] == "delta":
                run.latencies_ms += latencies_ms(arrived, m["content"])
    assert len(run.latencies_ms) == CHUNKS * len(subs)  # the text check implies it
    return run


async def _measure(stack: Stack) -> dict[int, list[FanoutRun]]:
    runs: dict[int, list[FanoutRun]] = {}
    channel = f"bench-fanout-{time.time_ns()}"
    subs: list[Subscriber] = []
    try:
        async with http_client(stack) as client:
            for count in SUBSCRIBER_COUNTS:
                # One channel that grows: earlier subscribers stay for the larger counts.
                subs += await open_subscribers(stack, channel, count - len(subs))
                runs[count] = [
                    await _stream(stack, client, subs, channel, f"fanout-{count}-{rep}")
                    for rep in range(REPS)
                ]
    finally:
        await close_all(subs)
    return runs


METHOD = (
    f"One stream of {CHUNKS} chunks x {DELAY_MS} ms from the stamped upstream "
    "(benchmarks/upstream.py: an OpenAI-format server in its own process, reached as a "
    "compatible provider; each chunk's `delta.content` carries its wall-clock send time) "
    "through `POST /llm/query` (plain POST: JSON ack, relay detached) to one channel with N "
    "WebSocket subscribers, default coalescing window (20 ms, widening under load); "
    f"{REPS} streams per N, on one channel whose subscribers are opened before the streams "
    "and kept for the larger N. Processes: the app (the `python -m devstack` process), the "
    "gateway emulator with moto DynamoDB in its own process "
    "(`DEV_GATEWAY_PROCESS`), the upstream in its own, and the subscribers in the benchmark's "
    "process (its CPU is the last column: all four share 2 cores). Token -> socket latency = "
    "a subscriber's arrival time of the message carrying a token minus the token's embedded "
    "send time; a merged message carries several tokens and each counts, over every token "
    f"x subscriber x stream ({CHUNKS} x N x {REPS} samples). Posts = messages received over "
    "all subscribers (each a successful PostToConnection); messages / subscriber is the "
    "median (min-max). App CPU = user+system time of the app process alone from the POST "
    "to the last `end`, per post (it includes the relay's own work, which weighs most at "
    "N = 1); the emulators' process (gateway and DynamoDB) is shown apart. Delivery: "
    "every subscriber's messages are "
    "replayed as a browser applies them (seq contiguous, a merged message covering "
    "firstSeq..seq, one `end`, exactly the text the upstream says it sent): any loss or "
    "reorder fails the benchmark instead of reporting."
)


def run(stack: Stack) -> Result:
    runs = asyncio.run(asyncio.wait_for(_measure(stack), 200))
    result = Result(
        key="fanout",
        title="Fan-out: token -> socket latency at N subscribers",
        method=METHOD,
        columns=[
            "subscribers",
            "token -> socket ms: p50",
            "p99",
            "max",
            "posts / stream",
            "messages / subscriber",
            "app CPU ms / post",
            "emulator CPU ms / post",
            "subscriber-streams delivered exactly",
            "stream wall ms",
            "subscribers' process CPU ms / stream",
        ],
    )
    for count, series in runs.items():
        result.rows.append(_row(count, series))
        result.data[count] = _data(series)
    busiest = max(
        (r for series in runs.values() for r in series), key=lambda r: r.bench_cpu / r.wall
    )
    result.notes.append(
        f"The subscribers' process used at most {100 * busiest.bench_cpu / busiest.wall:.0f} % "
        f"of one core over a stream ({busiest.subscribers} subscribers), so a busy reader "
        "loop does not delay their arrival stamps much; they stay in the benchmark's process."
    )
    return result


def _data(series: list[FanoutRun]) -> dict[str, Any]:
    latencies = [v for r in series for v in r.latencies_ms]
    posts = sum(r.posts for r in series)
    return {
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies),
        "posts": posts / len(series),
        "messages": statistics.median(m for r in series for m in r.messages),
        "app_cpu_per_post": sum(r.app_cpu for r in series) / posts,
        "gateway_cpu_per_post": sum(r.gateway_cpu for r in series) / posts,
        "wall": statistics.median(r.wall for r in series),
        "bench_cpu": statistics.median(r.bench_cpu for r in series),
    }


def _row(count: int, series: list[FanoutRun]) -> list[str]:
    d = _data(series)
    messages = [m for r in series for m in r.messages]
    return [
        str(count),
        f"{d['p50']:.1f}",
        f"{d['p99']:.1f}",
        f"{d['max']:.1f}",
        f"{d['posts']:.0f}",
        f"{d['messages']:g} ({min(messages)}-{max(messages)})",
        f"{d['app_cpu_per_post'] * 1000:.3f}",
        f"{d['gateway_cpu_per_post'] * 1000:.3f}",
        f"{count * len(series)}/{count * len(series)}",
        f"{d['wall'] * 1000:.0f}",
        f"{d['bench_cpu'] * 1000:.0f}",
    ]
