"""SSE overhead: concurrent stamped streams read directly from the upstream, through `/v1` and
through Klai SSE, latency added per chunk and the app's CPU per relayed chunk."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from .bare_relay import BareRelayProcess
from .common import (
    BenchmarkFailure,
    Result,
    Subscriber,
    check_delivery,
    close_all,
    http_client,
    open_subscribers,
    percentile,
)
from .fanout import stamped_query
from .sse_client import SseEvent, events
from .stack import UPSTREAM_PROVIDER, Stack
from .upstream import MODEL, StampedRequest, latencies_ms

CONCURRENCY = (1, 10, 50)
CHUNKS = 200
DELAY_MS = 5
ROUNDS = 2
CROWD = 50  # subscribers on the caller's channel in the last row
FIXED_STREAMS = 10
# What one more chunk costs at MARGINAL_STREAMS: rounds of LONG_CHUNKS against CHUNKS.
LONG_CHUNKS = 2 * CHUNKS
MARGINAL_STREAMS = 50
STREAM_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Mode:
    """One way of reading the stream: straight from the upstream, or through a face."""

    key: str
    label: str
    face: Literal["direct", "bare", "v1", "klai"]
    flush_interval_ms: int | None = None  # Klai SSE only; None = the default window

    @property
    def proxied(self) -> bool:
        return self.face != "direct"


V1 = Mode("v1", "`/v1/chat/completions`", "v1")
BARE = Mode("bare", "bare relay (floor: same server, no parsing)", "bare")
MODES = (
    Mode("direct", "direct to upstream", "direct"),
    BARE,
    V1,
    Mode("klai", "Klai SSE, default window", "klai"),
    Mode("klai0", "Klai SSE, `flushIntervalMs` 0", "klai", flush_interval_ms=0),
)
MARGINAL_MODES = (BARE, V1)
# One caller, its channel watched by CROWD subscribers.
CROWDED = Mode("klai-crowd", f"Klai SSE, default window, {CROWD} subscribers", "klai")


@dataclass
class Sample:
    """What the readers of one mode at one concurrency saw, and what the app spent."""

    latencies_ms: list[float] = field(default_factory=list)
    chunks: int = 0
    app_cpu: float = 0.0
    bench_cpu: float = 0.0


@dataclass
class Read:
    """One stream read to its end by one caller."""

    latencies_ms: list[float]
    text: str  # what the upstream sent, and the caller got exactly
    stream_id: str | None  # Klai SSE only


@dataclass(frozen=True)
class Target:
    """What the callers read from: the stack (and its upstream), and the bare relay."""

    stack: Stack
    bare: BareRelayProcess

    def cpu_seconds(self, mode: Mode) -> float:
        """CPU used so far by the process that relays `mode`'s streams."""
        return self.bare.cpu_seconds() if mode.face == "bare" else self.stack.app_cpu_seconds()


async def _read(
    target: Target,
    mode: Mode,
    tag: str,
    channel: str,
    client: httpx.AsyncClient,
    chunks: int = CHUNKS,
) -> Read:
    """One stream read to its end; its text must be exactly what the upstream sent."""
    stack = target.stack
    ask = StampedRequest(tag=tag, chunks=chunks, delay_ms=DELAY_MS)
    url, body, headers = _request(target, mode, ask, channel)
    got = [e async for e in events(url, body, headers)]
    sent = await stack.upstream.sent(client, tag)
    if mode.face == "klai":
        return _klai_read(got, sent, tag)
    return Read(_openai_latencies(got, sent, tag), sent, None)


def _request(
    target: Target, mode: Mode, ask: StampedRequest, channel: str
) -> tuple[str, dict[str, Any], dict[str, str]]:
    stack = target.stack
    openai_body = {"model": MODEL, "stream": True, "messages": ask.as_messages()}
    if mode.face == "direct":
        return f"{stack.upstream.base_url}/chat/completions", openai_body, {}
    if mode.face == "bare":
        return target.bare.url, openai_body, {}
    if mode.face == "v1":
        body = {**openai_body, "model": f"{UPSTREAM_PROVIDER}/{MODEL}"}
        auth = {"authorization": f"Bearer {stack.api_key}"}
        return f"{stack.http}/v1/chat/completions", body, auth
    body = stamped_query(channel, ask)
    if mode.flush_interval_ms is not None:
        body["options"] = {"flushIntervalMs": mode.flush_interval_ms}
    return f"{stack.http}/llm/query", body, {"x-api-key": stack.api_key}


