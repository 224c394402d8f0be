"""web/streaming-proxy.js in Chromium against a scripted proxy: ordering, merged messages,
snapshots (resumed and pushed), exactly one `end`, the stall timer and the stop result.

The page loads the real module (routed, no server) and hands the client a fake WebSocket
(tests/browser/protocol_harness.js); each test plays the server's side message by message and
asserts what the action handlers and `onStream` saw.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "http://proxy.test"
FILES = {
    "/": ("text/html", '<!doctype html><script type="module" src="/harness.js"></script>'),
    "/harness.js": ("text/javascript", (ROOT / "tests/browser/protocol_harness.js").read_text()),
    "/streaming-proxy.js": ("text/javascript", (ROOT / "web/streaming-proxy.js").read_text()),
}

STREAM = "st_protocol"
ACTION = "onLlmMessage"
USAGE = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8, "estimated": False}

Message = dict[str, Any]


# ---- messages as the proxy sends them ------------------------------------------------


def envelope(seq: int, type_: str, stream: str = STREAM, **fields: Any) -> Message:
    return {
        "actionName": ACTION,
        "channel": "user-1",
        "streamId": stream,
        "seq": seq,
        "type": type_,
        **fields,
    }


def thread_info(stream: str = STREAM) -> Message:
    return envelope(0, "threadInfo", stream, content={"streamId": stream})


def delta(seq: int, content: str, first: int | None = None) -> Message:
    """A delta; with `first`, a merged one covering first..seq."""
    message = envelope(seq, "delta", content=content)
    if first is not None:
        message["firstSeq"] = first
    return message


def end(seq: int, reason: str = "stop") -> Message:
    return envelope(seq, "end", finish_reason=reason, usage=USAGE)


def snapshot(seq: int, content: str, status: str = "streaming", **fields: Any) -> Message:
    message = {**envelope(seq, "snapshot", content=content, status=status), **fields}
    if status != "streaming":
        message.setdefault("finish_reason", {"cancelled": "cancelled"}.get(status, "stop"))
        message.setdefault("usage", USAGE)
    return message


def split(message: Message, parts: int) -> list[Message]:
    """A snapshot cut in `parts` pieces, as the proxy sends one that is too large."""
    text = message["content"]
    cuts = [len(text) * i // parts for i in range(parts + 1)]
    return [
        {**message, "content": text[cuts[i] : cuts[i + 1]], "part": i, "parts": parts}
        for i in range(parts)
    ]


# ---- the page ------------------------------------------------------------------------


class Proxy:
    """The test's handle on the scripted proxy in the page."""

    def __init__(self, page: Page) -> None:
        self.page = page

    def start(self, **options: Any) -> None:
        self.page.evaluate("options => proxy.start(options)", options)

    def deliver(self, *messages: Message) -> None:
        self.page.evaluate("messages => proxy.deliver(...messages)", list(messages))

    def events(self, stream: str = STREAM) -> list[Message]:
        events: list[Message] = self.page.evaluate("proxy.events")
        return [e for e in events if e["streamId"] == stream]

    def kinds(self, stream: str = STREAM) -> list[tuple[str, int]]:
        return [(e["type"], e["seq"]) for e in self.events(stream)]

    def sent(self, action: str) -> list[Message]:
        sent: list[Message] = self.page.evaluate("action => proxy.sent(action)", action)
        return sent

    def state(self, stream: str = STREAM) -> Message:
        state: Message = self.page.evaluate("id => proxy.state(id)", stream)
        return state

    def handler_text(self, stream: str = STREAM) -> str:
        return str(self.page.evaluate("id => proxy.handlerText[id]", stream))

    def wait(self, predicate: str, timeout: float = 5_000) -> None:
        self.page.wait_for_function(predicate, timeout=timeout)

    def rendered(self, stream: str = STREAM) -> Message:
        """The last onStream call for the stream, once its frame has run."""
        self.wait(f"proxy.renders.some(r => r.streamId === {stream!r})")
        self.page.evaluate("() => new Promise(requestAnimationFrame)")
        renders: list[Message] = self.page.evaluate("proxy.renders")
        return [r for r in renders if r["streamId"] == stream][-1]


