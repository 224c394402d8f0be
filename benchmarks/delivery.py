"""Delivery under load: many streams at once, and one stream to many subscribers with no
coalescing window. Every subscriber must end with the exact text, or the run fails."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

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

STREAM_TIMEOUT_SECONDS = 90.0
LOG_WAIT_SECONDS = 15.0


@dataclass(frozen=True)
class Scenario:
    name: str
    streams: int
    subscribers: int  # per stream
    chunks: int
    delay_ms: int
    flush_interval_ms: int | None  # None = the default window (20 ms)


SCENARIOS = (
    Scenario("50 streams x 2 subscribers", 50, 2, 200, 5, None),
    Scenario("50 streams x 2 subscribers, no window", 50, 2, 200, 5, 0),
    Scenario("1 stream x 200 subscribers, no window", 1, 200, 400, 2, 0),
)


@dataclass
class Outcome:
    scenario: Scenario
    wall: float
    subscribers: int
    exact: int  # subscribers that ended with exactly the text, seq contiguous, one end
    messages: int  # relayed messages over all streams (the log lines' `messages`)
    posts: int
    merged: int
    retries: int
    dropped: int
    failures: int
    catch_ups: int


async def _subscribed(stack: Stack, scenario: Scenario, index: int) -> tuple[list[Subscriber], str]:
    """The subscribers of one stream's own channel, connected before the stream starts."""
    channel = f"bench-load-{scenario.streams}x{scenario.subscribers}-{index}-{time.time_ns()}"
    return await open_subscribers(stack, channel, scenario.subscribers), channel


async def _run(stack: Stack, scenario: Scenario) -> Outcome:
    text = text_of_words(scenario.chunks)
    await stack.quiet()  # the previous scenario's `$disconnect` cleanups are done
    async with http_client(stack) as client:
        prepared = [await _subscribed(stack, scenario, i) for i in range(scenario.streams)]
        started = time.perf_counter()
        acks = await asyncio.gather(
            *(
                client.post(
                    "/llm/query",
                    json=query_body(
                        [channel],
                        text=text,
                        chunks=scenario.chunks,
                        delay_ms=scenario.delay_ms,
                        flush_interval_ms=scenario.flush_interval_ms,
                    ),
                )
                for _, channel in prepared
            )
        )
        stream_ids = []
        for ack in acks:
            ack.raise_for_status()
            stream_ids.append(str(ack.json()["streamId"]))
        await asyncio.gather(
            *(
                sub.first(stream_id, "end", STREAM_TIMEOUT_SECONDS)
                for (subs, _), stream_id in zip(prepared, stream_ids, strict=True)
                for sub in subs
            )
        )
        wall = time.perf_counter() - started
        exact = 0
        for (subs, channel), stream_id in zip(prepared, stream_ids, strict=True):
            for i, sub in enumerate(subs):
                check_delivery(sub.of(stream_id), text, f"subscriber {i} on {channel}")
                exact += 1
        records = [await _finished(stack, stream_id) for stream_id in stream_ids]
        for subs, _ in prepared:
            await close_all(subs)

    def total(field: str) -> int:
        return sum(int(record[field]) for record in records)

    return Outcome(
        scenario=scenario,
        wall=wall,
        subscribers=scenario.streams * scenario.subscribers,
        exact=exact,
        messages=total("messages"),
        posts=total("posts"),
        merged=total("merged"),
        retries=total("retries"),
        dropped=total("dropped"),
        failures=total("post_failures"),
        catch_ups=total("catch_ups"),
    )


async def _finished(stack: Stack, stream_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while True:
        record = await asyncio.to_thread(stack.finished_record, stream_id)
        if record is not None:
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"no 'stream finished' log line for {stream_id}")
        await asyncio.sleep(0.05)


async def _measure(stack: Stack) -> list[Outcome]:
    return [await _run(stack, scenario) for scenario in SCENARIOS]


def run(stack: Stack) -> Result:
    outcomes = asyncio.run(asyncio.wait_for(_measure(stack), 280))
    result = Result(
        key="delivery",
        title="Delivery under load",
        method=(
            "Concurrent streams of the mock provider (`chunks` n, `delayMs` d) through plain "
            "POSTs (JSON ack, relays detached), each on its own channel with its own WebSocket "
            "subscribers (the app in one process, the gateway emulator and moto DynamoDB in "
            "another, "
            "2 cores). Every subscriber's messages are checked as a browser applies "
            "them (seq contiguous, merged messages covering firstSeq..seq, one final `end`, "
            "exactly the text): the run fails on any loss. Counts are summed from the "
            "streams' 'stream finished' log lines: `messages` relayed, `posts` made, "
            "messages `merged` away by lanes that fell behind, `retries`, and what was "
            "`dropped` (seqs) or failed (connections) - both must be 0 here."
        ),
        columns=[
            "scenario",
            "chunks x delay",
            "subscribers",
            "delivered exactly",
            "messages relayed",
            "posts",
            "merged",
            "retries",
            "dropped / failed",
            "wall s",
        ],
    )
    for o in outcomes:
        s = o.scenario
        result.rows.append(
            [
                s.name,
                f"{s.chunks} x {s.delay_ms} ms",
                str(o.subscribers),
                f"{o.exact}/{o.subscribers} ({100 * o.exact / o.subscribers:.0f} %)",
                str(o.messages),
                str(o.posts),
                str(o.merged),
                str(o.retries),
                f"{o.dropped} / {o.failures}",
                f"{o.wall:.1f}",
            ]
        )
        result.data[s.name] = o.__dict__ | {"scenario": s.__dict__}
    return result
