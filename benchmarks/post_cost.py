"""The client-side cost of one PostToConnection: boto3's posters against the httpx SignedPoster.

Each poster posts from a fresh process of its own, so the CPU counted is the whole
posting side (event loop, worker threads, signing, HTTP) and nothing else: the stack
(gateway emulator) is another process and the subscriber stays in this one.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

import boto3
import httpx
from botocore.config import Config

from streaming_proxy.channels.poster import BotoPoster, post_blocking
from streaming_proxy.channels.signed_poster import SignedPoster
from streaming_proxy.channels.sigv4 import Credentials

from .common import Result, close_all, ms, open_subscribers, summary
from .stack import Stack

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient

POSTS = 1000
WARMUP = 50
REGION = "us-east-1"
CREDENTIALS = Credentials("local", "local")
# A typical coalesced delta envelope (~40 ms of tokens).
MESSAGE = json.dumps(
    {
        "actionName": "onBench",
        "channel": "bench-post",
        "streamId": "st_0123456789abcdefghijkl",
        "seq": 7,
        "type": "delta",
        "content": "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod",
    },
    separators=(",", ":"),
).encode()

# (key, label, posts reach the subscriber)
POSTERS = [
    ("boto3_blocking", "boto3 `post_blocking`, called in one thread", True),
    ("boto3", "boto3 `BotoPoster` (async, own thread pool): the product today", True),
    ("signed", "`SignedPoster` (httpx, keep-alive, sigv4)", True),
    ("signed_no_io", "`SignedPoster` on `httpx.MockTransport`: signing + httpx, no I/O", False),
]

Post = Callable[[str, bytes], Awaitable[None]]


def _boto3_client(endpoint: str) -> ApiGatewayManagementApiClient:
    return boto3.client(
        "apigatewaymanagementapi",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS.access_key,
        aws_secret_access_key=CREDENTIALS.secret_key,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def _poster(kind: str, endpoint: str) -> tuple[Post, Callable[[], Awaitable[None]]]:
    """(post, close) for one kind of poster."""
    if kind == "boto3_blocking":
        client = _boto3_client(endpoint)

        async def post(connection_id: str, data: bytes) -> None:
            post_blocking(client, connection_id, data)

        async def close() -> None:
            return None

        return post, close
    if kind == "boto3":
        poster = BotoPoster(_boto3_client(endpoint))
        return poster.post, poster.aclose
    transport = (
        httpx.MockTransport(lambda _: httpx.Response(200)) if kind == "signed_no_io" else None
    )
    signed = SignedPoster(endpoint, REGION, credentials=lambda: CREDENTIALS, transport=transport)
    return signed.post, signed.aclose


async def _post_loop(kind: str, endpoint: str, connection_id: str) -> tuple[list[float], float]:
    post, close = _poster(kind, endpoint)
    try:
        for _ in range(WARMUP):
            await post(connection_id, MESSAGE)
        walls = []
        cpu_started = time.process_time()
        for _ in range(POSTS):
            started = time.perf_counter()
            await post(connection_id, MESSAGE)
            walls.append(time.perf_counter() - started)
        return walls, (time.process_time() - cpu_started) / POSTS
    finally:
        await close()


def _measure_in_child(kind: str, endpoint: str, connection_id: str) -> tuple[list[float], float]:
    """Runs in a fresh process: (wall time of each post, that process's CPU per post)."""
    return asyncio.run(_post_loop(kind, endpoint, connection_id))


async def _in_fresh_process(
    kind: str, endpoint: str, connection_id: str
) -> tuple[list[float], float]:
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, _measure_in_child, kind, endpoint, connection_id)


async def _measure(stack: Stack) -> tuple[dict[str, tuple[list[float], float]], int]:
    (sub,) = await open_subscribers(stack, "bench-post", 1)
    try:
        await sub.ws.send(json.dumps({"action": "ping", "id": "whoami"}))
        _, pong = await sub.wait_for(lambda m: m.get("id") == "whoami", 10)
        measured = {
            kind: await _in_fresh_process(kind, stack.http_ws_management, pong["connectionId"])
            for kind, _, _ in POSTERS
        }
        expected = (POSTS + WARMUP) * sum(delivers for _, _, delivers in POSTERS)
        await sub.wait_for(lambda m: len(sub.messages) >= expected + 1, 10)
        received = len(sub.messages) - 1
    finally:
        await close_all([sub])
    return measured, received


def run(stack: Stack) -> Result:
    measured, received = asyncio.run(asyncio.wait_for(_measure(stack), 180))
    expected = (POSTS + WARMUP) * sum(delivers for _, _, delivers in POSTERS)
    if received != expected:
        raise AssertionError(f"subscriber got {received} of {expected} posts")
    rows = []
    data: dict[str, object] = {}
    for kind, label, _ in POSTERS:
        walls, cpu = measured[kind]
        stats = summary(walls)
        rows.append(
            [
                label,
                f"{cpu * 1000:.3f}",
                f"{ms(stats['median'])} / {ms(stats['p95'])}",
                f"{1 / cpu:,.0f}",
            ]
        )
        data[kind] = {"wall": stats, "cpu": cpu}
    # `cpu` stays the product's poster: the reading's fan-out ceiling is computed from it.
    data["cpu"] = measured["boto3"][1]
    return Result(
        key="post_cost",
        title="Cost of one PostToConnection (client side): boto3 and SignedPoster",
        method=(
            f"Each poster posts a {len(MESSAGE)}-byte delta envelope to one live connection "
            f"of the gateway emulator: {POSTS} sequential posts after {WARMUP} warm-up posts, "
            "awaited one at a time through the async `Poster` interface, from a fresh process "
            "of its own (spawned, one per poster). Client CPU is that process's user+system "
            "time over the measured posts (`time.process_time`), divided by the posts: it "
            "counts the event loop, boto3's worker threads, signing and HTTP, and none of the "
            "emulator (a separate process) or of the subscriber (this process). Every post "
            "that reaches the emulator is checked as received. The no-I/O row answers each "
            "request in-process (`httpx.MockTransport`), so it is the floor of the httpx path: "
            "SigV4 plus httpx's client layer, no sockets."
        ),
        columns=["poster", "client CPU ms per post", "wall ms: median / p95", "posts/s per vCPU"],
        rows=rows,
        data=data,
    )
