"""Child of benchmarks/cold_import.py: one cold start, then the first requests, timed.

Run as `python benchmarks/first_request.py stream|connections [path of app.py]` with the
settings in the environment (DynamoDB is a moto server the parent started); the path is
`functions/<function>/app.py` unless given (the deployed shape's, benchmarks/deployed_shape.py).
Loads the function's entry module as Lambda does, then, for the stream function, runs
the ASGI lifespan (what uvicorn does before the adapter's readiness check passes) and sends
GET /health and two non-streaming POST /llm/query through raw ASGI calls, then the first
request of each route family loaded on first use (api/app.py: tokens, /v1, assistants,
threads); for the connections function, calls its handler with a `$connect` event holding a
valid token. Prints the timings as JSON.
Imports nothing beyond what the function imports, so nothing is warmed for it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import ModuleType, SimpleNamespace
from typing import Any

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Message, Receive, Send], Coroutine[Any, Any, None]]


def load(name: str, path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{name}_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def start_lifespan(app: Asgi) -> Callable[[], Awaitable[None]]:
    """Run the lifespan's startup; returns the coroutine function that shuts it down."""
    import asyncio  # here, not at the top: the function's import must not find it loaded

    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))
    started = await outbox.get()
    assert started["type"] == "lifespan.startup.complete", started

    async def stop() -> None:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task

    return stop


async def request(
    app: Asgi, method: str, path: str, body: bytes = b"", key: str = ""
) -> tuple[int, bytes]:
    """One HTTP request as an ASGI server makes it; the client stays until the answer ends."""
    import asyncio

    done = asyncio.Event()
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    headers = [(b"host", b"bench"), (b"content-type", b"application/json")]
    if key:
        headers.append((b"x-api-key", key.encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("bench", 80),
    }
    await app(scope, receive, send)
    return status, b"".join(chunks)


def family_requests(query: bytes) -> list[tuple[str, str, str, bytes, int]]:
    """(timing key, method, path, body, status) of the first request of each route family
    loaded on first use, after the LLM Queries: each pays its family's import then."""
    messages = json.loads(query)["payload"]["messages"]
    chat = {"model": "mock/echo", "messages": messages, "providerArgs": {"delayMs": 0}}
    assistant = {"name": "bench", "instructions": "Answer briefly."}
    return [
        ("token", "POST", "/channels/token", json.dumps({"channels": ["room"]}).encode(), 200),
        ("v1_chat", "POST", "/v1/chat/completions", json.dumps(chat).encode(), 200),
        ("assistant_create", "POST", "/assistants", json.dumps(assistant).encode(), 201),
        # A thread of the right shape that does not exist: its read, then 404.
        ("thread_messages", "GET", "/threads/thread_benchNoSuchThread000/messages", b"", 404),
    ]


async def stream_function(app: Asgi, query: bytes) -> dict[str, float]:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    stop = await start_lifespan(app)
    timings["startup"] = time.perf_counter() - t0
    key = json.loads(query)["apiKey"]
    for name, method, path, body, expected in (
        ("health", "GET", "/health", b"", 200),
        ("query", "POST", "/llm/query", query, 200),
        ("query_again", "POST", "/llm/query", query, 200),
        *family_requests(query),
    ):
        t0 = time.perf_counter()
        status, answer = await request(app, method, path, body, key)
        timings[name] = time.perf_counter() - t0
        assert status == expected, (path, status, answer[:500])
    await stop()
    return timings


def connections_function(
    handler: Callable[..., dict[str, Any]], event: Message
) -> dict[str, float]:
    context = SimpleNamespace(
        function_name="bench-connections",
        function_version="$LATEST",
        invoked_function_arn="arn:aws:lambda:us-east-1:000000000000:function:bench-connections",
        memory_limit_in_mb=256,
        aws_request_id="bench-request",
        log_group_name="/aws/lambda/bench",
        log_stream_name="bench",
    )
    timings: dict[str, float] = {}
    for name, connection_id in (("connect", "benchConnA="), ("connect_again", "benchConnB=")):
        event["requestContext"]["connectionId"] = connection_id
        t0 = time.perf_counter()
        answer = handler(event, context)
        timings[name] = time.perf_counter() - t0
        assert answer.get("statusCode") == 200, answer
    return timings


def main(target: str, path: str) -> None:
    t0 = time.perf_counter()
    module = load(target, path)
    timings = {"import": time.perf_counter() - t0}
    payload = os.environ["BENCH_FIRST_REQUEST"].encode()
    if target == "stream":
        import asyncio

        timings |= asyncio.run(stream_function(module.app, payload))
    else:
        timings |= connections_function(module.handler, json.loads(payload))
    print(json.dumps(timings))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else f"functions/{sys.argv[1]}/app.py")