@pytest.fixture(scope="module")
def harness_page(browser: Browser) -> Iterator[Page]:
    """One page for the module: each test starts its own client in it (a fresh context per
    test would cost most of the run)."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)

    def serve(route: Route) -> None:
        path = route.request.url.removeprefix(ORIGIN).split("?")[0]
        if path not in FILES:
            route.fulfill(status=404, body="not found")
            return
        content_type, body = FILES[path]
        route.fulfill(status=200, content_type=content_type, body=body)

    page.route(f"{ORIGIN}/**", serve)
    page.goto(f"{ORIGIN}/")
    page.wait_for_function("window.proxy")
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def proxy(harness_page: Page) -> Iterator[Proxy]:
    handle = Proxy(harness_page)
    handle.start()
    yield handle
    harness_page.evaluate("proxy.client.close()")


# ---- merged messages -----------------------------------------------------------------


def test_a_merged_message_in_order_is_one_event_with_the_whole_text(proxy: Proxy) -> None:
    proxy.deliver(thread_info(), delta(1, "Hel"), delta(4, "lo, wor", first=2), delta(5, "ld"))
    proxy.deliver(end(6))

    assert proxy.kinds() == [
        ("threadInfo", 0),
        ("delta", 1),
        ("delta", 4),
        ("delta", 5),
        ("end", 6),
    ]
    merged = proxy.events()[2]
    assert (merged["firstSeq"], merged["content"]) == (2, "lo, wor")
    state = proxy.state()
    assert (state["text"], state["status"], state["lastSeq"]) == ("Hello, world", "done", 6)
    assert (state["messages"], state["duplicates"]) == (5, 0)
    assert proxy.sent("resume") == []
    assert proxy.rendered() == {"streamId": STREAM, "text": "Hello, world", "status": "done"}


def test_a_merged_message_before_its_predecessors_is_held_then_drained(proxy: Proxy) -> None:
    proxy.deliver(thread_info(), delta(1, "a"), delta(6, "def", first=4))
    assert proxy.kinds() == [("threadInfo", 0), ("delta", 1)]
    assert [r["afterSeq"] for r in proxy.sent("resume")] == [1]

    proxy.deliver(delta(2, "b"), delta(3, "c"))
    assert proxy.kinds()[2:] == [("delta", 2), ("delta", 3), ("delta", 6)]
    # The resume's answer was stored before all that: older than what is held, so ignored.
    proxy.deliver(snapshot(2, "ab"), end(7))

    assert proxy.kinds()[-1] == ("end", 7)
    assert "snapshot" not in [e["type"] for e in proxy.events()]
    assert proxy.state()["text"] == proxy.handler_text() == "abcdef"
    assert proxy.rendered()["text"] == "abcdef"


def test_a_partial_overlap_after_a_snapshot_asks_resume_until_the_text_is_exact(
    proxy: Proxy,
) -> None:
    proxy.deliver(snapshot(3, "one two ", catchUp=True))  # pushed: joined mid-stream
    proxy.deliver(delta(5, "two three four ", first=2))  # covers 2..5: cannot be cut at 3

    assert proxy.kinds() == [("snapshot", 3)]
    assert [r["afterSeq"] for r in proxy.sent("resume")] == [3]
    proxy.deliver(snapshot(4, "one two three "))  # the stored snapshot lags: 5 is still missing
    proxy.wait("proxy.sent('resume').length === 2")  # the retry loop asks again
    assert proxy.sent("resume")[1]["afterSeq"] == 4
    proxy.deliver(snapshot(5, "one two three four "), delta(6, "five"), end(7))

    assert proxy.kinds() == [
        ("snapshot", 3),
        ("snapshot", 4),
        ("snapshot", 5),
        ("delta", 6),
        ("end", 7),
    ]
    assert proxy.state()["text"] == proxy.handler_text() == "one two three four five"


def test_duplicates_are_dropped_and_counted(proxy: Proxy) -> None:
    proxy.deliver(thread_info(), delta(1, "x"), delta(1, "x"), delta(2, "y"))
    proxy.deliver(delta(2, "xy", first=1), delta(3, "z"), end(4), end(4), delta(3, "z"))

    assert proxy.kinds() == [
        ("threadInfo", 0),
        ("delta", 1),
        ("delta", 2),
        ("delta", 3),
        ("end", 4),
    ]
    state = proxy.state()
    assert (state["text"], state["messages"], state["duplicates"]) == ("xyz", 9, 4)
    assert proxy.sent("resume") == []


# ---- snapshots pushed on join ----------------------------------------------------------


def test_a_pushed_catch_up_snapshot_then_live_messages_needs_no_resume(proxy: Proxy) -> None:
    proxy.deliver(snapshot(4, "The sky is ", catchUp=True), delta(5, "blue"), delta(6, "."))
    proxy.deliver(end(7))

    assert proxy.kinds() == [("snapshot", 4), ("delta", 5), ("delta", 6), ("end", 7)]
    assert proxy.state()["text"] == proxy.handler_text() == "The sky is blue."
    assert proxy.sent("resume") == []
    assert proxy.rendered()["status"] == "done"


def test_a_split_pushed_snapshot_is_joined_whatever_the_order_of_its_parts(
    proxy: Proxy,
) -> None:
    first, second, third = split(snapshot(5, "a long answer, cut in three parts ", catchUp=True), 3)
    proxy.deliver(second, third)
    assert proxy.events() == []
    proxy.deliver(first, delta(6, "and then live"), end(7))

    events = proxy.events()
    assert [(e["type"], e["seq"]) for e in events] == [("snapshot", 5), ("delta", 6), ("end", 7)]
    assert "part" not in events[0]
    assert proxy.state()["text"] == "a long answer, cut in three parts and then live"
    assert proxy.sent("resume") == []


def test_a_pushed_snapshot_leaves_the_resume_in_flight_alone(proxy: Proxy) -> None:
    proxy.page.evaluate(
        "id => { window.stopped = proxy.client.stop('st_other'); proxy.client.resume(id); }", STREAM
    )
    # The stop is the oldest request waiting, so this snapshot cannot be the resume's answer.
    proxy.deliver(snapshot(2, "ab", catchUp=True), delta(4, "d"))
    assert len(proxy.sent("resume")) == 1  # the resume is still in flight: no second one

    proxy.deliver({"type": "stopped", "streamId": "st_other", "streamStatus": "streaming"})
    proxy.deliver(snapshot(3, "abc"))  # the resume's answer
    assert proxy.page.evaluate("window.stopped") == {
        "status": "stopped",
        "streamStatus": "streaming",
    }
    # Nothing is left waiting in the reply queue: the next error answers the next request.
    refused = proxy.page.evaluate(
        """async () => {
          const subscribed = proxy.client.subscribe("team-9", "t");
          const error = { message: "no", code: 403, details: "", type: "forbidden" };
          proxy.deliver({ type: "error", error });
          return subscribed.then(() => "resolved", (e) => e.code);
        }"""
    )
    assert refused == "forbidden"
    proxy.deliver(end(5))
    assert proxy.kinds() == [("snapshot", 2), ("snapshot", 3), ("delta", 4), ("end", 5)]
    assert proxy.state()["text"] == "abcd"


# ---- end exactly once ------------------------------------------------------------------


def test_a_final_snapshot_ends_the_stream_and_a_later_live_end_is_a_duplicate(
    proxy: Proxy,
) -> None:
    tools = {"functions": [{"name": "get_weather", "userMessage": "Checking"}]}
    proxy.deliver(thread_info(), delta(1, "It "), envelope(3, "function_call", content=tools))
    assert [r["afterSeq"] for r in proxy.sent("resume")] == [1]

    proxy.deliver(snapshot(4, "It rains.", "done"))
    proxy.deliver(delta(2, "rains."), end(4))

    assert proxy.kinds() == [
        ("threadInfo", 0),
        ("delta", 1),
        ("function_call", 3),  # held, covered by the snapshot, and not in it: still delivered
        ("snapshot", 4),
        ("end", 4),
    ]
    synthesized = proxy.events()[-1]
    assert synthesized == {
        "type": "end",
        "actionName": ACTION,
        "channel": "user-1",
        "streamId": STREAM,
        "seq": 4,
        "finish_reason": "stop",
        "usage": USAGE,
        "fromSnapshot": True,
    }
    state = proxy.state()
    assert (state["text"], state["status"], state["finishReason"]) == ("It rains.", "done", "stop")
    assert state["functions"] == tools["functions"]
    assert state["duplicates"] == 2
    assert proxy.rendered()["status"] == "done"


def test_a_live_end_then_a_final_snapshot_ends_once_and_keeps_the_text(proxy: Proxy) -> None:
    proxy.deliver(thread_info(), delta(2, "b"))  # 1 is missing: resume goes out
    proxy.deliver(delta(1, "a"), end(3, "length"))
    proxy.deliver(snapshot(3, "tail only", "done", truncated=True))

    assert proxy.kinds() == [("threadInfo", 0), ("delta", 1), ("delta", 2), ("end", 3)]
    state = proxy.state()
    assert (state["text"], state["finishReason"]) == ("ab", "length")
    assert proxy.handler_text() == "ab"


def test_a_failed_final_snapshot_ends_with_an_error(proxy: Proxy) -> None:
    proxy.page.evaluate(
        "id => void proxy.client.resume(id, { actionName: 'onLlmMessage' })", STREAM
    )
    proxy.deliver(snapshot(5, "partial", "failed", finish_reason="error"))

    assert proxy.kinds() == [("snapshot", 5), ("end", 5)]
    assert proxy.events()[-1]["finish_reason"] == "error"
    state = proxy.state()
    assert (state["status"], state["error"]) == ("error", {"message": "stream failed"})


# ---- the stall timer -------------------------------------------------------------------


def test_a_lost_end_is_recovered_by_the_stall_timer(proxy: Proxy) -> None:
    proxy.start(stallMs=150)
    # end(3) never comes. Counted in the same call: a busy machine may take stallMs between two.
    asked_at_once = proxy.page.evaluate(
        "messages => (proxy.deliver(...messages), proxy.sent('resume').length)",
        [thread_info(), delta(1, "all "), delta(2, "there")],
    )
    assert asked_at_once == 0

    proxy.wait("proxy.sent('resume').length === 1")
    assert proxy.sent("resume")[0]["afterSeq"] == 2
    proxy.deliver(snapshot(3, "all there", "done"))

    assert proxy.kinds()[-2:] == [("snapshot", 3), ("end", 3)]
    assert [e["type"] for e in proxy.events()].count("end") == 1
    proxy.page.wait_for_timeout(500)
    assert len(proxy.sent("resume")) == 1
    assert proxy.rendered() == {"streamId": STREAM, "text": "all there", "status": "done"}


def test_the_stall_timer_asks_again_while_nothing_arrives_and_stops_at_the_end(
    proxy: Proxy,
) -> None:
    proxy.start(stallMs=100)
    proxy.deliver(thread_info(), delta(1, "quiet"))
    # Nobody answers: each stall asks again, even with the previous resume unanswered.
    proxy.wait("proxy.sent('resume').length >= 3")
    assert {r["afterSeq"] for r in proxy.sent("resume")} == {1}

    proxy.deliver(end(2))
    asked = len(proxy.sent("resume"))
    proxy.page.wait_for_timeout(400)
    assert len(proxy.sent("resume")) == asked
    assert [e["type"] for e in proxy.events()].count("end") == 1


def test_close_leaves_no_timer_behind(proxy: Proxy) -> None:
    proxy.start(stallMs=100, resumeRetryMs=10_000)
    proxy.deliver(thread_info(), delta(2, "gap"))  # a stall timer and a resume in flight
    proxy.page.evaluate("void proxy.client.resume('st_second')")
    assert proxy.page.evaluate("proxy.pendingTimers()") > 0

    assert proxy.page.evaluate("proxy.client.close(), proxy.pendingTimers()") == 0
    asked = len(proxy.sent("resume"))
    proxy.page.wait_for_timeout(300)
    assert len(proxy.sent("resume")) == asked
    assert proxy.page.evaluate("proxy.pendingTimers()") == 0


def test_zero_stall_ms_turns_the_stall_timer_off(proxy: Proxy) -> None:
    proxy.start(stallMs=0)
    proxy.deliver(thread_info(), delta(1, "quiet"))
    proxy.page.wait_for_timeout(200)
    assert proxy.sent("resume") == []


# ---- stop, reconnect, rendering --------------------------------------------------------


def test_stop_resolves_the_status_and_the_stream_status(proxy: Proxy) -> None:
    results = proxy.page.evaluate(
        """async () => {
          proxy.answer = (r) =>
            r.action !== "stop" ? []
            : r.streamId === "st_gone" ? [{ type: "not_found", streamId: r.streamId }]
            : [{ type: "stopped", streamId: r.streamId,
                 streamStatus: r.streamId === "st_over" ? "done" : "streaming" }];
          const c = proxy.client;
          return [await c.stop("st_live"), await c.stop("st_gone"), await c.stop("st_over")];
        }"""
    )
    assert results == [
        {"status": "stopped", "streamStatus": "streaming"},
        {"status": "not_found", "streamStatus": None},
        {"status": "stopped", "streamStatus": "done"},
    ]


def test_history_joins_its_parts_per_page_and_rejects_an_unknown_thread(proxy: Proxy) -> None:
    """Two pages of a thread asked at once, the first answered in three parts (cut inside
    a message), each settling its own request; an unknown thread rejects with not_found."""
    results = proxy.page.evaluate(
        """async () => {
          const line = (t) => JSON.stringify({ role: "user", content: t }) + "\\n";
          const lines = (...texts) => texts.map(line).join("");
          const about = { type: "history", threadId: "thread_a", createdAt: 1, updatedAt: 2,
                          activeRun: null };
          const first = lines("one", "two ü", "three");
          const cut = [0, 10, 31, first.length];
          proxy.answer = (r) => {
            if (r.action !== "history") return [];
            if (r.threadId !== "thread_a") return [{ type: "not_found", threadId: r.threadId }];
            if (r.cursor === "3") {
              return [{ ...about, cursor: "3", nextCursor: null, content: lines("four") }];
            }
            return [0, 1, 2].map((i) => ({ ...about, cursor: "0", nextCursor: "3", count: 3,
              content: first.slice(cut[i], cut[i + 1]), part: i, parts: 3 }));
          };
          const c = proxy.client;
          const [page, next] = await Promise.all(
            [c.history("thread_a"), c.history("thread_a", { cursor: 3 })]);
          const gone = await c.history("thread_b").then(() => null, (e) => [e.code, e.status]);
          return { page, next, gone, sent: proxy.sent("history") };
        }"""
    )
    page, next_page = results["page"], results["next"]
    assert [m["content"] for m in page["messages"]] == ["one", "two ü", "three"]
    assert (page["cursor"], page["nextCursor"], page["threadId"]) == ("0", "3", "thread_a")
    assert "part" not in page and "content" not in page
    assert [m["content"] for m in next_page["messages"]] == ["four"]
    assert next_page["nextCursor"] is None
    assert results["gone"] == ["not_found", 404]
    assert [r["cursor"] for r in results["sent"]] == ["0", "3", "0"]


def test_a_catch_up_snapshot_never_counts_as_the_answer_to_its_streams_resume(
    proxy: Proxy,
) -> None:
    proxy.page.evaluate("id => proxy.client.resume(id)", STREAM)
    # The resume of this very stream is the oldest request, but the marker says pushed.
    proxy.deliver(snapshot(2, "ab", catchUp=True), delta(3, "c"))
    proxy.deliver({"type": "pong", "id": "unrelated"})
    proxy.deliver(snapshot(3, "abc"))  # the resume's answer settles it
    proxy.deliver(delta(4, "d"), end(5))
    assert proxy.state()["text"] == proxy.handler_text() == "abcd"
    assert proxy.state()["resumes"] == 1
    refused = proxy.page.evaluate(
        """async () => {
          const subscribed = proxy.client.subscribe("team-9", "t");
          const error = { message: "no", code: 403, details: "", type: "forbidden" };
          proxy.deliver({ type: "error", error });
          return subscribed.then(() => "resolved", (e) => e.code);
        }"""
    )
    assert refused == "forbidden"  # the reply queue is not out of step


def test_after_a_reconnect_a_pushed_snapshot_and_the_resume_answer_both_apply_once(
    proxy: Proxy,
) -> None:
    proxy.deliver(thread_info(), delta(1, "before "))
    proxy.page.evaluate("proxy.drop()")
    proxy.wait("proxy.requests.some(r => r.connection === 2 && r.action === 'resume')")
    assert proxy.sent("resume")[-1]["afterSeq"] == 1

    # The proxy pushes a catch-up snapshot on join; the resume's (older) answer follows it.
    pushed = snapshot(3, "before during ", catchUp=True)
    proxy.deliver(pushed, snapshot(2, "before "), delta(4, "after"), end(5))

    assert proxy.kinds() == [
        ("threadInfo", 0),
        ("delta", 1),
        ("snapshot", 3),
        ("delta", 4),
        ("end", 5),
    ]
    assert proxy.state()["text"] == proxy.handler_text() == "before during after"
    assert proxy.state()["resumes"] == 1


def test_on_stream_is_called_once_per_frame_for_a_burst(proxy: Proxy) -> None:
    burst = [thread_info()] + [delta(i, f"w{i} ") for i in range(1, 60)]
    proxy.deliver(*burst)
    last = proxy.rendered()
    renders = proxy.page.evaluate("proxy.renders.length")
    assert last["text"] == "".join(f"w{i} " for i in range(1, 60))
    assert renders <= 2


# ---- frontend tools ---------------------------------------------------------------------

ANSWER = "llmToolCallResponse"
# The proxy's replies to tool answers: an ack, or the action error of a call answered already.
ACK = "r => r.action === 'llmToolCallResponse' ? [{ type: 'ack', toolCallId: r.toolCallId }] : []"
CONFLICT = """r => r.action !== 'llmToolCallResponse' ? [] : [{ type: 'error',
  error: { message: `tool call '${r.toolCallId}' was already answered`,
  code: 409, details: '', type: 'conflict' } }]"""


def llm_tool_call(
    seq: int, call_id: str, name: str, arguments: Any, stream: str = STREAM
) -> Message:
    """An `llmToolCall` as the proxy sends it: the name without `ui_`, both type and action."""
    return envelope(
        seq,
        "llmToolCall",
        stream,
        action="llmToolCall",
        toolCallId=call_id,
        toolName=name,
        arguments=arguments,
        functions=[{"name": name, "arguments": arguments}],
    )


def on_tool(proxy: Proxy, name: str, handler: str, replies: str = ACK) -> None:
    """Register `handler` (JavaScript source) for tool `name`; the proxy answers with `replies`."""
    proxy.page.evaluate(
        f"() => {{ proxy.answer = {replies}; window.unTool = proxy.onTool({name!r}, {handler}); }}"
    )


def answers(proxy: Proxy) -> list[Message]:
    """The tool answers the client sent, without the harness's connection number and the
    client's own answer id (checked here: every answer has one, each call its own)."""
    sent = proxy.sent(ANSWER)
    ids = {r["toolCallId"]: r["answerId"] for r in sent}
    assert all(isinstance(i, str) and len(i) >= 16 for i in ids.values())
    assert len(set(ids.values())) == len(ids)
    return [
        {k: v for k, v in r.items() if k not in ("action", "connection", "answerId")} for r in sent
    ]


