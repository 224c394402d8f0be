"""Shared pieces: a timestamping WebSocket subscriber, request bodies, statistics, results."""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from tests.delivery import assert_complete

from .stack import Stack

ACTION = "onBench"
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
]


def text_of_words(count: int) -> str:
    """`count` words, deterministic, with a little punctuation and non-ASCII."""
    words = [WORDS[i % len(WORDS)] + ("," if i % 9 == 8 else "") for i in range(count)]
    words[count // 2] = "naïve-café"
    return " ".join(words) + "."


def query_body(
    channels: list[str],
    *,
    text: str,
    chunks: int | None = None,
    delay_ms: int = 0,
    flush_interval_ms: int | None = None,
) -> dict[str, Any]:
    args: dict[str, Any] = {"text": text, "delayMs": delay_ms}
    if chunks is not None:
        args["chunks"] = chunks
    body: dict[str, Any] = {
        "channels": channels,
        "actionName": ACTION,
        "payload": {
            "provider": "mock",
            "messages": [{"role": "user", "content": "benchmark"}],
            "providerArgs": args,
        },
    }
    if flush_interval_ms is not None:
        body["options"] = {"flushIntervalMs": flush_interval_ms}
    return body


def http_client(stack: Stack) -> httpx.AsyncClient:
    """A keep-alive client, as a backend calling the proxy would hold."""
    return httpx.AsyncClient(
        base_url=stack.http,
        headers={"x-api-key": stack.api_key},
        timeout=httpx.Timeout(30.0),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
    )


class Subscriber:
    """A browser-like WebSocket connection that timestamps every message it receives
    (`time.perf_counter()` in `messages`, wall-clock ns in `arrivals_ns`, index for index)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.arrivals_ns: list[int] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, stack: Stack, token: str) -> Subscriber:
        ws = await asyncio.wait_for(connect(f"{stack.ws}/?token={token}", max_size=2**22), 10)
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                arrived_ns, arrived = time.time_ns(), time.perf_counter()
                message = json.loads(raw)
                self.arrivals_ns.append(arrived_ns)
                self.messages.append((arrived, message))
                self._changed.set()
        except Exception:  # closed: what was collected stays readable
            self._changed.set()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], within: float
    ) -> tuple[float, dict[str, Any]]:
        """The first (time, message) matching `predicate`, waiting at most `within` s."""
        async with asyncio.timeout(within):
            while True:
                for stamped in self.messages:
                    if predicate(stamped[1]):
                        return stamped
                self._changed.clear()
                await self._changed.wait()

    async def first(self, stream_id: str, kind: str, within: float = 15.0) -> float:
        stamp, _ = await self.wait_for(
            lambda m: m.get("streamId") == stream_id and m.get("type") == kind, within
        )
        return stamp

    def of(self, stream_id: str) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if m.get("streamId") == stream_id and "seq" in m]

    def arrivals(self, stream_id: str) -> list[tuple[int, dict[str, Any]]]:
        """(wall-clock arrival ns, message) of every message of `stream_id`."""
        return [
            (arrived, m)
            for arrived, (_, m) in zip(self.arrivals_ns, self.messages, strict=True)
            if m.get("streamId") == stream_id and "seq" in m
        ]

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


async def open_subscribers(stack: Stack, channel: str, count: int) -> list[Subscriber]:
    token = await asyncio.to_thread(stack.token, channel)
    subs: list[Subscriber] = []
    # A few at a time: API Gateway itself admits 500 new connections/s per account.
    for start in range(0, count, 10):
        batch = [Subscriber.open(stack, token) for _ in range(start, min(count, start + 10))]
        subs.extend(await asyncio.gather(*batch))
    return subs


async def close_all(subs: Sequence[Subscriber]) -> None:
    await asyncio.gather(*(s.close() for s in subs), return_exceptions=True)


def delta_text(messages: list[dict[str, Any]]) -> str:
    return "".join(m["content"] for m in messages if m.get("type") == "delta")


class BenchmarkFailure(AssertionError):
    """A benchmark saw wrong results (lost or reordered text): the numbers would lie."""


def check_delivery(messages: list[dict[str, Any]], expected: str, who: str) -> None:
    """Fail loudly unless `messages` is one whole stream carrying exactly `expected`: seq
    contiguous (a merged message covers firstSeq..seq, a catch-up snapshot stands for what
    came before it) and one final `end` (tests/delivery.py applies them as a browser does)."""
    try:
        assert_complete(messages, expected)
    except AssertionError as e:
        raise BenchmarkFailure(f"{who}: {e}") from None


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p95": percentile(values, 95),
        "min": min(values),
        "max": max(values),
    }


@dataclass
class Result:
    """One benchmark's outcome: a markdown-ready table plus how it was measured."""

    key: str
    title: str
    method: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[Any, Any] = field(default_factory=dict)  # keyed by name or by a load (int)
    seconds: float = 0.0


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"
