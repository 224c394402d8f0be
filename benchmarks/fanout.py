"""Fan-out: one stream to N subscribers of one channel."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

import httpx

from .common import (
    Result,
    Subscriber,
    check_delivery,
    close_all,
    http_client,
    open_subscribers,
    query_body,
    text_of_words,
)
from .stack import Stack

CHUNKS = 400
DELAY_MS = 2
TEXT = text_of_words(CHUNKS)
SUBSCRIBER_COUNTS = (1, 10, 50)
REPS = 3
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
    cpu: float  # stack process CPU seconds from POST to the last `end` (sole stream only)


async def run_stream(
    stack: Stack,
    client: httpx.AsyncClient,
    subs: list[Subscriber],
    channel: str,
    *,
    text: str = TEXT,
    chunks: int = CHUNKS,
    delay_ms: int = DELAY_MS,
    flush_interval_ms: int | None = None,
) -> StreamRun:
    """One detached stream (plain POST, JSON ack); waits for `end` everywhere and checks
    that every subscriber got exactly `text`, in order (BenchmarkFailure if not)."""
    body = query_body(
        [channel], text=text, chunks=chunks, delay_ms=delay_ms, flush_interval_ms=flush_interval_ms
    )
    cpu_started = stack.cpu_seconds()
    started = time.perf_counter()
    r = await client.post("/llm/query", json=body)
    ack = time.perf_counter() - started
    r.raise_for_status()
    stream_id = r.json()["streamId"]
    ends = await asyncio.gather(*(s.first(stream_id, "end", STREAM_TIMEOUT_SECONDS) for s in subs))
    wall = max(ends) - started
    cpu = stack.cpu_seconds() - cpu_started
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


async def _measure(stack: Stack) -> dict[int, list[StreamRun]]:
    runs: dict[int, list[StreamRun]] = {}
    async with http_client(stack) as client:
        for count in SUBSCRIBER_COUNTS:
            channel = f"bench-fanout-{count}"
            subs = await open_subscribers(stack, channel, count)
            try:
                runs[count] = [await run_stream(stack, client, subs, channel) for _ in range(REPS)]
            finally:
                await close_all(subs)
    return runs


def run(stack: Stack) -> Result:
    runs = asyncio.run(asyncio.wait_for(_measure(stack), 150))
    result = Result(
        key="fanout",
        title="Fan-out to N subscribers",
        method=(
            f"One stream of {CHUNKS} mock chunks (`chunks` {CHUNKS}, `delayMs` {DELAY_MS}, "
            f"{len(TEXT)} characters) on one channel with N WebSocket subscribers, default "
            f"coalescing window (40 ms), plain POST (JSON ack, relay detached); {REPS} streams "
            "per N, medians shown. Wall time runs from sending the POST until the last "
            "subscriber has `end`. Every subscriber's messages are checked: seq contiguous "
            "(a lagging connection's merged messages cover firstSeq..seq), one final `end`, "
            "deltas joining to exactly the text (the run fails otherwise). 'messages / "
            "subscriber' is the median. 'posts delivered' = messages received over all "
            "subscribers (every successful PostToConnection on loopback); 'posts logged' = "
            "the `posts` field of "
            "the relay's 'stream finished' log line. Stack CPU = user+system time of the stack "
            "process (app, emulator and moto together) over the stream, per delivered post."
        ),
        columns=[
            "subscribers",
            "messages / subscriber",
            "posts delivered",
            "posts logged / delivered, each stream",
            "wall ms (median)",
            "wall ms (max)",
            "posts/s",
            "stack CPU ms / post",
        ],
    )
    for count, series in runs.items():
        walls = [r.wall for r in series]
        wall = statistics.median(walls)
        delivered = statistics.median(r.delivered for r in series)
        logged = [
            f"{'?' if r.logged_posts is None else r.logged_posts}/{r.delivered}" for r in series
        ]
        cpu_per_post = statistics.median(r.cpu / r.delivered for r in series)
        result.rows.append(
            [
                str(count),
                f"{statistics.median(r.messages for r in series):g}",
                f"{delivered:g}",
                ", ".join(logged),
                f"{wall * 1000:.0f}",
                f"{max(walls) * 1000:.0f}",
                f"{delivered / wall:.0f}",
                f"{cpu_per_post * 1000:.2f}",
            ]
        )
        result.data[count] = [r.__dict__ for r in series]
    return result