def test_an_answer_resent_after_a_reconnect_keeps_its_answer_id(proxy: Proxy) -> None:
    on_tool(proxy, "set_theme", "() => 'ok'", replies="r => []")  # the ack is lost
    proxy.deliver(thread_info(), llm_tool_call(1, "tc_resent", "set_theme", {}))
    proxy.wait("proxy.sent('llmToolCallResponse').length === 1")
    proxy.page.evaluate(f"() => {{ proxy.answer = {ACK}; }}")  # the next connection acks
    proxy.page.evaluate("proxy.drop()")
    proxy.wait("proxy.outcomes.length === 1")

    first, again = proxy.sent(ANSWER)
    assert (first["connection"], again["connection"]) == (1, 2)
    assert again["answerId"] == first["answerId"]  # the proxy knows it is the same answer
    assert proxy.page.evaluate("proxy.outcomes[0].status") == "accepted"


def test_on_tool_answers_with_the_result_and_action_handlers_see_the_raw_event(
    proxy: Proxy,
) -> None:
    on_tool(proxy, "set_theme", "({ theme }) => ({ message: `Theme is now ${theme}`, theme })")
    args = {"theme": "dark", "userMessage": "Switching to dark mode"}
    functions = [{"name": "ui_set_theme", "userMessage": "Switching to dark mode"}]
    proxy.deliver(thread_info(), envelope(1, "function_call", content={"functions": functions}))
    proxy.deliver(llm_tool_call(2, "tc_theme", "set_theme", args))
    proxy.wait("proxy.outcomes.length === 1")

    assert answers(proxy) == [
        {
            "toolCallId": "tc_theme",
            "success": True,
            "message": "Theme is now dark",
            "data": {"message": "Theme is now dark", "theme": "dark"},
        }
    ]
    assert proxy.page.evaluate("proxy.outcomes") == [
        {
            "toolCallId": "tc_theme",
            "toolName": "set_theme",
            "streamId": STREAM,
            "status": "accepted",
            "success": True,
            "message": "Theme is now dark",
            "data": {"message": "Theme is now dark", "theme": "dark"},
            "error": None,
        }
    ]
    # Klai-style pages answer from their own handler: it still gets the event as sent.
    raw = proxy.events()[-1]
    assert raw == llm_tool_call(2, "tc_theme", "set_theme", args)
    assert raw["action"] == "llmToolCall"
    proxy.deliver(delta(3, "Done: Theme is now dark."), end(4))
    assert proxy.state()["text"] == "Done: Theme is now dark."
    assert proxy.state()["toolCalls"] == [
        {"toolCallId": "tc_theme", "toolName": "set_theme", "arguments": args}
    ]


