"""A model may only run the tools its request offered. A prompt-injected or confused model
naming another tool must not reach the app's webhook (which serves every flow of the app)
nor a page's `ui_` handler the request never offered (a page registers handlers for many
flows): it is told the tool does not exist, and the stream goes on."""

from __future__ import annotations

from tests.conftest import HOOKED_KEY, Stack
from tests.delivery import assert_complete
from tests.fake_webhook import FakeWebhook
from tests.integration.test_tool_loop import query, start
from tests.wsclient import Subscriber

WIPE = {"name": "ui_wipe_account", "arguments": {"confirm": True}}
PURGE = {"name": "purge_orders", "arguments": {"all": True}}


async def test_calls_of_tools_the_request_did_not_offer_never_run(
    stack: Stack, webhook: FakeWebhook
) -> None:
    channel = "hostile-unoffered"
    sub = await Subscriber.open(stack.ws, stack.token(channel, api_key=HOOKED_KEY))
    script = [
        {"toolCalls": [WIPE, PURGE]},
        {"text": "{{message:ui_wipe_account}} / {{message:purge_orders}}"},
    ]
    try:
        body = query(channel, script, "ui_get_color", "lookup_stock")
        stream_id = await start(stack, body, HOOKED_KEY)
        messages = await sub.stream(stream_id, within=10)
    finally:
        await sub.close()
    assert [c for c in webhook.calls if c.payload["streamId"] == stream_id] == []
    assert "llmToolCall" not in [m["type"] for m in messages]
    assert_complete(
        messages,
        "the request offered no tool named 'ui_wipe_account'; it did not run"
        " / the request offered no tool named 'purge_orders'; it did not run",
    )
    assert messages[-1]["finish_reason"] == "stop"
