"""Concurrency and memory: many streams at once in one stack process."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from typing import Any

from .common import Result, close_all, http_client, ms, open_subscribers, summary, text_of_words
from .stack import Stack
from .streams import StreamRun, run_stream

STREAMS = 20
SUBSCRIBERS_EACH = 2
CHUNKS = 200
DELAY_MS = 5
TEXT = text_of_words(CHUNKS)
SAMPLE_SECONDS = 0.05


async def _sample_rss(stack: Stack, peaks: list[int]) -> None:
    while True:
        peaks.append(stack.rss_kib()["VmRSS"])
        await asyncio.sleep(SAMPLE_SECONDS)


async def _measure(stack: Stack) -> dict[str, Any]:
    out: dict[str, Any] = {"rss_before": stack.rss_kib()["VmRSS"]}
    channels = [f"bench-conc-{i}" for i in range(STREAMS)]
    groups = [await open_subscribers(stack, ch, SUBSCRIBERS_EACH) for ch in channels]
    out["rss_subscribed"] = stack.rss_kib()["VmRSS"]
    samples: list[int] = []
    try:
        async with http_client(stack) as client:
            solo = await run_stream(
                stack, client, groups[0], channels[0], text=TEXT, chunks=CHUNKS, delay_ms=DELAY_MS
            )
            sampler = asyncio.create_task(_sample_rss(stack, samples))
            cpu_before = stack.cpu()
            started = time.perf_counter()
            runs: list[StreamRun] = await asyncio.gather(
                *(
                    run_stream(stack, client, subs, ch, text=TEXT, chunks=CHUNKS, delay_ms=DELAY_MS)
                    for subs, ch in zip(groups, channels, strict=True)
                )
            )
            out["wall"] = time.perf_counter() - started
            app, gateway = stack.cpu()
            out["cpu"] = app - cpu_before[0]
            out["gateway_cpu"] = gateway - cpu_before[1]
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
    finally:
        await asyncio.gather(*(close_all(g) for g in groups))
    out["rss_after"] = stack.rss_kib()["VmRSS"]
    await asyncio.sleep(1.0)
    out["rss_settled"] = stack.rss_kib()["VmRSS"]
    out["rss_peak_sampled"] = max(samples, default=out["rss_after"])
    out["hwm"] = stack.rss_kib()["VmHWM"]
    out["solo"] = solo
    out["runs"] = runs
    return out


def run(stack: Stack) -> Result:
    out = asyncio.run(asyncio.wait_for(_measure(stack), 120))
    runs: list[StreamRun] = out["runs"]
    solo: StreamRun = out["solo"]
    walls = summary([r.wall for r in runs])
    acks = summary([r.ack for r in runs])
    mib = 1024
    delivered = sum(r.delivered for r in runs)
    result = Result(
        key="concurrency",
        title="Concurrent streams and memory",
        method=(
            f"{STREAMS} streams started at once (plain POSTs in parallel), each on its own "
            f"channel with {SUBSCRIBERS_EACH} WebSocket subscribers ({STREAMS * SUBSCRIBERS_EACH}"
            f" connections), mock provider with `chunks` {CHUNKS}, `delayMs` {DELAY_MS}, "
            "default coalescing window. All text is checked per subscriber. One stream alone "
            "on the same setup first, for comparison. RSS is VmRSS of the `python -m devstack` "
            "process (the stream app; the gateway emulator and moto DynamoDB run in their "
            f"own process) from /proc/<pid>/status, sampled every {SAMPLE_SECONDS * 1000:.0f} ms "
            "during the run; CPU is user+system time over the concurrent run, of the app "
            "process and of the emulators' (gateway and DynamoDB)."
        ),
        columns=["measure", "value"],
    )
    rows = [
        ("one stream alone: wall ms", f"{solo.wall * 1000:.0f}"),
        (f"{STREAMS} concurrent: total wall ms", f"{out['wall'] * 1000:.0f}"),
        ("per-stream wall ms: median / p95", f"{ms(walls['median'])} / {ms(walls['p95'])}"),
        ("ack ms under load: median / p95", f"{ms(acks['median'])} / {ms(acks['p95'])}"),
        ("messages / subscriber (median)", f"{statistics.median(r.messages for r in runs):g}"),
        ("posts delivered (all streams)", str(delivered)),
        ("posts/s delivered", f"{delivered / out['wall']:.0f}"),
        ("app process CPU s during the run (2 cores max)", f"{out['cpu']:.2f}"),
        (
            "emulators' process CPU s during the run (gateway + DynamoDB)",
            f"{out['gateway_cpu']:.2f}",
        ),
        ("RSS MiB: idle before", f"{out['rss_before'] / mib:.1f}"),
        (
            f"RSS MiB: {STREAMS * SUBSCRIBERS_EACH} connections open",
            f"{out['rss_subscribed'] / mib:.1f}",
        ),
        ("RSS MiB: peak sampled during the run", f"{out['rss_peak_sampled'] / mib:.1f}"),
        ("RSS MiB: right after", f"{out['rss_after'] / mib:.1f}"),
        ("RSS MiB: 1 s later", f"{out['rss_settled'] / mib:.1f}"),
        ("VmHWM MiB (process lifetime peak)", f"{out['hwm'] / mib:.1f}"),
    ]
    result.rows = [list(row) for row in rows]
    result.data = {k: v for k, v in out.items() if k not in ("solo", "runs")}
    result.data["walls"] = walls
    result.data["solo_wall"] = solo.wall
    result.data["acks"] = acks
    return result
