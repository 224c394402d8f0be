"""Coalescing: the same stream with different `options.flushIntervalMs` windows."""

from __future__ import annotations

import asyncio
import statistics

from .common import Result, close_all, http_client, open_subscribers, text_of_words
from .stack import Stack
from .streams import StreamRun, run_stream

CHUNKS = 400
DELAY_MS = 2
TEXT = text_of_words(CHUNKS)
WINDOWS_MS = (0, 20, 100)  # off, the default, a wide one
SUBSCRIBERS = 2
REPS = 3


async def _measure(stack: Stack) -> dict[int, list[StreamRun]]:
    runs: dict[int, list[StreamRun]] = {}
    channel = "bench-coalesce"
    subs = await open_subscribers(stack, channel, SUBSCRIBERS)
    try:
        async with http_client(stack) as client:
            for window in WINDOWS_MS:
                runs[window] = [
                    await run_stream(
                        stack,
                        client,
                        subs,
                        channel,
                        text=TEXT,
                        chunks=CHUNKS,
                        delay_ms=DELAY_MS,
                        flush_interval_ms=window,
                    )
                    for _ in range(REPS)
                ]
    finally:
        await close_all(subs)
    return runs


def run(stack: Stack) -> Result:
    runs = asyncio.run(asyncio.wait_for(_measure(stack), 120))
    result = Result(
        key="coalescing",
        title="Coalescing window",
        method=(
            f"One mock-provider stream ({CHUNKS} chunks, `delayMs` {DELAY_MS}, {len(TEXT)} "
            "characters, plain POST: JSON ack, relay detached) with "
            f"`options.flushIntervalMs` {', '.join(map(str, WINDOWS_MS))}, {SUBSCRIBERS} "
            f"subscribers on one channel, {REPS} streams per window, medians. Messages per "
            "stream = what one subscriber receives (threadInfo + deltas + end); posts = "
            "messages x subscribers. Every subscriber's text and seq are checked as in the "
            "fan-out benchmark."
        ),
        columns=[
            "flushIntervalMs",
            "messages / stream",
            "posts (all subscribers)",
            "stream wall ms",
            "messages / s / subscriber",
            "chars / delta",
        ],
    )
    for window, series in runs.items():
        messages = statistics.median(r.messages for r in series)
        wall = statistics.median(r.wall for r in series)
        deltas = max(1.0, messages - 2)
        result.rows.append(
            [
                str(window),
                f"{messages:g}",
                f"{statistics.median(r.delivered for r in series):g}",
                f"{wall * 1000:.0f}",
                f"{messages / wall:.0f}",
                f"{len(TEXT) / deltas:.0f}",
            ]
        )
        result.data[window] = [r.__dict__ for r in series]
    return result
