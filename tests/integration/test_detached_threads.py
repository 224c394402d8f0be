"""DETACH_MODE=lambda: a run on a thread sends only its new messages in the self-invoke's
event; the relay reads and trims the thread's history itself, as the request would have.

A thread whose history is larger than any event may be (detached.MAX_DETACHED_EVENT_BYTES)
runs detached all the same, and the fake provider receives the whole trimmed history. When
the relay cannot read the history, the stream fails where everyone sees it. The stream
service runs in Lambda mode in this process over moto's DynamoDB and the gateway emulator;
the self-invoke is the one thing faked: the test hands its event to `/events`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from streaming_proxy.api.app import create_app
from streaming_proxy.detached import MAX_DETACHED_EVENT_BYTES
from streaming_proxy.history import trim
from streaming_proxy.runs import EVENT_MAX_AGE_SECONDS, LEASE_MARGIN_SECONDS
from streaming_proxy.service import StreamService
from streaming_proxy.threads import RunStart, new_run_id, new_thread_id
from tests.fake_llm import TEXT, FakeLlm
from tests.integration import test_gateway as gateway_tests
from tests.integration.test_gateway import (
    Gateway,
    connection_id_of,
    lambda_mode_service,
    open_client,
    token,
)
from tests.wsclient import until_end

moto_endpoint = gateway_tests.moto_endpoint
env = gateway_tests.env
gateway = gateway_tests.gateway

APP_KEY = "app-key-for-detached-thread-tests"
MODEL = "gpt-4o-mini"
BUDGET = 400_000  # tokens: THREAD_CONTEXT_TOKENS_BY_MODEL for MODEL
OLD_TURN = [
    {"role": "user", "content": "old question " * 50_000},
    {"role": "assistant", "content": "old answer " * 55_000},
]
RECENT_TURN = [
    {"role": "user", "content": "recent question " * 28_000},
    {"role": "assistant", "content": "recent answer " * 32_000},
]
NEW = {"role": "user", "content": "and now?"}


@pytest.fixture
async def service(
    gateway: Gateway, fake_llm: FakeLlm, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[StreamService]:
    by_model = json.dumps({MODEL: BUDGET})
    async with lambda_mode_service(
        monkeypatch, APP_KEY, fake_llm.base_url, THREAD_CONTEXT_TOKENS_BY_MODEL=by_model
    ) as running:
        yield running


def long_thread(service: StreamService) -> str:
    """A thread of two stored runs: an old turn the budget leaves out, then a recent one it
    keeps, together far over what an event may carry."""
    thread_id = new_thread_id()
    for n, turn in enumerate((OLD_TURN, RECENT_TURN)):
        start = RunStart(thread_id, new_run_id(), f"st_seed{n}", n == 0, int(time.time()) + 60, 600)
        service.threads.start_run("app1", start)
        assert service.threads.finish_run("app1", start, turn, "done")
    assert len(json.dumps(RECENT_TURN)) > MAX_DETACHED_EVENT_BYTES
    return thread_id


def client_of(service: StreamService) -> httpx.AsyncClient:
    app = create_app()
    app.state.service = service
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn")


async def accepted(service: StreamService, thread_id: str) -> bytes:
    """POST /llm/query on the thread (acked at once); the self-invoke's event as sent."""
    events: list[bytes] = []
    service.lambda_detach.invoke_self = events.append  # type: ignore[method-assign,assignment]
    body = {
        "apiKey": APP_KEY,
        "channels": ["room"],
        "actionName": "onLlm",
        "payload": {
            "provider": "openai",
            "model": MODEL,
            "thread_id": thread_id,
            "instructions": "Answer briefly.",
            "messages": [NEW],
        },
    }
    async with client_of(service) as client:
        ack = await client.post("/llm/query", json=body)
    assert ack.status_code == 200, ack.text
    assert ack.json()["threadId"] == thread_id
    (event,) = events
    return event


async def test_a_long_thread_runs_detached_with_its_whole_trimmed_history(
    gateway: Gateway,
    service: StreamService,
    fake_llm: FakeLlm,
    caplog: pytest.LogCaptureFixture,
) -> None:
    thread_id = long_thread(service)
    event = await accepted(service, thread_id)
    assert len(event) < 4096  # the new message only, however long the thread
    job = json.loads(event)["streamingProxyJob"]
    assert [(m["role"], m["content"]) for m in job["payload"]["messages"]] == [
        (NEW["role"], NEW["content"])
    ]
    assert job["thread"]["history_pending"] is True
    # The lease covers the event's wait in Lambda's queue too: a late relay still holds it.
    settings = service.settings
    least = time.time() + settings.total_timeout_seconds + LEASE_MARGIN_SECONDS
    assert job["thread"]["lease_until"] >= int(least + EVENT_MAX_AGE_SECONDS) - 1

    async with open_client(gateway, token("room")) as ws:
        await connection_id_of(ws)
        with caplog.at_level(logging.INFO):
            async with client_of(service) as client:
                ran = await client.post("/events", content=event)
        messages = await until_end(ws)
    assert ran.status_code == 200 and ran.json()["finish_reason"] == "stop", ran.text
    assert "".join(m.get("content", "") for m in messages if m["type"] == "delta") == TEXT

    system = [{"role": "system", "content": "Answer briefly."}]
    expected = trim(system, [*OLD_TURN, *RECENT_TURN], [NEW], BUDGET)
    assert expected.messages == [*system, *RECENT_TURN, NEW] and expected.dropped == 2
    sent = fake_llm.last("/chat/completions").body
    assert [(m["role"], m["content"]) for m in sent["messages"]] == [
        (m["role"], m["content"]) for m in expected.messages
    ]
    (finished,) = [r for r in caplog.records if r.getMessage() == "thread run finished"]
    assert finished.history_dropped == expected.dropped  # type: ignore[attr-defined]
    assert finished.history_tokens == expected.tokens  # type: ignore[attr-defined]
    assert finished.messages_stored == 2  # type: ignore[attr-defined]  # the question, the answer
    meta = service.threads.meta("app1", thread_id)
    assert meta is not None and meta.active_run is None and meta.message_count == 6


async def test_a_history_the_relay_cannot_read_fails_the_stream_where_it_is_seen(
    gateway: Gateway, service: StreamService, fake_llm: FakeLlm
) -> None:
    thread_id = long_thread(service)
    event = await accepted(service, thread_id)
    run_id = json.loads(event)["streamingProxyJob"]["thread"]["run_id"]
    stream_id = json.loads(event)["streamingProxyJob"]["stream_id"]
    calls_before = len(fake_llm.requests)

    def table_down(*args: Any, **kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "InternalServerError"}}, "Query")

    service.threads.recent = table_down  # type: ignore[method-assign]
    async with open_client(gateway, token("room")) as ws:
        await connection_id_of(ws)
        async with client_of(service) as client:
            ran = await client.post("/events", content=event)
        messages = await until_end(ws)
    assert ran.status_code == 200 and ran.json()["finish_reason"] == "error", ran.text
    assert [m["type"] for m in messages] == ["threadInfo", "error", "end"]
    assert messages[1]["error"]["type"] == "dependency_unavailable"
    assert len(fake_llm.requests) == calls_before  # the provider was never called
    record = service.streams.get(stream_id)
    assert record is not None and record.status == "failed"
    run = service.threads.run("app1", thread_id, run_id)
    assert run is not None and run.status == "failed"
    meta = service.threads.meta("app1", thread_id)
    assert meta is not None and meta.active_run is None and meta.message_count == 4
