"""`POST /message/send` through the real stack: one JSON message to real WebSocket
subscribers, in the streams' envelope, reaching the publishing app's channels only."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import RIVAL_KEY, Stack
from tests.wsclient import Subscriber

PROGRESS = {"step": 2, "of": 5, "label": "Crunching numbers", "done": False, "ratio": 0.4}


async def send(stack: Stack, body: Any, key: str | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.http, timeout=30) as client:
        return await client.post(
            "/message/send", json=body, headers={"x-api-key": stack.api_key if key is None else key}
        )


async def test_a_message_reaches_every_tab_of_the_app_and_no_other_app(stack: Stack) -> None:
    mine = [await Subscriber.open(stack.ws, stack.token("news")) for _ in range(2)]
    other_channel = await Subscriber.open(stack.ws, stack.token("sports"))
    rival = await Subscriber.open(stack.ws, stack.token("news", api_key=RIVAL_KEY))
    try:
        body = {"channels": ["news"], "actionName": "onProgress", "message": PROGRESS}
        r = await send(stack, body)
        assert r.status_code == 200, r.text
        answer = r.json()
        message_id = answer["messageId"]
        assert message_id.startswith("msg_")
        # Answered once the fan-out completed: both tabs were reached, none failed.
        assert answer == {
            "success": True,
            "actionName": "onProgress",
            "messageId": message_id,
            "subscribers": 2,
            "delivered": 2,
            "failed": 0,
            "gone": 0,
        }
        for tab in mine:
            got = await tab.wait_for(lambda m: m.get("streamId") == message_id)
            assert got == {
                "actionName": "onProgress",
                "channel": "news",
                "streamId": message_id,
                "seq": 0,
                "type": "message",
                "message": PROGRESS,
            }
        await asyncio.sleep(0.3)
        for outsider in (other_channel, rival):
            assert [m for m in outsider.messages if m.get("streamId") == message_id] == []
    finally:
        for tab in (*mine, other_channel, rival):
            await tab.close()


async def test_any_json_value_is_a_message_and_a_tab_in_two_channels_gets_it_once(
    stack: Stack,
) -> None:
    tab = await Subscriber.open(stack.ws, stack.token("alerts", "inbox"))
    try:
        for value in ("plain text", 42, ["a", 1, None], None, {"nested": {"deep": [True]}}):
            body = {"channels": ["inbox", "alerts"], "actionName": "onNote", "message": value}
            r = await send(stack, body)
            assert r.status_code == 200, r.text
            assert (r.json()["subscribers"], r.json()["delivered"]) == (1, 1)
            message_id = r.json()["messageId"]
            got = await tab.wait_for(lambda m, i=message_id: m.get("streamId") == i)
            assert got["message"] == value and got["channel"] == "inbox"
        await asyncio.sleep(0.2)
        assert len([m for m in tab.messages if m.get("type") == "message"]) == 5
    finally:
        await tab.close()


async def test_a_message_to_channels_nobody_listens_on_reaches_no_one(stack: Stack) -> None:
    body = {"channels": ["empty-room"], "actionName": "onNote", "message": {"x": 1}}
    r = await send(stack, body)
    assert r.status_code == 200
    assert (r.json()["subscribers"], r.json()["delivered"], r.json()["failed"]) == (0, 0, 0)


async def test_bad_publishes_are_refused_in_klais_error_shape(stack: Stack) -> None:
    valid = {"channels": ["news"], "actionName": "onNote", "message": {"x": 1}}
    cases: list[tuple[dict[str, Any], str | None, int, str]] = [
        (valid, "", 401, "unauthorized"),
        (valid, "wrong-key", 401, "unauthorized"),
        ({**valid, "channels": []}, None, 400, "invalid_request"),
        ({**valid, "channels": ["a b"]}, None, 400, "invalid_request"),
        ({**valid, "channels": [f"c{i}" for i in range(51)]}, None, 400, "invalid_request"),
        ({k: v for k, v in valid.items() if k != "message"}, None, 400, "invalid_request"),
        ({k: v for k, v in valid.items() if k != "actionName"}, None, 400, "invalid_request"),
        # Fits the request body limit, not one WebSocket message (128 KB).
        ({**valid, "message": "x" * 140_000}, None, 413, "payload_too_large"),
    ]
    for body, key, status, kind in cases:
        r = await send(stack, body, key)
        assert r.status_code == status, (body.keys(), r.text)
        error = r.json()["error"]
        assert r.json()["success"] is False and error["type"] == kind and error["code"] == status
        assert isinstance(error["details"], str)
    missing = await send(stack, {"channels": ["news"], "actionName": "onNote"})
    assert [p["field"] for p in missing.json()["error"]["fields"]] == ["message"]


async def test_a_message_just_under_the_websocket_limit_is_delivered(stack: Stack) -> None:
    tab = await Subscriber.open(stack.ws, stack.token("big"))
    try:
        text = "y" * 120_000
        r = await send(stack, {"channels": ["big"], "actionName": "onBig", "message": text})
        assert r.status_code == 200, r.text
        assert r.json()["delivered"] == 1
        got = await tab.wait_for(lambda m: m.get("type") == "message")
        assert got["message"] == text
    finally:
        await tab.close()