def test_a_promise_is_awaited_and_a_result_without_a_message_says_done(proxy: Proxy) -> None:
    on_tool(
        proxy,
        "show_map",
        "(args) => new Promise((resolve) => setTimeout(() => resolve({ zoom: args.zoom }), 100))",
    )
    proxy.page.evaluate("void proxy.onTool('scroll_to_top', () => undefined)")
    sent_at_once = proxy.page.evaluate(
        "messages => (proxy.deliver(...messages), proxy.sent('llmToolCallResponse').length)",
        [thread_info(), llm_tool_call(1, "tc_map", "show_map", {"zoom": 12})],
    )
    assert sent_at_once == 0  # the handler's promise has not settled yet
    proxy.deliver(llm_tool_call(2, "tc_top", "scroll_to_top", {}))
    proxy.wait("proxy.outcomes.length === 2")

    assert answers(proxy) == [
        {"toolCallId": "tc_top", "success": True, "message": "done"},
        {"toolCallId": "tc_map", "success": True, "message": "done", "data": {"zoom": 12}},
    ]


def test_a_throw_a_rejection_or_a_result_that_is_not_json_answers_success_false(
    proxy: Proxy,
) -> None:
    on_tool(proxy, "set_theme", "({ theme }) => { throw new Error(`no theme named ${theme}`); }")
    proxy.page.evaluate(
        """() => {
          proxy.onTool("fetch_rows", () => Promise.reject(new Error("the table is locked")));
          proxy.onTool("bad_reason", () => Promise.reject("plain string"));
          proxy.onTool("circular", () => { const o = {}; o.self = o; return o; });
        }"""
    )
    proxy.deliver(
        thread_info(),
        llm_tool_call(1, "tc_1", "set_theme", {"theme": "sepia"}),
        llm_tool_call(2, "tc_2", "fetch_rows", {}),
        llm_tool_call(3, "tc_3", "bad_reason", {}),
        llm_tool_call(4, "tc_4", "circular", {}),
    )
    proxy.wait("proxy.outcomes.length === 4")

    sent = answers(proxy)
    assert all(a["success"] is False and "data" not in a for a in sent)
    messages = {a["toolCallId"]: a["message"] for a in sent}
    assert messages.pop("tc_4").startswith("the tool's result is not JSON")
    assert messages == {
        "tc_1": "no theme named sepia",
        "tc_2": "the table is locked",
        "tc_3": "plain string",
    }
    assert {o["status"] for o in proxy.page.evaluate("proxy.outcomes")} == {"accepted"}
    assert proxy.page.evaluate("proxy.logged") == []


