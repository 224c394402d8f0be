"""The same detached-relay event delivered twice publishes once (Lambda may deliver an async
event more than once): a real WebSocket subscriber behind the gateway emulator sees one
`threadInfo` ... `end`, and the fake provider is called once.

The stream service runs in Lambda mode in this process; the self-invoke is the one thing
faked: the test delivers its event to `/events` itself, twice, as Lambda could.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from streaming_proxy.api.app import create_app
from streaming_proxy.service import StreamService
from tests.fake_llm import TEXT, FakeLlm
from tests.integration import test_gateway as gateway_tests
from tests.integration.test_gateway import (
    Gateway,
    connection_id_of,
    lambda_mode_service,
    open_client,
    token,
)
from tests.wsclient import nothing_more, until_end

moto_endpoint = gateway_tests.moto_endpoint
env = gateway_tests.env
gateway = gateway_tests.gateway

APP_KEY = "app-key-for-duplicate-event-tests"


@pytest.fixture
async def service(
    gateway: Gateway, fake_llm: FakeLlm, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[StreamService]:
    async with lambda_mode_service(monkeypatch, APP_KEY, fake_llm.base_url) as running:
        yield running


async def accepted_job(service: StreamService) -> dict[str, Any]:
    """POST /llm/query (acked at once); the self-invoke's event, as Lambda would deliver it."""
    events: list[bytes] = []
    service.lambda_detach.invoke_self = events.append  # type: ignore[method-assign,assignment]
    body = {
        "apiKey": APP_KEY,
        "channels": ["room"],
        "actionName": "onLlm",
        "payload": {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hello"}],
        },
    }
    async with client_of(service) as client:
        ack = await client.post("/llm/query", json=body)
    assert ack.status_code == 200, ack.text
    assert ack.json()["streamStatus"] == "pending"
    event: dict[str, Any] = json.loads(events[0])
    return event


def client_of(service: StreamService) -> httpx.AsyncClient:
    app = create_app()
    app.state.service = service
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn")


def provider_calls(fake_llm: FakeLlm) -> int:
    return sum(r.path.endswith("/chat/completions") for r in fake_llm.requests)


@pytest.mark.parametrize("together", [True, False], ids=["concurrently", "one-after-another"])
async def test_a_duplicate_event_publishes_once(
    gateway: Gateway, service: StreamService, fake_llm: FakeLlm, together: bool
) -> None:
    async with open_client(gateway, token("room")) as ws:
        await connection_id_of(ws)
        event = await accepted_job(service)
        calls_before = provider_calls(fake_llm)
        async with client_of(service) as client:
            if together:
                answers = await asyncio.gather(*(client.post("/events", json=event) for _ in "ab"))
            else:
                answers = [await client.post("/events", json=event) for _ in "ab"]
        messages = await until_end(ws)
        await nothing_more(ws)
    assert [a.status_code for a in answers] == [200, 200]
    assert sum(a.json().get("duplicate", False) for a in answers) == 1
    types = [m["type"] for m in messages]
    assert types[0] == "threadInfo" and types.count("threadInfo") == 1
    assert types.count("end") == 1 and "error" not in types
    covered = [s for m in messages for s in range(m.get("firstSeq", m["seq"]), m["seq"] + 1)]
    assert covered == list(range(len(covered)))  # each seq once: nothing published twice
    assert "".join(m.get("content", "") for m in messages if m["type"] == "delta") == TEXT
    assert provider_calls(fake_llm) == calls_before + 1
