"""The Klai runtime bridge of web/streaming-proxy.js (`bfBridge`), in Chromium against the
running local stack: a page with a stub `window.BF.processNamedAction` gets every message of
a stream through it, in order, frontend tool calls included; a page that joins mid-stream
gets the text it missed as one `delta`; with the option off the stub hears nothing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tests.conftest import Stack
from tests.delivery import assert_complete
from tests.loopback import LoopbackServer

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ACTION = "onKlaiMessage"
# A Klai page: its runtime's named actions, here a stub recording what each one was handed.
PAGE = """<!doctype html>
<script type="module">
import { connect } from "./streaming-proxy.js";
window.bfCalls = [];
window.seen = [];
window.BF = {
  processNamedAction(name, data) {
    window.bfCalls.push({ name, data: structuredClone(data), asMethod: this === window.BF });
  },
};
window.startClient = (url, token, bfBridge) => {
  window.client = connect({ url, token, bfBridge });
  window.client.on("*", (event) => window.seen.push(structuredClone(event)));
};
window.ready = true;
</script>"""


@pytest.fixture(scope="module")
def klai_site() -> Iterator[str]:
    """The page and the real client, served on loopback (Chromium lets only a loopback page
    open the stack's loopback WebSocket)."""
    script = (ROOT / "web/streaming-proxy.js").read_text()
    app = Starlette(
        routes=[
            Route("/", lambda _: HTMLResponse(PAGE)),
            Route("/streaming-proxy.js", lambda _: Response(script, media_type="text/javascript")),
        ]
    )
    server = LoopbackServer()
    server.start(app)
    try:
        yield f"http://127.0.0.1:{server.port}/"
    finally:
        server.stop()


def klai_page(
    new_page: Callable[[], Page], site: str, stack: Stack, channel: str, *, bridge: bool
) -> Page:
    page = new_page()
    page.goto(site)
    page.wait_for_function("window.ready")
    page.evaluate(
        "([url, token, bridge]) => startClient(url, token, bridge)",
        [stack.ws, stack.token(channel), bridge],
    )
    page.wait_for_function("window.client.connectionId !== null")
    return page


def start(stack: Stack, channel: str, **payload: Any) -> str:
    body = {
        "channels": [channel],
        "actionName": ACTION,
        "options": {"flushIntervalMs": 0},
        "payload": {
            "provider": "mock",
            "messages": [{"role": "user", "content": "Go dark"}],
            **payload,
        },
    }
    r = httpx.post(
        f"{stack.http}/llm/query", json=body, headers={"x-api-key": stack.api_key}, timeout=30
    )
    assert r.status_code == 200, r.text
    return str(r.json()["streamId"])


def ended(page: Page, where: str = "seen") -> None:
    page.wait_for_function(f"window.{where}.some(e => (e.data ?? e).type === 'end')")


def test_every_message_reaches_the_named_action_in_order_tool_calls_too(
    stack: Stack, new_page: Callable[[], Page], klai_site: str
) -> None:
    page = klai_page(new_page, klai_site, stack, "bf-live", bridge=True)
    script = [
        {
            "text": "Switching ",
            "toolCalls": [{"name": "ui_set_theme", "arguments": {"theme": "dark"}}],
        },
        {"text": "Done: {{message:ui_set_theme}}."},
    ]
    stream_id = start(
        stack,
        "bf-live",
        tools=[{"type": "function", "function": {"name": "ui_set_theme"}}],
        providerArgs={"script": script, "delayMs": 5},
    )
    # The page's named action sees the tool call (as a Klai page tests it) and answers it.
    page.wait_for_function("window.bfCalls.some(c => c.data.action === 'llmToolCall')")
    call = page.evaluate("window.bfCalls.find(c => c.data.action === 'llmToolCall').data")
    assert call["toolName"] == "set_theme" and call["arguments"] == {"theme": "dark"}
    r = httpx.post(
        f"{stack.http}/llm/tool-response",
        json={"toolCallId": call["toolCallId"], "success": True, "message": "Theme is dark"},
        headers={"x-api-key": stack.api_key},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    ended(page, "bfCalls")

    calls: list[dict[str, Any]] = page.evaluate("window.bfCalls")
    assert all(c["name"] == ACTION and c["asMethod"] for c in calls)
    messages = [c["data"] for c in calls]
    assert all(m["streamId"] == stream_id for m in messages)
    # Exactly what the client's own handlers got, message for message, in seq order.
    assert messages == page.evaluate("window.seen")
    assert_complete(messages, "Switching Done: Theme is dark.")
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "threadInfo" and kinds.count("end") == 1 and kinds[-1] == "end"
    assert kinds.index("function_call") < kinds.index("llmToolCall")


def test_a_page_joining_mid_stream_gets_the_missed_text_as_one_delta(
    stack: Stack, new_page: Callable[[], Page], klai_site: str
) -> None:
    text = " ".join(f"word{i}" for i in range(60))
    start(stack, "bf-late", providerArgs={"text": text, "delayMs": 40})
    time.sleep(0.8)  # some words out before the page connects
    page = klai_page(new_page, klai_site, stack, "bf-late", bridge=True)
    ended(page, "bfCalls")

    messages = [c["data"] for c in page.evaluate("window.bfCalls")]
    assert "snapshot" not in [m["type"] for m in messages]  # Klai pages know no snapshots
    caught_up = messages[0]
    assert caught_up["type"] == "delta" and caught_up["fromSnapshot"] is True
    assert text.startswith(caught_up["content"]) and len(caught_up["content"].split()) >= 3
    deltas = "".join(m["content"] for m in messages if m["type"] == "delta")
    assert deltas == text
    assert [m["type"] for m in messages].count("end") == 1


def test_with_the_option_off_the_runtime_hears_nothing(
    stack: Stack, new_page: Callable[[], Page], klai_site: str
) -> None:
    page = klai_page(new_page, klai_site, stack, "bf-off", bridge=False)
    start(stack, "bf-off", providerArgs={"text": "Nothing for the runtime.", "delayMs": 5})
    ended(page)
    assert len(page.evaluate("window.seen")) >= 3  # the client's own handlers got the stream
    assert page.evaluate("window.bfCalls") == []