def test_a_call_is_answered_once_whatever_is_replayed(proxy: Proxy) -> None:
    on_tool(proxy, "set_theme", "() => { window.runs = (window.runs ?? 0) + 1; return 'ok'; }")
    proxy.page.evaluate("window.runs = 0")
    call = llm_tool_call(1, "tc_once", "set_theme", {"theme": "dark"})
    proxy.deliver(thread_info(), call, call)
    proxy.wait("proxy.outcomes.length === 1")

    # The connection drops; the client reconnects and resumes, and the call comes round again:
    # at the same seq, and (as a stream relayed twice would) at another one.
    proxy.page.evaluate("proxy.drop()")
    proxy.wait("proxy.requests.some(r => r.connection === 2 && r.action === 'resume')")
    proxy.deliver(snapshot(1, ""), call, {**call, "seq": 2}, delta(3, "Done."), end(4))
    proxy.page.wait_for_timeout(100)

    assert proxy.page.evaluate("window.runs") == 1
    assert answers(proxy) == [
        {"toolCallId": "tc_once", "success": True, "message": "done", "data": "ok"}
    ]
    assert proxy.state()["text"] == "Done."


def test_an_answer_that_lost_to_another_tab_is_quiet(proxy: Proxy) -> None:
    on_tool(proxy, "set_theme", "() => ({ message: 'Theme is now dark' })", replies=CONFLICT)
    # Without onOutcome: nothing logged, no rejection left unhandled.
    proxy.page.evaluate("void proxy.client.onTool('show_map', () => ({ message: 'Map shown' }))")
    proxy.deliver(
        thread_info(),
        llm_tool_call(1, "tc_theme", "set_theme", {"theme": "dark"}),
        llm_tool_call(2, "tc_map", "show_map", {}),
    )
    proxy.wait("proxy.outcomes.length === 1 && proxy.sent('llmToolCallResponse').length === 2")
    proxy.page.wait_for_timeout(100)

    outcome = proxy.page.evaluate("proxy.outcomes[0]")
    assert (outcome["status"], outcome["error"]) == ("conflict", "conflict")
    assert proxy.page.evaluate("proxy.logged") == []
    assert len(proxy.sent(ANSWER)) == 2  # each answered once, not retried


