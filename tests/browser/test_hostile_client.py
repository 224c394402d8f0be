"""web/streaming-proxy.js against a hostile or faulty proxy side: what API Gateway does to a
message the browser should never have sent, and what must not follow from it.

Uses the scripted proxy of test_client_protocol.py (tests/browser/protocol_harness.js).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from tests.browser.test_client_protocol import (
    ACK,
    Proxy,
    answers,
    harness_page,
    llm_tool_call,
    on_tool,
    thread_info,
)

pytestmark = pytest.mark.browser

__all__ = ["harness_page"]  # the module's page fixture, shared

FRAME_LIMIT = 32 * 1024

# The fake socket behaves as API Gateway does: a frame over 32 KB closes the connection (1009),
# and a browser sends every message as one frame.
GATEWAY_FRAME_LIMIT = f"""() => {{
  const proto = proxy.socket.constructor.prototype;
  window.realSend ??= proto.send;
  window.tooBig = [];
  proto.send = function (data) {{
    const bytes = new TextEncoder().encode(data).length;
    if (bytes > {FRAME_LIMIT}) {{
      window.tooBig.push(bytes);
      return this.close(1009, "Message too big");
    }}
    return window.realSend.call(this, data);
  }};
}}"""


@pytest.fixture
def proxy(harness_page: Page) -> Iterator[Proxy]:
    handle = Proxy(harness_page)
    handle.start()
    harness_page.evaluate(GATEWAY_FRAME_LIMIT)
    yield handle
    harness_page.evaluate(
        "() => { proxy.client.close(); proxy.socket.constructor.prototype.send = window.realSend; }"
    )


def test_a_tool_result_over_the_frame_limit_is_answered_as_a_failure_on_the_same_connection(
    proxy: Proxy,
) -> None:
    on_tool(proxy, "export_table", "() => ({ rows: 'é'.repeat(20000) })", replies=ACK)
    proxy.deliver(thread_info(), llm_tool_call(1, "tc_big", "export_table", {}))
    proxy.wait("proxy.outcomes.length === 1")
    proxy.page.wait_for_timeout(200)  # any reconnect storm would show by now

    assert proxy.page.evaluate("window.tooBig") == []  # nothing over the limit was sent
    assert proxy.page.evaluate("proxy.connections") == 1  # the connection was never closed
    (answer,) = answers(proxy)
    assert (answer["toolCallId"], answer["success"]) == ("tc_big", False)
    assert answer["message"].startswith("the tool's result is too large to send")
    outcome = proxy.page.evaluate("proxy.outcomes[0]")
    assert (outcome["status"], outcome["success"]) == ("accepted", False)


def test_requests_over_the_frame_limit_are_refused_and_never_sent_again(proxy: Proxy) -> None:
    refused = proxy.page.evaluate(
        """async () => {
          const huge = "t".repeat(40000);
          const answer = proxy.client.llmToolCallResponse({ toolCallId: "tc_1", success: true,
            message: "x", data: huge });
          const subscribe = proxy.client.subscribe("team-9", huge);
          const codes = [];
          for (const p of [answer, subscribe]) {
            codes.push(await p.then(() => "resolved", (e) => [e.code, e.status]));
          }
          return codes;
        }"""
    )
    assert refused == [["payload_too_large", 413], ["payload_too_large", 413]]
    proxy.page.evaluate("proxy.drop()")  # a reconnect rejoins channels and resends requests
    proxy.wait("proxy.client.status === 'open' && proxy.connections === 2")
    proxy.page.wait_for_timeout(200)

    assert proxy.page.evaluate("window.tooBig") == []
    assert proxy.page.evaluate("proxy.connections") == 2  # only the drop closed a connection
    assert proxy.sent("subscribe") == []
    assert proxy.sent("llmToolCallResponse") == []


def test_a_token_function_that_never_answers_is_asked_again(proxy: Proxy) -> None:
    proxy.page.evaluate(
        """() => {
          window.tokenCalls = 0;
          window.statuses = [];
          proxy.start({
            requestTimeoutMs: 100,
            // The first fetch hangs for good (a dead network); the next one answers.
            token: () => (++window.tokenCalls === 1 ? new Promise(() => {}) : "token"),
            onStatus: (status, { error }) => window.statuses.push([status, String(error ?? "")]),
          });
        }"""
    )
    proxy.wait("proxy.client.status === 'open' && proxy.connections === 1", timeout=3_000)
    assert proxy.page.evaluate("window.tokenCalls") == 2
    assert ["reconnecting", "Error: token: no answer within 100 ms"] in proxy.page.evaluate(
        "window.statuses"
    )


def test_replies_in_another_order_than_the_requests_settle_the_right_requests(
    proxy: Proxy,
) -> None:
    # API Gateway runs a connection's messages concurrently: a fast refusal of a later request
    # can overtake the reply to an earlier one. Each action error names its request.
    outcomes = proxy.page.evaluate(
        """async () => {
          const stopped = proxy.client.stop("st_a");
          const resumed = proxy.client.resume("st_b");
          const subscribed = proxy.client.subscribe("team-9", "t");
          const history = proxy.client.history("th_1");
          const forbidden = { message: "no", code: 403, details: "", type: "forbidden" };
          proxy.deliver(
            { type: "error", error: forbidden,
              request: { action: "subscribe", channel: "team-9" } },
            { type: "snapshot", actionName: "a", channel: "c", streamId: "st_b", seq: 2,
              status: "streaming", content: "ab" },
            { type: "error", error: { ...forbidden, message: "not yours" },
              request: { action: "history", threadId: "th_1", cursor: "0" } },
            { type: "stopped", streamId: "st_a", streamStatus: "streaming" },
          );
          const settle = (p) =>
            p.then((r) => ["ok", r.status ?? r.type], (e) => [e.code, e.message]);
          return {
            requests: await Promise.all([stopped, subscribed, history].map(settle)),
            resumes: proxy.sent("resume").length,
            text: proxy.client.stream("st_b").text,
            inFlight: proxy.client.stream("st_b")._resumeInFlight,
          };
        }"""
    )
    assert outcomes == {
        "requests": [["ok", "stopped"], ["forbidden", "no"], ["forbidden", "not yours"]],
        "resumes": 1,
        "text": "ab",
        "inFlight": False,
    }