def _openai_latencies(got: list[SseEvent], sent: str, who: str) -> list[float]:
    if not got or got[-1].data != "[DONE]":
        raise BenchmarkFailure(f"{who}: the stream did not end with [DONE]")
    out: list[float] = []
    text = ""
    for event in got[:-1]:
        for choice in event.json()["choices"]:
            content = choice["delta"].get("content") or ""
            text += content
            out += latencies_ms(event.arrived_ns, content)
    if text != sent:
        raise BenchmarkFailure(f"{who}: text differs from what the upstream sent")
    return out


def _klai_read(got: list[SseEvent], sent: str, who: str) -> Read:
    envelopes = [(e.arrived_ns, e.json()) for e in got if e.data.startswith("{")]
    messages = [m for _, m in envelopes if "seq" in m]
    check_delivery(messages, sent, who)
    out: list[float] = []
    for arrived, m in envelopes:
        if m.get("type") == "delta":
            out += latencies_ms(arrived, m["content"])
    return Read(out, sent, str(messages[0]["streamId"]))


async def _round(
    target: Target,
    client: httpx.AsyncClient,
    mode: Mode,
    streams: int,
    label: str,
    crowd: list[Subscriber],
    channel: str,
    chunks: int = CHUNKS,
) -> Sample:
    """`streams` callers at once, each reading one stream of `chunks`; the channel's
    subscribers (if any) must get every stream whole too."""
    sample = Sample(chunks=streams * chunks)
    await target.stack.quiet()
    app0, bench0 = target.cpu_seconds(mode), time.process_time()
    reads = [_read(target, mode, f"{label}-{i}", channel, client, chunks) for i in range(streams)]
    done = await asyncio.wait_for(asyncio.gather(*reads), STREAM_TIMEOUT_SECONDS)
    sample.app_cpu = target.cpu_seconds(mode) - app0 if mode.proxied else 0.0
    sample.bench_cpu = time.process_time() - bench0
    for read in done:
        sample.latencies_ms += read.latencies_ms
        for i, sub in enumerate(crowd):
            assert read.stream_id is not None
            await sub.first(read.stream_id, "end", STREAM_TIMEOUT_SECONDS)
            check_delivery(sub.of(read.stream_id), read.text, f"{label}: subscriber {i}")
    return sample


async def _fixed_cost(target: Target, client: httpx.AsyncClient, run: int) -> float:
    """App CPU seconds of one `/v1` stream of a single chunk (what a stream costs besides its
    chunks), averaged over FIXED_STREAMS sequential streams: /proc counts 10 ms ticks."""
    stack = target.stack
    await stack.quiet()
    app0 = stack.app_cpu_seconds()
    for i in range(FIXED_STREAMS):
        ask = StampedRequest(tag=f"sse-{run}-fixed-{i}", chunks=1, delay_ms=0)
        url, body, headers = _request(target, V1, ask, "")
        got = [e async for e in events(url, body, headers)]
        _openai_latencies(got, await stack.upstream.sent(client, ask.tag), ask.tag)
    await stack.quiet()
    return (stack.app_cpu_seconds() - app0) / FIXED_STREAMS


@dataclass(frozen=True)
class Marginal:
    """At MARGINAL_STREAMS streams at once: the app's CPU for one more chunk, and for a
    stream besides its chunks, from rounds of CHUNKS and of LONG_CHUNKS."""

    per_chunk: float
    per_stream: float


@dataclass
class Measured:
    samples: dict[tuple[str, int], Sample]
    fixed: float
    marginal: dict[str, Marginal]


