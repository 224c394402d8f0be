"""DETACH_MODE=lambda: the ack self-invokes the function; the pass-through path runs the relay.

The Lambda service itself is the one thing faked: the self-invoke hands its event to the
app's `/events` path, as the Lambda Web Adapter does for non-HTTP events.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from botocore.exceptions import ClientError

from streaming_proxy.api.app import create_app
from streaming_proxy.auth import key_digest
from streaming_proxy.config import AppConfig, Settings
from streaming_proxy.errors import PayloadTooLarge
from streaming_proxy.service import StreamService

KEY = "app-key-for-lambda-mode-tests"


class RecordingPoster:
    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.slots = asyncio.Semaphore(32)

    async def post(self, connection_id: str, data: bytes) -> None:
        self.posts.append((connection_id, json.loads(data)))

    async def aclose(self) -> None:
        return None


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "table_name": "t",
        "aws_region": "us-east-1",
        "detach_mode": "lambda",
        "self_function_name": "stack-stream",
        "apps": {"app1": AppConfig(keySha256=key_digest(KEY), tokenSecret="s" * 32)},
        "ack_wait_seconds": 2,
        "cancel_poll_seconds": 0.1,
    }
    return Settings(**{**values, **overrides})


async def lambda_app(service: StreamService) -> tuple[httpx.AsyncClient, list[dict[str, Any]]]:
    app = create_app()
    app.state.service = service
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn")
    invoked: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()

    def invoke(payload: bytes) -> None:  # runs in a worker thread, like the boto3 call
        event = json.loads(payload)
        invoked.append(event)
        loop.call_soon_threadsafe(lambda: loop.create_task(client.post("/events", json=event)))

    service.lambda_detach.invoke_self = invoke  # type: ignore[method-assign]
    return client, invoked


def request(**provider_args: Any) -> dict[str, Any]:
    return {
        "apiKey": KEY,
        "channels": ["room"],
        "actionName": "onLlm",
        "payload": {
            "provider": "mock",
            "apiKey": "provider-key-travels-in-the-invoke",
            "messages": [{"role": "user", "content": "one two three four"}],
            "providerArgs": {"delayMs": 1, **provider_args},
        },
    }


async def test_ack_self_invokes_and_the_pass_through_path_runs_the_stream(aws_env: None) -> None:
    poster = RecordingPoster()
    service = StreamService(settings(), poster=poster)
    service.connections.open("conn1", "app1", ["room"])
    client, invoked = await lambda_app(service)
    r = await client.post("/llm/query", json=request())
    assert r.status_code == 200, r.text
    stream_id = r.json()["streamId"]
    assert (
        invoked[0]["streamingProxyJob"]["payload"]["apiKey"] == "provider-key-travels-in-the-invoke"
    )
    async with asyncio.timeout(5):
        while not poster.posts or poster.posts[-1][1]["type"] != "end":  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    messages = [m for _, m in poster.posts]
    assert "".join(m["content"] for m in messages if m["type"] == "delta") == "one two three four"
    record = service.streams.get(stream_id, text=True)
    assert record is not None and record.status == "done" and record.text == "one two three four"
    await client.aclose()
    await service.aclose()


async def test_a_failure_before_the_first_byte_reaches_the_ack_through_the_table(
    aws_env: None,
) -> None:
    service = StreamService(settings(), poster=RecordingPoster())
    client, _ = await lambda_app(service)
    r = await client.post("/llm/query", json=request(failBeforeFirstByte=True, failStatus=429))
    assert r.status_code == 429
    assert r.json()["error"]["message"] == "mock failure before first byte"
    await client.aclose()
    await service.aclose()


async def test_pass_through_path_is_closed_outside_lambda_mode(aws_env: None) -> None:
    service = StreamService(settings(detach_mode="task"), poster=RecordingPoster())
    app = create_app()
    app.state.service = service
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c:
        r = await c.post("/events", json={"streamingProxyJob": {}})
    assert r.status_code == 404
    await service.aclose()


async def test_pass_through_refuses_events_that_are_not_stream_jobs(aws_env: None) -> None:
    service = StreamService(settings(), poster=RecordingPoster())
    app = create_app()
    app.state.service = service
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c:
        missing = await c.post("/events", json={"Records": []})
        invalid = await c.post("/events", json={"streamingProxyJob": {"apiKey": "secret-value"}})
        garbage = await c.post("/events", content=b"not json")
    assert (missing.status_code, invalid.status_code, garbage.status_code) == (400, 400, 400)
    assert "secret-value" not in invalid.text
    await service.aclose()


async def test_a_failed_self_invoke_is_a_clear_error_not_a_crash(aws_env: None) -> None:
    service = StreamService(
        settings(self_function_name="no-such-function"), poster=RecordingPoster()
    )
    app = create_app()
    app.state.service = service
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c:
        r = await c.post("/llm/query", json=request())
    assert r.status_code == 503
    assert "could not start the stream" in r.json()["error"]["message"]
    await service.aclose()


async def test_a_self_invoke_that_fails_leaves_the_stream_failed_not_pending(
    aws_env: None,
) -> None:
    """The record is written before the invoke (the ack polls it): when Lambda refuses the
    event (too large, throttled), the caller gets the error and the record says so too,
    instead of a stream `pending` for a day that no relay will ever run."""
    service = StreamService(settings(), poster=RecordingPoster())
    client, _ = await lambda_app(service)
    refused: list[str] = []

    def invoke(event: bytes) -> None:
        refused.append(json.loads(event)["streamingProxyJob"]["stream_id"])
        raise PayloadTooLarge("request too large to run detached")

    service.lambda_detach.invoke_self = invoke  # type: ignore[method-assign]
    r = await client.post("/llm/query", json=request())
    assert r.status_code == 413, r.text
    record = service.streams.get(refused[0])
    assert record is not None and record.status == "failed"
    assert record.start_error is not None and record.start_error.kind == "payload_too_large"
    await client.aclose()
    await service.aclose()


async def test_a_refused_self_invoke_is_still_the_callers_error_when_the_table_is_down_too(
    aws_env: None,
) -> None:
    """Marking the record failed is best effort: DynamoDB failing then too leaves the caller
    with Lambda's refusal (413), not a 503 of the table or a 500."""
    service = StreamService(settings(), poster=RecordingPoster())
    client, _ = await lambda_app(service)

    def invoke(event: bytes) -> None:
        raise PayloadTooLarge("request too large to run detached")

    def table_down(stream_id: str, error: object) -> bool:
        raise ClientError({"Error": {"Code": "InternalServerError"}}, "UpdateItem")

    service.lambda_detach.invoke_self = invoke  # type: ignore[method-assign]
    service.streams.mark_start_failed = table_down  # type: ignore[method-assign,assignment]
    r = await client.post("/llm/query", json=request())
    assert r.status_code == 413, r.text
    assert r.json()["error"]["type"] == "payload_too_large"
    await client.aclose()
    await service.aclose()
