"""The client-side cost of one PostToConnection: the product's boto3 poster, measured alone."""

from __future__ import annotations

import asyncio
import json
import time

import boto3
from botocore.config import Config

from streaming_proxy.channels.poster import ManagementApiPoster

from .common import Result, close_all, ms, open_subscribers, summary
from .stack import Stack

POSTS = 300
WARMUP = 20
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


def _post_loop(poster: ManagementApiPoster, connection_id: str) -> tuple[list[float], float]:
    """Sequential posts in this thread: (wall time of each, CPU time of this thread per post)."""
    for _ in range(WARMUP):
        poster.post(connection_id, MESSAGE)
    walls = []
    cpu_started = time.thread_time()
    for _ in range(POSTS):
        started = time.perf_counter()
        poster.post(connection_id, MESSAGE)
        walls.append(time.perf_counter() - started)
    return walls, (time.thread_time() - cpu_started) / POSTS


async def _measure(stack: Stack) -> tuple[list[float], float, int]:
    (sub,) = await open_subscribers(stack, "bench-post", 1)
    try:
        await sub.ws.send(json.dumps({"action": "ping", "id": "whoami"}))
        _, pong = await sub.wait_for(lambda m: m.get("id") == "whoami", 10)
        client = boto3.client(
            "apigatewaymanagementapi",
            region_name="us-east-1",
            endpoint_url=f"{stack.http_ws_management}",
            aws_access_key_id="local",
            aws_secret_access_key="local",
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        )
        walls, cpu = await asyncio.to_thread(
            _post_loop, ManagementApiPoster(client), pong["connectionId"]
        )
        await sub.wait_for(lambda m: len(sub.messages) >= POSTS + WARMUP + 1, 10)
        received = len(sub.messages) - 1
    finally:
        await close_all([sub])
    return walls, cpu, received


def run(stack: Stack) -> Result:
    walls, cpu, received = asyncio.run(asyncio.wait_for(_measure(stack), 60))
    if received != POSTS + WARMUP:
        raise AssertionError(f"subscriber got {received} of {POSTS + WARMUP} posts")
    stats = summary(walls)
    result = Result(
        key="post_cost",
        title="Cost of one PostToConnection (boto3 client side)",
        method=(
            f"The product's `ManagementApiPoster` (boto3 `apigatewaymanagementapi`, SigV4) "
            f"posting a {len(MESSAGE)}-byte delta envelope to one live connection of the "
            f"gateway emulator, {POSTS} sequential posts after {WARMUP} warm-up posts, "
            "from one thread of the benchmark process. CPU is that thread's own CPU time "
            "(`time.thread_time`): botocore serialisation, signing and urllib3, not the "
            "emulator's side. All posts are checked as received."
        ),
        columns=["measure", "value"],
        rows=[
            ["wall ms per post: median / p95", f"{ms(stats['median'])} / {ms(stats['p95'])}"],
            ["client CPU ms per post", f"{cpu * 1000:.2f}"],
            ["posts/s one vCPU could sign and send (1 / CPU)", f"{1 / cpu:.0f}"],
        ],
        data={"wall": stats, "cpu": cpu},
    )
    return result
