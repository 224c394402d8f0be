"""One mock-provider stream to a channel's subscribers, checked and counted (coalescing and
concurrency use it)."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

import httpx

from .common import Subscriber, check_delivery, query_body
from .stack import Stack

STREAM_TIMEOUT_SECONDS = 30.0
LOG_WAIT_SECONDS = 5.0


@dataclass
class StreamRun:
    """What one stream did, seen from its subscribers and from the stack's log."""

    wall: float  # POST sent -> every subscriber has `end`
    ack: float
    messages: int  # messages the median subscriber got (a lagging one gets fewer, merged)
    delivered: int  # messages received over all subscribers = successful posts
    logged_posts: int | None  # the 'stream finished' log line's `posts`
    logged_messages: int | None
    logged_duration_ms: float | None
    cpu: float  # app + emulator CPU seconds from POST to the last `end` (sole stream only)


async def run_stream(
    stack: Stack,
    client: httpx.AsyncClient,
    subs: list[Subscriber],
    channel: str,
    *,
    text: str,
    chunks: int,
    delay_ms: int,
    flush_interval_ms: int | None = None,
) -> StreamRun:
    """One detached stream (plain POST, JSON ack); waits for `end` everywhere and checks
    that every subscriber got exactly `text`, in order (BenchmarkFailure if not)."""
    body = query_body(
        [channel], text=text, chunks=chunks, delay_ms=delay_ms, flush_interval_ms=flush_interval_ms
    )
    cpu_started = sum(stack.cpu())
    started = time.perf_counter()
    r = await client.post("/llm/query", json=body)
    ack = time.perf_counter() - started
    r.raise_for_status()
    stream_id = r.json()["streamId"]
    ends = await asyncio.gather(*(s.first(stream_id, "end", STREAM_TIMEOUT_SECONDS) for s in subs))
    wall = max(ends) - started
    cpu = sum(stack.cpu()) - cpu_started
    counts = []
    for i, sub in enumerate(subs):
        messages = sub.of(stream_id)
        check_delivery(messages, text, f"subscriber {i} of {len(subs)} on {channel}")
        counts.append(len(messages))  # a lagging connection may get a merged backlog
    record = None
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while record is None and time.monotonic() < deadline:
        record = await asyncio.to_thread(stack.finished_record, stream_id)
        if record is None:
            await asyncio.sleep(0.05)
    return StreamRun(
        wall=wall,
        ack=ack,
        messages=int(statistics.median(counts)),
        delivered=sum(counts),
        logged_posts=None if record is None else int(record["posts"]),
        logged_messages=None if record is None else int(record["messages"]),
        logged_duration_ms=None if record is None else float(record["duration_ms"]),
        cpu=cpu,
    )
