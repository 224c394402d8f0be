"""Hostile tests of a thread run's life: a run stopped before its provider's first byte
is recorded `cancelled` (it was stopped), as one stopped mid-answer is, not `failed`."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from streaming_proxy.api.app import create_app
from streaming_proxy.service import StreamService
from tests.unit.test_lambda_mode import KEY, RecordingPoster, settings

STOP = "/stream/create/assistants/stop"


async def test_a_run_stopped_before_its_first_byte_ends_cancelled(aws_env: None) -> None:
    poster = RecordingPoster()
    service = StreamService(settings(detach_mode="task", ack_wait_seconds=0.2), poster=poster)
    service.connections.open("conn1", "app1", ["room"])
    app = create_app()
    app.state.service = service
    body: dict[str, Any] = {
        "apiKey": KEY,
        "channels": ["room"],
        "actionName": "onLlm",
        "payload": {
            "provider": "mock",
            "messages": [{"role": "user", "content": "one two"}],
            "providerArgs": {"delayMs": 3000},
        },
    }
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c:
        ack = (await c.post("/stream/create/assistants", json=body)).json()
        assert ack["streamStatus"] == "pending", ack
        ids = {"apiKey": KEY, "threadId": ack["threadId"], "runId": ack["runId"]}
        assert (await c.post(STOP, json=ids)).json()["status"] == "cancelling"
        async with asyncio.timeout(5):
            while not poster.posts or poster.posts[-1][1]["type"] != "end":  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert poster.posts[-1][1]["finish_reason"] == "cancelled"
        again = (await c.post(STOP, json=ids)).json()
    assert again["status"] == "cancelled", again
    run = service.threads.run("app1", ack["threadId"], ack["runId"])
    assert run is not None and run.status == "cancelled"
    await service.aclose()