async def _marginal(
    target: Target, client: httpx.AsyncClient, run: int, samples: dict[tuple[str, int], Sample]
) -> dict[str, Marginal]:
    long: dict[str, Sample] = {}
    for r in range(ROUNDS):
        for mode in MARGINAL_MODES:
            label = f"sse-{run}-{mode.key}-long-{r}"
            got = await _round(
                target, client, mode, MARGINAL_STREAMS, label, [], f"bench-{label}", LONG_CHUNKS
            )
            _merge(long.setdefault(mode.key, Sample()), got)
    out: dict[str, Marginal] = {}
    for mode in MARGINAL_MODES:
        short = samples[(mode.key, MARGINAL_STREAMS)]
        per_short = short.app_cpu / (short.chunks / CHUNKS)
        per_long = long[mode.key].app_cpu / (long[mode.key].chunks / LONG_CHUNKS)
        per_chunk = (per_long - per_short) / (LONG_CHUNKS - CHUNKS)
        out[mode.key] = Marginal(per_chunk, per_short - per_chunk * CHUNKS)
    return out


async def _measure(target: Target) -> Measured:
    stack = target.stack
    async with http_client(stack) as client:
        run = time.time_ns()
        samples: dict[tuple[str, int], Sample] = {}
        for streams in CONCURRENCY:
            for r in range(ROUNDS):
                for mode in MODES:  # interleaved, so drift over the run hits every mode alike
                    label = f"sse-{run}-{mode.key}-{streams}-{r}"
                    got = await _round(target, client, mode, streams, label, [], f"bench-{label}")
                    _merge(samples.setdefault((mode.key, streams), Sample()), got)
        channel = f"bench-sse-crowd-{run}"
        crowd = await open_subscribers(stack, channel, CROWD)
        try:
            for r in range(ROUNDS):
                label = f"sse-{run}-crowd-{r}"
                got = await _round(target, client, CROWDED, 1, label, crowd, channel)
                _merge(samples.setdefault((CROWDED.key, 1), Sample()), got)
        finally:
            await close_all(crowd)
        marginal = await _marginal(target, client, run, samples)
        # Last, on a warm app: the first requests also import the endpoints' modules.
        fixed = await _fixed_cost(target, client, run)
    return Measured(samples, fixed, marginal)


def _merge(into: Sample, got: Sample) -> None:
    into.latencies_ms += got.latencies_ms
    into.chunks += got.chunks
    into.app_cpu += got.app_cpu
    into.bench_cpu += got.bench_cpu


METHOD = (
    f"N callers at once (N = {', '.join(map(str, CONCURRENCY))}), each reading one stream of "
    f"{CHUNKS} chunks x {DELAY_MS} ms from the stamped upstream (benchmarks/upstream.py, its "
    "own process; each chunk's `delta.content` carries its wall-clock send time): directly "
    "from the upstream, through `POST /v1/chat/completions` (stream true, model "
    f"`{UPSTREAM_PROVIDER}/{MODEL}`), and through `POST /llm/query` with `Accept: "
    "text/event-stream` (Klai SSE) with the default window and with `options.flushIntervalMs` "
    "0, on a channel nobody subscribes to; and through a bare relay (benchmarks/bare_relay.py, "
    "its own process), the floor under the proxied rows: the app's server (uvicorn on uvloop, "
    "httptools, an ASGI app) passing each read of the upstream's answer to the caller "
    "untouched, with no SSE or JSON parsing and nothing checked. "
    f"{ROUNDS} rounds per N, the paths interleaved within a round. The last row is one Klai "
    f"SSE caller whose channel has {CROWD} WebSocket subscribers (their delivery is checked "
    "too). The callers run in the benchmark's process on a lean asyncio HTTP/1.1 reader "
    "(benchmarks/sse_client.py, the same for every path), one connection per stream; the "
    "app and the emulated AWS side (gateway emulator with moto DynamoDB) run in their own "
    "processes. "
    "Added latency per chunk = the caller's arrival time of the bytes carrying a token minus "
    "the token's embedded send time, over every token of every stream (a frame carrying "
    "several tokens counts each); ratios divide by the direct path's value at the same N in "
    "the same run. App CPU per relayed chunk = user+system time of the app process alone "
    "(the bare relay's process in its rows) over the round / chunks relayed. The same "
    f"{ROUNDS} rounds at {MARGINAL_STREAMS} streams with streams of {LONG_CHUNKS} chunks, for "
    "`/v1` and the bare relay, split that CPU into what one more chunk costs (the difference "
    "per stream over the added chunks) and what a stream costs besides its chunks. Every stream's "
    "text is checked to be exactly what the upstream sent (Klai SSE: seq contiguous, merged "
    "envelopes covering firstSeq..seq, one `end`); any difference fails the benchmark."
)