def test_ui_prefixed_names_unregistered_tools_and_unsubscribe(proxy: Proxy) -> None:
    on_tool(proxy, "ui_show_map", "({ city }) => ({ message: `Map of ${city}` })")
    proxy.page.evaluate("proxy.onTool('set_theme', () => 'x')()")  # registered, then removed
    proxy.deliver(
        thread_info(),
        llm_tool_call(1, "tc_map", "show_map", {"city": "Amsterdam"}),
        llm_tool_call(2, "tc_theme", "set_theme", {}),  # its handler is gone
        llm_tool_call(3, "tc_other", "open_dialog", {}),  # no handler: the page answers itself
    )
    proxy.wait("proxy.outcomes.length === 1")
    proxy.page.evaluate("window.unTool()")
    proxy.deliver(llm_tool_call(4, "tc_map2", "show_map", {"city": "Utrecht"}))
    proxy.page.wait_for_timeout(100)

    assert answers(proxy) == [
        {
            "toolCallId": "tc_map",
            "success": True,
            "message": "Map of Amsterdam",
            "data": {"message": "Map of Amsterdam"},
        }
    ]
    assert [e["toolCallId"] for e in proxy.events() if e["type"] == "llmToolCall"] == [
        "tc_map",
        "tc_theme",
        "tc_other",
        "tc_map2",
    ]


