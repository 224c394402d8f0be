"""A page on another origin answers a tool over HTTPS as docs/web-client.md shows: Chromium
sends the CORS preflight, and the page can read the answer (api/pagecors.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.conftest import Stack

pytestmark = pytest.mark.browser

# docs/web-client.md's fetch; `http://localhost:<port>` and `http://127.0.0.1:<port>` are two
# origins, so this is a cross-origin request with a JSON body and a custom header.
ANSWER_A_TOOL = """async ([httpBase, token]) => {
  const r = await fetch(`${httpBase}/llm/tool-response`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-subscribe-token": token },
    body: JSON.stringify({ toolCallId: "tc_nobody_waits", success: true, message: "dark" }),
  });
  return { status: r.status, body: await r.json() };
}"""


def test_a_page_on_another_origin_reads_the_tool_response_answer(
    stack: Stack, new_page: Callable[[], Page]
) -> None:
    page = new_page()
    page.goto(f"{stack.http.replace('127.0.0.1', 'localhost')}/web/streaming-proxy.d.ts")
    answer: dict[str, Any] = page.evaluate(ANSWER_A_TOOL, [stack.http, stack.token("cors-tab")])
    assert answer["status"] == 404
    assert answer["body"]["error"]["type"] == "not_found"