def run(stack: Stack) -> Result:
    bare = BareRelayProcess.start(stack.upstream.port)
    try:
        measured = asyncio.run(asyncio.wait_for(_measure(Target(stack, bare)), 240))
    finally:
        bare.stop()
    result = Result(
        key="sse_overhead",
        title="SSE overhead: added latency per chunk, direct vs `/v1` vs Klai SSE",
        method=METHOD,
        columns=[
            "streams at once",
            "path",
            "added ms / chunk: p50",
            "p99",
            "p50 / direct",
            "p99 / direct",
            "app CPU us / relayed chunk",
            "streams checked",
            "callers' process CPU ms / stream",
        ],
    )
    samples, fixed = measured.samples, measured.fixed
    for (key, streams), sample in samples.items():
        direct = samples[("direct", streams)]
        mode = next(m for m in (*MODES, CROWDED) if m.key == key)
        result.rows.append(_row(mode, streams, sample, direct))
        result.data[f"{key}@{streams}"] = _data(sample, direct)
    result.data["fixed_cpu"] = fixed
    result.notes.append(
        f"A `/v1` stream of one chunk costs the app {fixed * 1000:.1f} ms of CPU (mean of "
        f"{FIXED_STREAMS}): the work a stream costs besides its chunks (auth, records, "
        "answer), included in the per-chunk column above."
    )
    v1, floor = measured.marginal[V1.key], measured.marginal[BARE.key]
    for mode in MARGINAL_MODES:
        m = measured.marginal[mode.key]
        result.data[f"marginal_{mode.key}"] = {"per_chunk": m.per_chunk, "per_stream": m.per_stream}
    result.notes.append(
        f"At {MARGINAL_STREAMS} streams at once, from rounds of {CHUNKS} and {LONG_CHUNKS} "
        f"chunks: one more chunk costs the app {v1.per_chunk * 1e6:.0f} us on `/v1` and "
        f"{floor.per_chunk * 1e6:.0f} us on the bare relay; a stream besides its chunks "
        f"costs {_ms(v1.per_stream)} on `/v1` and {_ms(floor.per_stream)} on the bare relay."
    )
    return result


def _ms(seconds: float) -> str:
    if seconds >= 0:
        return f"{seconds * 1000:.2f} ms"
    # A difference of two readings in /proc's 10 ms CPU ticks: below 0 is noise around 0.
    return f"about 0 ({seconds * 1000:.2f} ms measured, within the CPU ticks' noise)"


def _data(sample: Sample, direct: Sample) -> dict[str, float]:
    p50, p99 = percentile(sample.latencies_ms, 50), percentile(sample.latencies_ms, 99)
    d50, d99 = percentile(direct.latencies_ms, 50), percentile(direct.latencies_ms, 99)
    return {
        "p50": p50,
        "p99": p99,
        "p50_ratio": p50 / d50,
        "p99_ratio": p99 / d99,
        "app_cpu_per_chunk": sample.app_cpu / sample.chunks,
        "streams": sample.chunks / CHUNKS,
        "bench_cpu_per_stream": sample.bench_cpu / (sample.chunks / CHUNKS),
    }


def _row(mode: Mode, streams: int, sample: Sample, direct: Sample) -> list[str]:
    d = _data(sample, direct)
    proxied = mode.proxied
    return [
        str(streams),
        mode.label,
        f"{d['p50']:.2f}",
        f"{d['p99']:.2f}",
        f"{d['p50_ratio']:.1f}x" if proxied else "1",
        f"{d['p99_ratio']:.1f}x" if proxied else "1",
        f"{d['app_cpu_per_chunk'] * 1e6:.0f}" if proxied else "-",
        f"{d['streams']:.0f}/{d['streams']:.0f}",
        f"{d['bench_cpu_per_stream'] * 1000:.1f}",
    ]