def test_a_result_over_the_size_cap_is_replaced_by_a_failure(proxy: Proxy) -> None:
    # A deployment's TOOL_ANSWER_MAX_BYTES under the 32 KB a WebSocket message may have (a
    # larger result is refused by the client itself: tests/browser/test_hostile_client.py).
    too_large = """r => r.action !== 'llmToolCallResponse' ? []
      : r.data !== undefined ? [{ type: 'error', error: {
          message: 'tool answer of 20000 bytes is over the 16384-byte limit',
          code: 413, details: '', type: 'payload_too_large' } }]
      : [{ type: 'ack', toolCallId: r.toolCallId }]"""
    on_tool(proxy, "export_table", "() => ({ rows: 'x'.repeat(20000) })", replies=too_large)
    proxy.deliver(thread_info(), llm_tool_call(1, "tc_big", "export_table", {}))
    proxy.wait("proxy.outcomes.length === 1")

    first, second = answers(proxy)
    assert len(first["data"]["rows"]) == 20_000
    assert second == {
        "toolCallId": "tc_big",
        "success": False,
        "message": "the tool's result is too large to send: "
        "tool answer of 20000 bytes is over the 16384-byte limit",
    }
    outcome = proxy.page.evaluate("proxy.outcomes[0]")
    assert (outcome["status"], outcome["success"]) == ("accepted", False)


def test_a_held_call_runs_under_a_live_snapshot_but_not_under_a_final_one(proxy: Proxy) -> None:
    on_tool(proxy, "set_theme", "() => ({ message: 'Theme is now dark' })")
    late = "st_late"
    # seq 1 is lost on both streams: the call is held until a snapshot covers it.
    proxy.deliver(thread_info(), llm_tool_call(2, "tc_live", "set_theme", {}))
    proxy.deliver(thread_info(late), llm_tool_call(2, "tc_over", "set_theme", {}, stream=late))
    proxy.deliver(snapshot(2, "Switching. "))  # still streaming: the proxy waits for an answer
    proxy.deliver({**snapshot(4, "Switching. Done.", "done"), "streamId": late})
    proxy.wait("proxy.outcomes.length === 1")
    proxy.page.wait_for_timeout(100)

    assert [a["toolCallId"] for a in answers(proxy)] == ["tc_live"]
    # Both reached the action handlers all the same.
    assert ("llmToolCall", 2) in proxy.kinds()
    assert proxy.kinds(late) == [("threadInfo", 0), ("llmToolCall", 2), ("snapshot", 4), ("end", 4)]


# ---- any order of arrival --------------------------------------------------------------


def scenario(seed: int) -> dict[str, Any]:
    """One stream's messages, merged in two different ways, shuffled, some lost, some twice,
    with its final snapshot (maybe split) and maybe a pushed one among them. Resumes are
    answered by snapshots that lag behind, then by the final one."""
    rng = random.Random(seed)
    stream = f"st_seed{seed}"
    n = rng.randint(2, 14)
    pieces: list[Message] = [thread_info(stream)]
    for seq in range(1, n + 1):
        kind = "delta" if rng.random() < 0.8 else "thinking"
        pieces.append(envelope(seq, kind, stream, content=f"{kind[0]}{seq} "))
    pieces.append(envelope(n + 1, "end", stream, finish_reason="stop", usage=USAGE))

    def text_up_to(seq: int) -> str:
        return "".join(m["content"] for m in pieces[1 : seq + 1] if m["type"] == "delta")

    def merged(run: list[Message]) -> Message:
        message = {**run[-1], "content": "".join(m["content"] for m in run)}
        if len(run) > 1:
            message["firstSeq"] = run[0]["seq"]
        return message

    def wire() -> list[Message]:
        """The pieces as a lagging lane sends them: runs of one text type merged at random."""
        out: list[Message] = []
        run: list[Message] = []
        for piece in pieces:
            if run and (piece["type"] != run[-1]["type"] or rng.random() < 0.4):
                out.append(merged(run))
                run = []
            if piece["type"] in ("delta", "thinking"):
                run.append(piece)
            else:
                out.append(piece)
        if run:
            out.append(merged(run))
        return sorted(out, key=lambda m: m["seq"])

    def snap(seq: int) -> Message:
        status = "done" if seq == n + 1 else "streaming"
        message = snapshot(seq, text_up_to(seq), status)
        return {**message, "streamId": stream}

    sent = wire()
    lost = set(rng.sample(range(len(sent)), rng.randint(0, min(3, len(sent)))))
    arrivals = [m for i, m in enumerate(sent) if i not in lost]
    again = wire()  # the same messages merged otherwise: duplicates and partial overlaps
    arrivals += rng.sample(again, rng.randint(0, min(4, len(again))))
    final = snap(n + 1)
    arrivals += split(final, rng.randint(2, 3)) if rng.random() < 0.3 else [final]
    if rng.random() < 0.4:
        arrivals.append({**snap(rng.randint(0, n)), "catchUp": True})  # pushed on a join
    rng.shuffle(arrivals)
    lagging = sorted(rng.randint(-1, n + 1) for _ in range(rng.randint(0, 3)))
    answers = [[snap(seq)] for seq in lagging if seq >= 0] + [[final]]
    return {
        "streamId": stream,
        "arrivals": arrivals,
        "resumeAnswers": answers,
        "expected": text_up_to(n + 1),
        "envelopes": sum(1 for m in arrivals if m["type"] != "snapshot"),
    }


def test_any_order_of_arrival_ends_with_the_exact_text_and_one_end(proxy: Proxy) -> None:
    scenarios = [scenario(seed) for seed in range(300)]
    results = proxy.page.evaluate(
        "scenarios => scenarios.map((s) => proxy.runScenario(s))", scenarios
    )
    for seed, (given, got) in enumerate(zip(scenarios, results, strict=True)):
        where = f"seed {seed}: {got}"
        assert got["text"] == given["expected"], where
        assert got["handlerText"] == given["expected"], where
        assert got["status"] == "done", where
        assert got["types"].count("end") == 1, where
        assert got["types"][-1] == "end", where
        assert got["seqs"] == sorted(got["seqs"]), where
        assert got["messages"] == given["envelopes"], where
        assert got["duplicates"] <= got["messages"], where
        assert got["timersAfterClose"] == 0, where
    # The seeds do reach every path: resumes, and ends both live and from the final snapshot.
    assert any(r["resumes"] > 0 for r in results)
    assert any(r["fromSnapshot"] for r in results)
    assert any(not r["fromSnapshot"] for r in results)


def test_a_tab_joining_during_a_tool_wait_gets_the_pending_call_and_can_answer_it(
    proxy: Proxy,
) -> None:
    on_tool(proxy, "set_theme", "({ theme }) => ({ message: `Theme is now ${theme}` })")
    pending = llm_tool_call(3, "tc_waiting", "set_theme", {"theme": "dark"})
    catch_up = snapshot(3, "Switching. ", catchUp=True, pendingToolCalls=[pending])
    proxy.deliver(catch_up)
    proxy.wait("proxy.outcomes.length === 1")
    assert answers(proxy) == [
        {
            "toolCallId": "tc_waiting",
            "success": True,
            "message": "Theme is now dark",
            "data": {"message": "Theme is now dark"},
        }
    ]
    assert [e["type"] for e in proxy.events()] == ["snapshot", "llmToolCall"]
    # The same call again (another catch-up after a reconnect) is not run twice.
    proxy.deliver({**catch_up, "seq": 3})
    proxy.deliver(delta(4, "Done."), end(5))
    assert len(answers(proxy)) == 1
    assert proxy.state()["text"] == "Switching. Done."


# ---- published messages ----------------------------------------------------------------


def test_a_published_message_reaches_the_handlers_once_and_starts_no_stream(
    proxy: Proxy,
) -> None:
    proxy.page.evaluate(
        """() => {
          window.got = [];
          const record = (event, stream) => window.got.push([event.message, stream]);
          proxy.client.on("onProgress", record);
        }"""
    )
    note = {
        "actionName": "onProgress",
        "channel": "user-1",
        "streamId": "msg_1",
        "seq": 0,
        "type": "message",
        "message": {"step": 2, "of": 5},
    }
    proxy.deliver(note, note, {**note, "streamId": "msg_2", "message": "done"})
    proxy.page.wait_for_timeout(50)
    assert proxy.page.evaluate("window.got") == [[{"step": 2, "of": 5}, None], ["done", None]]
    assert [e["type"] for e in proxy.events("msg_1")] == ["message"]
    # Nothing to follow: no stream state, no resume asked for later.
    assert proxy.page.evaluate("proxy.client.streams.size") == 0
    assert proxy.sent("resume") == []
